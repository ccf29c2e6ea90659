"""Boxes with captions on images: the one drawer of the toolkit.

``detect --draw`` (detections, pixel boxes, ``name score``) and ``inspect --draw`` (ground
truth from an LMDB) both draw through :func:`draw_boxes`, so a class has the same colour in
both pictures and the pictures look alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

FONT_SCALE = 0.5


def class_colour(label: int) -> tuple[int, int, int]:
    """A fixed, bright BGR colour per class label (seeded by the label, never random)."""
    rng = np.random.default_rng(label * 7919 + 1)
    b, g, r = (int(c) for c in rng.integers(64, 256, 3))
    return b, g, r


@dataclass(frozen=True)
class DrawnBox:
    """One box to draw: class label (its colour), pixel corners, caption, and whether the
    box is secondary (a difficult ground-truth box: thinner line)."""

    label: int
    box: Sequence[float]  # xmin, ymin, xmax, ymax in pixels
    caption: str
    secondary: bool = False


def draw_boxes(image: np.ndarray, boxes: Iterable[DrawnBox]) -> np.ndarray:
    """A copy of ``image`` (BGR uint8) with each box and its caption in the class colour."""
    import cv2

    out = image.copy()
    for b in boxes:
        colour = class_colour(b.label)
        x0, y0, x1, y1 = (round(v) for v in b.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, 1 if b.secondary else 2)
        if not b.caption:
            continue
        (tw, th), base = cv2.getTextSize(b.caption, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, 1)
        ty = max(y0, th + base)  # caption above the box, inside the image at the top edge
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw, ty), colour, -1)
        cv2.putText(
            out, b.caption, (x0, ty - base), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA
        )
    return out
