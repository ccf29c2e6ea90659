"""VOC AP: hand-built cases with exactly known AP, and agreement with an independent loop."""

from __future__ import annotations

import random

import numpy as np
import pytest

from model_libs.errors import ModelLibsError
from model_libs.evaluation.results import ClassDetections, read_result_dir
from model_libs.evaluation.voc import evaluate_voc, load_voc_ground_truth
from tests.eval_helpers import write_results, write_vocdevkit


def run(dets, gt, metric, classes=None):
    det = {c: ClassDetections.from_rows(rows, source=f"<{c}>") for c, rows in dets.items()}
    return evaluate_voc(det, gt, classes=classes, metric=metric)


GT = {
    "000001": [("cat", (10, 10, 59, 59), False), ("dog", (100, 100, 199, 149), False)],
    "000002": [("cat", (0, 0, 99, 99), False), ("cat", (200, 200, 239, 239), True)],
    "000003": [("dog", (5, 5, 54, 104), False), ("bird", (1, 1, 20, 20), True)],
}


@pytest.mark.parametrize("metric", ["11point", "area"])
def test_perfect_detections_give_ap_one(metric):
    dets = {
        "cat": [("000001", 0.9, 10, 10, 59, 59), ("000002", 0.8, 0, 0, 99, 99)],
        "dog": [("000001", 0.7, 100, 100, 199, 149), ("000003", 0.6, 5, 5, 54, 104)],
    }
    r = run(dets, GT, metric)
    assert r.ap == {"cat": 1.0, "dog": 1.0}
    assert r.mAP == 1.0


@pytest.mark.parametrize("metric", ["11point", "area"])
def test_no_detections_and_all_wrong_give_zero(metric):
    dets = {"cat": [("000001", 0.9, 300, 300, 350, 350), ("000003", 0.5, 10, 10, 59, 59)]}
    r = run(dets, GT, metric, classes=["cat", "dog"])
    assert r.ap == {"cat": 0.0, "dog": 0.0}
    assert r.classes["cat"].fp == 2 and r.classes["cat"].tp == 0
    assert r.mAP == 0.0


def test_duplicates_are_false_positives():
    # Ranked: TP(0.9), duplicate FP(0.8), FP(0.5), TP(0.4) with npos = 2.
    dets = {
        "cat": [
            ("000001", 0.9, 10, 10, 59, 59),
            ("000001", 0.8, 11, 11, 59, 59),
            ("000001", 0.5, 300, 300, 400, 400),
            ("000002", 0.4, 0, 0, 99, 99),
        ]
    }
    area = run(dets, GT, "area").ap["cat"]
    # precision 1, 1/2, 1/3, 1/2 at recall 1/2, 1/2, 1/2, 1 -> envelope 1 then 1/2.
    assert area == pytest.approx(0.5 * 1 + 0.5 * 0.5, abs=1e-12)
    eleven = run(dets, GT, "11point").ap["cat"]
    assert eleven == pytest.approx((6 * 1.0 + 5 * 0.5) / 11, abs=1e-12)


@pytest.mark.parametrize("metric", ["11point", "area"])
def test_difficult_objects_are_ignored(metric):
    # A detection on the difficult cat of 000002 is neither TP nor FP; the two real cats
    # are found, so AP stays 1 even though the ignored detection ranks first.
    dets = {
        "cat": [
            ("000002", 0.99, 200, 200, 239, 239),
            ("000001", 0.9, 10, 10, 59, 59),
            ("000002", 0.8, 0, 0, 99, 99),
        ]
    }
    r = run(dets, GT, metric)
    assert r.ap["cat"] == 1.0
    c = r.classes["cat"]
    assert (c.npos, c.tp, c.fp, c.ignored) == (2, 2, 0, 1)


def test_difficult_only_class_has_no_ap_and_is_left_out_of_map():
    dets = {
        "bird": [("000003", 0.9, 1, 1, 20, 20), ("000001", 0.8, 1, 1, 20, 20)],
        "cat": [("000001", 0.9, 10, 10, 59, 59), ("000002", 0.8, 0, 0, 99, 99)],
    }
    r = run(dets, GT, "area")
    assert r.ap["bird"] is None
    assert r.classes["bird"].npos == 0
    assert r.ap["cat"] == 1.0
    assert r.mAP == 1.0  # bird is not averaged in as 0


