"""One drawer: detections (detect --draw) and ground truth (inspect --draw) look alike."""

from __future__ import annotations

import numpy as np

from model_libs.datasets.annotated_datum import Box
from model_libs.datasets.inspect import draw_boxes as draw_ground_truth
from model_libs.draw import class_colour
from model_libs.engines.detector import Detection
from model_libs.engines.draw import draw as draw_detections


def _edge(img: np.ndarray, x: int, y: int) -> tuple[int, int, int]:
    b, g, r = (int(v) for v in img[y, x])
    return b, g, r


def test_a_class_has_one_colour_in_both_pictures():
    blank = np.zeros((100, 120, 3), np.uint8)
    for label in (1, 3, 15):
        det = draw_detections(blank, [Detection(label, "cat", 0.9, (24.0, 30.0, 96.0, 90.0))])
        gt = draw_ground_truth(blank, [Box(label, 0.2, 0.3, 0.8, 0.9, False)], {label: "cat"})
        # the left edge, half-way down: below the caption, on the box line in both pictures
        assert _edge(det, 24, 70) == _edge(gt, 24, 70) == class_colour(label)
        assert _edge(det, 60, 70) == _edge(gt, 60, 70) == (0, 0, 0)  # inside stays untouched
    assert blank.max() == 0  # drawing copies


def test_colours_are_fixed_and_tell_classes_apart():
    colours = [class_colour(label) for label in range(91)]  # background + COCO's ids
    assert len(set(colours)) == len(colours)
    assert all(64 <= c < 256 for colour in colours for c in colour)  # bright on dark images


def test_difficult_ground_truth_is_drawn_thinner():
    blank = np.zeros((100, 100, 3), np.uint8)
    plain = draw_ground_truth(blank, [Box(2, 0.2, 0.3, 0.8, 0.9, False)])
    difficult = draw_ground_truth(blank, [Box(2, 0.2, 0.3, 0.8, 0.9, True)])
    row = 70  # below the caption
    assert np.count_nonzero(plain[row].any(axis=1)) > np.count_nonzero(difficult[row].any(axis=1))
