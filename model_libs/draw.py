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
    box is secondary (a difficult ground-truth box: thinner line) or faint (ground truth
    shown beside detections: a thin, dashed, half-transparent outline, no caption)."""

    label: int
    box: Sequence[float]  # xmin, ymin, xmax, ymax in pixels
    caption: str
    secondary: bool = False
    faint: bool = False


FAINT_ALPHA = 0.7  # opacity of faint boxes: visible, yet clearly behind the detections
DASH = 4  # pixels drawn, then skipped, along a faint box's outline


def _dashed_rectangle(img: np.ndarray, box: Sequence[int], colour: tuple[int, int, int]) -> None:
    import cv2

    x0, y0, x1, y1 = box
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        n = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
        for t in range(0, n + 1, 2 * DASH):
            u = min(t + DASH, n)
            p = (a[0] + (b[0] - a[0]) * t // n, a[1] + (b[1] - a[1]) * t // n)
            q = (a[0] + (b[0] - a[0]) * u // n, a[1] + (b[1] - a[1]) * u // n)
            cv2.line(img, p, q, colour, 1)


def draw_boxes(image: np.ndarray, boxes: Iterable[DrawnBox]) -> np.ndarray:
    """A copy of ``image`` (BGR uint8) with each box and its caption in the class colour."""
    import cv2

    boxes = list(boxes)
    out = image.copy()
    faint = [b for b in boxes if b.faint]
    if faint:
        # Faint boxes go first, blended, so that solid boxes and captions stay crisp on top.
        overlay = out.copy()
        for b in faint:
            _dashed_rectangle(overlay, [round(v) for v in b.box], class_colour(b.label))
        out = cv2.addWeighted(overlay, FAINT_ALPHA, out, 1 - FAINT_ALPHA, 0)
    for b in boxes:
        if b.faint:
            continue
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


def contact_sheet(
    images: Sequence[np.ndarray],
    captions: Sequence[str] = (),
    cols: int = 3,
    height: int = 256,
    title: str = "",
) -> np.ndarray:
    """All ``images`` (BGR uint8) on one picture: each scaled to ``height`` pixels, laid out
    ``cols`` per row on a dark background, with its caption under it and ``title`` above."""
    import cv2

    if not images:
        raise ValueError("a contact sheet needs at least one image")
    cells = [cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height)) for im in images]
    cell_w = max(c.shape[1] for c in cells)
    caption_h = 22 if captions else 0
    gap = 6
    cols = max(1, min(cols, len(cells)))
    rows = -(-len(cells) // cols)
    top = 26 if title else 0
    shape = (top + gap + rows * (height + caption_h + gap), gap + cols * (cell_w + gap), 3)
    sheet = np.full(shape, 32, np.uint8)
    if title:
        cv2.putText(
            sheet, title, (gap + 2, 18), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, (230, 230, 230), 1, cv2.LINE_AA
        )
    for i, cell in enumerate(cells):
        r, c = divmod(i, cols)
        y, x = top + gap + r * (height + caption_h + gap), gap + c * (cell_w + gap)
        sheet[y : y + height, x : x + cell.shape[1]] = cell
        if i < len(captions) and captions[i]:
            cv2.putText(
                sheet,
                captions[i],
                (x + 2, y + height + 16),
                cv2.FONT_HERSHEY_SIMPLEX,
                FONT_SCALE,
                (230, 230, 230),
                1,
                cv2.LINE_AA,
            )
    return sheet