def test_ties_in_score_keep_input_order():
    # Two detections with the same score: an FP listed first, then the TP. The devkit's
    # stable sort keeps that order: precision 0 then 1/2, recall 1/2 reached at rank 2.
    gt = {"a": [("cat", (0, 0, 9, 9), False)], "b": [("cat", (0, 0, 9, 9), False)]}
    fp_first = {"cat": [("a", 0.5, 50, 50, 60, 60), ("a", 0.5, 0, 0, 9, 9), ("b", 0.4, 0, 0, 9, 9)]}
    tp_first = {"cat": [("a", 0.5, 0, 0, 9, 9), ("a", 0.5, 50, 50, 60, 60), ("b", 0.4, 0, 0, 9, 9)]}
    # fp first: prec 0, 1/2, 2/3 at rec 0, 1/2, 1 -> envelope 2/3 everywhere.
    assert run(fp_first, gt, "area").ap["cat"] == pytest.approx(2 / 3, abs=1e-12)
    # tp first: prec 1, 1/2, 2/3 at rec 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3.
    assert run(tp_first, gt, "area").ap["cat"] == pytest.approx(0.5 + 1 / 3, abs=1e-12)


def test_plus_one_pixel_overlap_and_threshold_inclusive():
    # GT 10x10 pixels (0..9). Detection 0..9 x 0..4 covers 10x5 pixels: IoU = 50/100 = 0.5
    # with the +1 convention (0.44 without it), and 0.5 counts as a match (>=).
    gt = {"a": [("cat", (0, 0, 9, 9), False)]}
    r = run({"cat": [("a", 1.0, 0, 0, 9, 4)]}, gt, "area")
    assert r.ap["cat"] == 1.0
    r = run({"cat": [("a", 1.0, 0, 0, 9, 3)]}, gt, "area")  # 40/100
    assert r.ap["cat"] == 0.0


def test_best_overlap_box_is_taken_even_if_already_matched():
    # Devkit rule: a detection goes to its highest-IoU box; if that box is taken it is a
    # duplicate (FP), even when another unmatched box overlaps it above threshold.
    gt = {"a": [("cat", (0, 0, 99, 99), False), ("cat", (0, 0, 79, 99), False)]}
    dets = {"cat": [("a", 0.9, 0, 0, 99, 99), ("a", 0.8, 0, 0, 95, 99)]}
    c = run(dets, gt, "area").classes["cat"]
    assert (c.tp, c.fp) == (1, 1)


def test_unknown_image_id_names_file_and_line(tmp_path):
    d = write_results(tmp_path / "res", {"cat": [("000001", 0.9, 1, 1, 5, 5), ("999999", 0.8, 1, 1, 5, 5)]})
    det = read_result_dir(d)
    with pytest.raises(ModelLibsError, match=r"comp4_det_test_cat\.txt:2: image id '999999'"):
        evaluate_voc(det, GT)


def test_reading_a_vocdevkit_gives_the_same_result(tmp_path):
    write_vocdevkit(tmp_path / "VOCdevkit", GT)
    gt = load_voc_ground_truth(tmp_path / "VOCdevkit", "VOC2007", "test")
    assert list(gt) == list(GT)
    assert gt["000002"][1] == ("cat", (200.0, 200.0, 239.0, 239.0), True)
    dets = {"cat": [("000001", 0.9, 10, 10, 59, 59), ("000003", 0.8, 0, 0, 99, 99)]}
    d = write_results(tmp_path / "res", dets)
    a = evaluate_voc(read_result_dir(d), gt)
    b = run(dets, GT, "area")
    assert a.ap == b.ap


@pytest.mark.parametrize("n_tp, want", [(3, 3 / 11), (6, 7 / 11), (7, 8 / 11), (10, 1.0)])
def test_eleven_point_thresholds_are_matlab_doubles(n_tp, want):
    # 10 cats; the first n_tp detections hit, then misses. Recall reaches exactly n_tp/10.
    # VOCevaldet's t = 0:0.1:1 has t(4) = 0.30000000000000004 > 3/10, so recall 0.3 does not
    # count for the 0.3 point (3/11, not 4/11), whereas 6/10 and 7/10 do reach 0.6 and 0.7.
    gt = {f"i{k}": [("cat", (0, 0, 9, 9), False)] for k in range(10)}
    dets = [(f"i{k}", 1.0 - k / 100, 0, 0, 9, 9) for k in range(n_tp)]
    dets += [(f"i{k}", 0.5 - k / 100, 50, 50, 60, 60) for k in range(10 - n_tp)]
    assert run({"cat": dets}, gt, "11point").ap["cat"] == pytest.approx(want, abs=1e-12)


