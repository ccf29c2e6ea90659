"""Caffe-semantics AP (ComputeAP / DetectionEvaluate / TestDetection) without Caffe."""

from __future__ import annotations

import numpy as np
import pytest

from model_libs.errors import ModelLibsError
from model_libs.evaluation.caffe_ap import compute_ap, detection_evaluate, solver_map

F = np.float32


def pairs(flags, scores=None):
    scores = scores if scores is not None else [1.0 - 0.01 * i for i in range(len(flags))]
    tp = [(s, f) for s, f in zip(scores, flags, strict=True)]
    fp = [(s, 1 - f) for s, f in zip(scores, flags, strict=True)]
    return tp, fp


def test_hand_computed_values():
    # TP FP FP TP with 2 positives: prec 1, 1/2, 1/3, 1/2; rec 1/2, 1/2, 1/2, 1.
    tp, fp = pairs([1, 0, 0, 1])
    assert compute_ap(tp, 2, fp, "11point")[0] == pytest.approx(8.5 / 11, abs=1e-6)
    assert compute_ap(tp, 2, fp, "MaxIntegral")[0] == pytest.approx(0.75, abs=1e-6)
    assert compute_ap(tp, 2, fp, "Integral")[0] == pytest.approx(0.75, abs=1e-6)
    # FP TP with 1 positive: Integral takes the precision where recall jumps (1/2);
    # MaxIntegral and 11point too (no later higher precision).
    tp, fp = pairs([0, 1])
    for v in ("11point", "MaxIntegral", "Integral"):
        assert compute_ap(tp, 1, fp, v)[0] == pytest.approx(0.5, abs=1e-6)
    # TP FP TP with 3 positives: Integral = 1/3*1 + 1/3*2/3 = 5/9; MaxIntegral the same
    # (envelope is 1 then 2/3); recall never reaches 1 -> 11point: t<=1/3 -> 1, t in
    # (1/3, 2/3] -> 2/3: points 0..0.3 (4) and 0.4..0.6 (3): (4 + 3*2/3)/11.
    tp, fp = pairs([1, 0, 1])
    assert compute_ap(tp, 3, fp, "Integral")[0] == pytest.approx(5 / 9, abs=1e-6)
    assert compute_ap(tp, 3, fp, "MaxIntegral")[0] == pytest.approx(5 / 9, abs=1e-6)
    assert compute_ap(tp, 3, fp, "11point")[0] == pytest.approx(6 / 11, abs=1e-6)


def test_integral_has_no_envelope_but_max_integral_does():
    # FP TP TP, 2 positives: prec 0, 1/2, 2/3 at rec 0, 1/2, 1.
    tp, fp = pairs([0, 1, 1])
    assert compute_ap(tp, 2, fp, "Integral")[0] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3, abs=1e-6)
    assert compute_ap(tp, 2, fp, "MaxIntegral")[0] == pytest.approx(2 / 3, abs=1e-6)


def test_empty_and_zero_positives_give_zero():
    assert compute_ap([], 5, [], "11point")[0] == 0.0
    tp, fp = pairs([0, 0])
    assert compute_ap(tp, 0, fp, "Integral")[0] == 0.0


def test_bad_arguments():
    tp, fp = pairs([1, 0])
    with pytest.raises(ModelLibsError, match="unknown ap_version"):
        compute_ap(tp, 1, fp, "area")
    with pytest.raises(ModelLibsError, match="complementary"):
        compute_ap(tp, 1, tp, "11point")


# ------------------------------------------------ literal transliteration of ComputeAP loops


def literal_compute_ap(tp, num_pos, fp, ap_version):
    """Line-by-line float32 transcription of bbox_util.cpp ComputeAP (slow, for testing)."""
    eps = F(1e-6)
    num = len(tp)
    if num == 0 or num_pos == 0:
        return 0.0

    def cumsum(ps):
        s = sorted(ps, key=lambda p: -F(p[0]))  # Python sort is stable, like std::stable_sort
        out, acc = [], 0
        for _, v in s:
            acc += v
            out.append(acc)
        return out

    tpc, fpc = cumsum(tp), cumsum(fp)
    prec = [F(F(tpc[i]) / F(tpc[i] + fpc[i])) for i in range(num)]
    rec = [F(F(tpc[i]) / F(num_pos)) for i in range(num)]
    ap = F(0)
    if ap_version == "11point":
        max_precs = [F(0)] * 11
        start_idx = num - 1
        for j in range(10, -1, -1):
            for i in range(start_idx, -1, -1):
                if float(rec[i]) < j / 10.0:
                    start_idx = i
                    if j > 0:
                        max_precs[j - 1] = max_precs[j]
                    break
                if max_precs[j] < prec[i]:
                    max_precs[j] = prec[i]
        for j in range(10, -1, -1):
            ap = F(ap + F(max_precs[j] / F(11)))
    elif ap_version == "MaxIntegral":
        cur_rec, cur_prec = rec[-1], prec[-1]
        for i in range(num - 2, -1, -1):
            cur_prec = max(prec[i], cur_prec)
            if abs(F(cur_rec - rec[i])) > eps:
                ap = F(ap + F(cur_prec * abs(F(cur_rec - rec[i]))))
            cur_rec = rec[i]
        ap = F(ap + F(cur_rec * cur_prec))
    else:
        prev = F(0)
        for i in range(num):
            if abs(F(rec[i] - prev)) > eps:
                ap = F(ap + F(prec[i] * abs(F(rec[i] - prev))))
            prev = rec[i]
    return float(ap)


