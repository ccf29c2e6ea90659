"""Draw detections on an image: a box and a ``name score`` caption per detection."""

from __future__ import annotations

import numpy as np

from .detector import Detection


def _colour(label: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(label * 7919 + 1)
    return tuple(int(c) for c in rng.integers(64, 256, 3))


def draw(image: np.ndarray, detections: list[Detection]) -> np.ndarray:
    """A copy of ``image`` with each detection's box and ``name score`` caption."""
    import cv2

    out = image.copy()
    for d in detections:
        c = _colour(d.label)
        x0, y0, x1, y1 = (round(v) for v in d.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), c, 2)
        caption = f"{d.name} {d.score:.2f}"
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = max(y0, th + base)
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw, ty), c, -1)
        cv2.putText(out, caption, (x0, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out