# --------------------------------------------------------------- independent reference


# MATLAB's 0:0.1:1 (colon operator: a + k*d for the first half, b - k*d for the second,
# (a+b)/2 in the middle).
MATLAB_0_01_1 = [
    0.0,
    0.1,
    2 * 0.1,
    3 * 0.1,
    4 * 0.1,
    0.5,
    1 - 4 * 0.1,
    1 - 3 * 0.1,
    1 - 2 * 0.1,
    1 - 0.1,
    1.0,
]


def reference_ap(dets, gt, cls, metric, thr=0.5):
    """Straight loop transcription of VOCevaldet.m + VOCap.m (written separately)."""
    npos = sum(1 for objs in gt.values() for o in objs if o[0] == cls and not o[2])
    if npos == 0:
        return None
    rows = sorted(enumerate(dets), key=lambda t: (-t[1][1], t[0]))  # stable, descending
    used = {img: [False] * len(objs) for img, objs in gt.items()}
    tp, fp = [], []
    for _, (img, _score, x1, y1, x2, y2) in rows:
        best, jbest = -float("inf"), -1
        for j, (c, (gx1, gy1, gx2, gy2), _d) in enumerate(gt[img]):
            if c != cls:
                continue
            iw = min(x2, gx2) - max(x1, gx1) + 1
            ih = min(y2, gy2) - max(y1, gy1) + 1
            if iw > 0 and ih > 0:
                ua = (x2 - x1 + 1) * (y2 - y1 + 1) + (gx2 - gx1 + 1) * (gy2 - gy1 + 1) - iw * ih
                ov = iw * ih / ua
                if ov > best:
                    best, jbest = ov, j
        t = f = 0
        if best >= thr:
            if not gt[img][jbest][2]:
                if not used[img][jbest]:
                    t = 1
                    used[img][jbest] = True
                else:
                    f = 1
        else:
            f = 1
        tp.append(t)
        fp.append(f)
    ctp = cfp = 0
    prec, rec = [], []
    for t, f in zip(tp, fp, strict=True):
        ctp += t
        cfp += f
        prec.append(ctp / (ctp + cfp) if ctp + cfp else 0.0)
        rec.append(ctp / npos)
    if metric == "11point":
        ap = 0.0
        for t in MATLAB_0_01_1:
            ps = [p for p, r in zip(prec, rec, strict=True) if r >= t]
            ap += (max(ps) if ps else 0.0) / 11
        return ap
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def random_case(seed, n_images=60, classes=("a", "b", "c", "d")):
    rng = random.Random(seed)
    gt = {}
    for i in range(n_images):
        objs = []
        for _ in range(rng.randint(0, 5)):
            x1, y1 = rng.randint(0, 80), rng.randint(0, 80)
            objs.append(
                (
                    rng.choice(classes),
                    (x1, y1, x1 + rng.randint(4, 40), y1 + rng.randint(4, 40)),
                    rng.random() < 0.15,
                )
            )
        gt[f"img{i:04d}"] = objs
    dets = {c: [] for c in classes}
    for img, objs in gt.items():
        for c, (x1, y1, x2, y2), _ in objs:  # jittered hits, some duplicated
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                j = [rng.randint(-6, 6) for _ in range(4)]
                dets[c].append((img, round(rng.random(), 2), x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3]))
        for _ in range(rng.randint(0, 6)):  # background clutter
            x1, y1 = rng.randint(0, 100), rng.randint(0, 100)
            dets[rng.choice(classes)].append(
                (img, round(rng.random(), 2), x1, y1, x1 + rng.randint(2, 50), y1 + rng.randint(2, 50))
            )
    return dets, gt


@pytest.mark.parametrize("metric", ["11point", "area"])
@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_independent_reference_on_random_detections(seed, metric):
    dets, gt = random_case(seed)
    got = run(dets, gt, metric)
    for c in dets:
        want = reference_ap(dets[c], gt, c, metric)
        if want is None:
            assert got.ap[c] is None
        else:
            assert got.ap[c] == pytest.approx(want, abs=1e-6), c
    want_aps = [a for a in (reference_ap(dets[c], gt, c, metric) for c in dets) if a is not None]
    assert got.mAP == pytest.approx(float(np.mean(want_aps)), abs=1e-6)
