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


def test_faint_ground_truth_is_dashed_blended_and_under_the_detections():
    from model_libs.draw import FAINT_ALPHA, DrawnBox, draw_boxes

    grey = np.full((100, 100, 3), 100, np.uint8)
    faint = draw_boxes(grey, [DrawnBox(2, (10, 20, 90, 80), "circle", faint=True)])
    colour = np.array(class_colour(2), np.float64)
    left = faint[20:81, 10].astype(np.float64)  # the left edge, top to bottom
    on = np.abs(left - 100).sum(axis=1) > 0
    # dashed: drawn and skipped stretches alternate, both present along the edge
    assert 0.3 < on.mean() < 0.8
    # blended: the drawn pixels are part colour, part background, never the pure colour
    expected = FAINT_ALPHA * colour + (1 - FAINT_ALPHA) * 100
    assert np.abs(left[on] - expected).max() <= 1.0
    # no caption for a faint box: nothing drawn above or inside it
    assert (faint[:19] == 100).all() and (faint[22:78, 12:88] == 100).all()
    # a detection on the same box is drawn solid over it
    both = draw_boxes(
        grey,
        [DrawnBox(2, (10, 20, 90, 80), "", faint=True), DrawnBox(3, (10, 20, 90, 80), "star 0.9")],
    )
    assert tuple(int(v) for v in both[60, 10]) == class_colour(3)


def test_contact_sheet_holds_every_picture_in_order():
    from model_libs.draw import contact_sheet

    pictures = [np.full((50 + 10 * i, 80, 3), 40 * (i + 1), np.uint8) for i in range(5)]
    sheet = contact_sheet(pictures, [f"p{i}" for i in range(5)], cols=3, height=64, title="title")
    assert sheet.dtype == np.uint8 and sheet.shape[2] == 3
    cell_w = max(round(80 * 64 / (50 + 10 * i)) for i in range(5))
    assert sheet.shape[1] == 6 + 3 * (cell_w + 6)
    assert sheet.shape[0] == 26 + 6 + 2 * (64 + 22 + 6)  # title, two rows of 3 + 2
    for i in range(5):
        r, c = divmod(i, 3)
        y, x = 26 + 6 + r * (64 + 22 + 6), 6 + c * (cell_w + 6)
        assert (sheet[y + 32, x + 5] == 40 * (i + 1)).all()  # each picture in its cell
