"""Draw detections on an image: a box and a ``name score`` caption per detection."""

from __future__ import annotations

import numpy as np

from ..draw import DrawnBox, draw_boxes
from .detector import Detection


def draw(image: np.ndarray, detections: list[Detection]) -> np.ndarray:
    """A copy of ``image`` with each detection's box and ``name score`` caption."""
    return draw_boxes(image, (DrawnBox(d.label, d.box, f"{d.name} {d.score:.2f}") for d in detections))