@pytest.mark.parametrize("version", ["11point", "MaxIntegral", "Integral"])
@pytest.mark.parametrize("seed", range(30))
def test_matches_literal_transcription(seed, version):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    flags = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int).tolist()
    scores = np.round(rng.random(n), 1 if seed % 3 == 0 else 3).tolist()  # ties sometimes
    num_pos = sum(flags) + int(rng.integers(0, 8))
    if num_pos == 0:
        num_pos = 1
    if seed % 5 == 0:  # recall values that land exactly on tenths
        num_pos = 10
        flags = flags[:10] + [0] * max(0, n - 10)
    tp, fp = pairs(flags, scores)
    got = compute_ap(tp, num_pos, fp, version)[0]
    assert got == literal_compute_ap(tp, num_pos, fp, version)


def test_eleven_point_float32_boundary_quirk():
    # Caffe compares float32 recall with the double j/10: 7/10 in float32 is just below 0.7,
    # so recall 0.7 does NOT count for the 0.7 point (while 3/10 in float32 is above 0.3).
    flags = [1] * 7 + [0] * 3
    tp, fp = pairs(flags)
    got = compute_ap(tp, 10, fp, "11point")[0]
    assert got == literal_compute_ap(tp, 10, fp, "11point")
    assert got == pytest.approx(7 / 11, abs=1e-6)  # points 0 .. 0.6 only


# ----------------------------------------------------------------------- layer + solver


def test_detection_evaluate_rows():
    # image 0: GT label 1 (normal) and label 1 (difficult); image 1: GT label 2.
    gt = [
        [0, 1, 0, 0.1, 0.1, 0.4, 0.4, 0],
        [0, 1, 1, 0.6, 0.6, 0.9, 0.9, 1],
        [1, 2, 0, 0.2, 0.2, 0.8, 0.8, 0],
    ]
    det = [
        [0, 1, 0.9, 0.1, 0.1, 0.4, 0.4],  # TP
        [0, 1, 0.8, 0.1, 0.1, 0.41, 0.4],  # duplicate -> FP
        [0, 1, 0.7, 0.6, 0.6, 0.9, 0.9],  # difficult -> tp = fp = 0
        [0, 2, 0.6, 0.1, 0.1, 0.4, 0.4],  # no GT of label 2 in image 0 -> FP
        [1, 2, 0.5, 0.2, 0.2, 0.8, 0.8],  # TP
        [2, 1, 0.4, 0.2, 0.2, 0.8, 0.8],  # image without GT -> FP
    ]
    rows = detection_evaluate(det, gt, num_classes=3)
    want = [
        [-1, 1, 1, -1, -1],
        [-1, 2, 1, -1, -1],
        [0, 1, 0.9, 1, 0],
        [0, 1, 0.8, 0, 1],
        [0, 1, 0.7, 0, 0],
        [0, 2, 0.6, 0, 1],
        [1, 2, 0.5, 1, 0],
        [2, 1, 0.4, 0, 1],
    ]
    np.testing.assert_allclose(rows, np.array(want, dtype=F), atol=1e-7)
    res = solver_map(rows, "Integral")
    # label 1: TP, FP (difficult row skipped), FP with num_pos 1 -> AP 1.
    # label 2: FP(0.6), TP(0.5) with num_pos 1 -> AP 0.5.
    assert res.ap == {1: pytest.approx(1.0), 2: pytest.approx(0.5)}
    assert res.mAP == pytest.approx(0.75)


def test_solver_counts_labels_without_detections_in_the_denominator():
    rows = np.array(
        [
            [-1, 1, 2, -1, -1],
            [-1, 2, 3, -1, -1],
            [-1, 3, 0, -1, -1],
            [0, 1, 0.9, 1, 0],
            [1, 1, 0.8, 1, 0],
            [0, 3, 0.7, 0, 1],
        ],
        dtype=F,
    )
    res = solver_map(rows, "11point")
    assert res.ap == {1: pytest.approx(1.0), 3: 0.0}
    assert res.mAP == pytest.approx(1.0 / 3)  # label 2 skipped (no rows) but counted


def test_solver_sums_num_pos_over_batches():
    batch1 = [[-1, 1, 1, -1, -1], [0, 1, 0.9, 1, 0]]
    batch2 = [[-1, 1, 1, -1, -1], [5, 1, 0.95, 0, 1], [5, 1, 0.5, 1, 0]]
    res = solver_map(np.array(batch1 + batch2, dtype=F), "Integral")
    assert res.num_pos == {1: 2}
    # ranked: FP(.95), TP(.9), TP(.5): prec 0, 1/2, 2/3; rec 0, 1/2, 1 -> 1/4 + 1/3.
    assert res.mAP == pytest.approx(0.25 + 1 / 3, abs=1e-6)
