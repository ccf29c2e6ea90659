"""Caffe's own detection AP (SSD fork), reproduced bit-for-bit in float32 where it matters.

This mirrors, from the upstream SSD sources (weiliu89/caffe):

* ``DetectionEvaluateLayer::Forward_cpu`` — emits one row ``[-1, label, num_pos, -1, -1]`` per
  non-background class (num_pos counts non-difficult boxes unless ``evaluate_difficult_gt``),
  then one row ``[image_id, label, score, tp, fp]`` per detection with a label (DetectionOutput's
  "nothing found" rows, label -1, get none). Detections of an (image, label) are sorted by
  descending score, matched to the highest-IoU GT box of that label (first box on ties,
  ``>= overlap_threshold``); a match to a difficult box (when not evaluating difficult GT) gives
  tp = fp = 0; an already-matched box gives a false positive. Without ``name_size_file`` boxes
  are compared normalized (IoU without the +1); with it, in each original image's pixels
  (``OutputBBox``, honouring ``resize_param``; Caffe's pixel IoU with the +1).
* ``Solver::TestDetection`` — sums num_pos per label over rows with image_id -1, skips
  detection rows with tp == fp == 0, computes ``ComputeAP`` per label that has a num_pos row
  (labels with no detection rows are skipped but still counted in the denominator) and
  averages: ``mAP = sum(AP) / number_of_labels_with_num_pos``.
* ``bbox_util.cpp ComputeAP`` — stable sort by descending score, integer cumsums, float32
  precision/recall, ``ap_version`` one of ``11point``, ``MaxIntegral``, ``Integral`` (and
  ``101point``); AP is 0 when there are no detections or ``num_pos == 0``.

Use this module to reproduce the solver's ``detection_eval`` number from DetectionEvaluate
outputs, or to compare the VOC devkit numbers with what Caffe printed during training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelLibsError

AP_VERSIONS: tuple[str, ...] = ("11point", "MaxIntegral", "Integral", "101point")
_F = np.float32
_EPS = _F(1e-6)


def _cumsum_sorted(pairs: np.ndarray, flags: np.ndarray) -> np.ndarray:
    order = np.argsort(-pairs, kind="stable")
    return np.cumsum(flags[order])


def compute_ap(
    tp: Sequence[tuple[float, int]],
    num_pos: int,
    fp: Sequence[tuple[float, int]],
    ap_version: str = "11point",
) -> tuple[float, np.ndarray, np.ndarray]:
    """Caffe's ``ComputeAP``: returns ``(ap, precision, recall)`` (float32 arrays).

    ``tp``/``fp`` are ``(score, 0|1)`` pairs in the same order, complementary as Caffe checks.
    """
    if ap_version not in AP_VERSIONS:
        raise ModelLibsError(f"unknown ap_version {ap_version!r} (use {', '.join(AP_VERSIONS)})")
    if len(tp) != len(fp):
        raise ModelLibsError(f"tp has {len(tp)} entries but fp has {len(fp)}")
    num = len(tp)
    if num == 0 or num_pos == 0:
        return 0.0, np.zeros(0, _F), np.zeros(0, _F)
    tp_s = np.array([p[0] for p in tp], dtype=_F)
    tp_f = np.array([p[1] for p in tp], dtype=np.int64)
    fp_s = np.array([p[0] for p in fp], dtype=_F)
    fp_f = np.array([p[1] for p in fp], dtype=np.int64)
    if np.any(np.abs(tp_s - fp_s) > _EPS) or np.any(tp_f != 1 - fp_f):
        raise ModelLibsError("tp and fp pairs must have equal scores and complementary flags")
    tp_cum = _cumsum_sorted(tp_s, tp_f)
    fp_cum = _cumsum_sorted(fp_s, fp_f)
    if tp_cum[-1] > num_pos:
        raise ModelLibsError(f"{int(tp_cum[-1])} true positives but num_pos is {num_pos}")
    prec = tp_cum.astype(_F) / (tp_cum + fp_cum).astype(_F)
    rec = tp_cum.astype(_F) / _F(num_pos)
    if ap_version in ("11point", "101point"):
        ap = _ap_npoint(prec, rec, 10 if ap_version == "11point" else 100)
    elif ap_version == "MaxIntegral":
        ap = _ap_max_integral(prec, rec)
    else:
        ap = _ap_integral(prec, rec)
    return float(ap), prec, rec


def _ap_npoint(prec: np.ndarray, rec: np.ndarray, steps: int) -> np.float32:
    """The ``11point``/``101point`` loop of ComputeAP, including its carry rules.

    Caffe scans from the last detection backwards with a moving ``start_idx``; on leaving the
    range ``rec >= j/steps`` it carries the running maximum into ``j-1``, otherwise the next
    level restarts from 0 and rescans from ``start_idx``. Reproduced here with slices.
    """
    num = len(prec)
    rec64 = rec.astype(np.float64)  # float compared with double j/steps, as in C++
    max_precs = np.zeros(steps + 1, dtype=_F)
    start_idx = num - 1
    for j in range(steps, -1, -1):
        t = j / float(steps)
        # Largest i <= start_idx with rec[i] < t (rec is non-decreasing), or -1.
        lo = int(np.searchsorted(rec64[: start_idx + 1], t, side="left")) - 1
        if lo + 1 <= start_idx:
            m = prec[lo + 1 : start_idx + 1].max()
            max_precs[j] = max(max_precs[j], m)
        if lo >= 0:  # the loop broke at i = lo
            start_idx = lo
            if j > 0:
                max_precs[j - 1] = max_precs[j]
    ap = _F(0)
    for j in range(steps, -1, -1):
        ap = _F(ap + _F(max_precs[j] / _F(steps + 1)))
    return ap


def _ap_max_integral(prec: np.ndarray, rec: np.ndarray) -> np.float32:
    num = len(prec)
    ap = _F(0)
    cur_rec = rec[-1]
    cur_prec = prec[-1]
    env = np.maximum.accumulate(prec[::-1])[::-1]  # max(prec[i:]) in float32
    for i in range(num - 2, -1, -1):
        cur_prec = env[i]
        d = _F(abs(_F(cur_rec - rec[i])))
        if d > _EPS:
            ap = _F(ap + _F(cur_prec * d))
        cur_rec = rec[i]
    return _F(ap + _F(cur_rec * cur_prec))


def _ap_integral(prec: np.ndarray, rec: np.ndarray) -> np.float32:
    ap = _F(0)
    prev = np.concatenate(([_F(0)], rec[:-1])).astype(_F)
    d = np.abs(rec - prev).astype(_F)
    for i in np.flatnonzero(d > _EPS):
        ap = _F(ap + _F(prec[i] * d[i]))
    return ap


# ----------------------------------------------------------------------------- solver


@dataclass
class SolverResult:
    """Per-label AP (float) and the solver's mAP as Caffe computes it."""

    mAP: float
    ap: dict[int, float]
    num_pos: dict[int, int]


def solver_map(rows: np.ndarray, ap_version: str = "11point") -> SolverResult:
    """Caffe's ``Solver::TestDetection`` over DetectionEvaluate output rows.

    ``rows``: (N, 5) ``[image_id, label, score, tp, fp]`` — the concatenation of the layer's
    top blobs over all test iterations.
    """
    rows = np.asarray(rows, dtype=_F).reshape(-1, 5)
    num_pos: dict[int, int] = {}
    tps: dict[int, list[tuple[float, int]]] = {}
    fps: dict[int, list[tuple[float, int]]] = {}
    for r in rows:
        item, label = int(r[0]), int(r[1])
        if item == -1:
            num_pos[label] = num_pos.get(label, 0) + int(r[2])
            continue
        t, f = int(r[3]), int(r[4])
        if t == 0 and f == 0:
            continue
        tps.setdefault(label, []).append((float(r[2]), t))
        fps.setdefault(label, []).append((float(r[2]), f))
    aps: dict[int, float] = {}
    total = _F(0)
    for label in sorted(num_pos):
        if label not in tps:
            continue
        ap, _, _ = compute_ap(tps[label], num_pos[label], fps[label], ap_version)
        aps[label] = ap
        total = _F(total + _F(ap))
    m = float(total / _F(len(num_pos))) if num_pos else 0.0
    return SolverResult(m, aps, num_pos)


# ----------------------------------------------------------------------------- layer

WARP, FIT_SMALL_SIZE, FIT_LARGE_SIZE_AND_PAD = 1, 2, 3  # ResizeParameter.Resize_mode


def read_name_sizes(path: str | Path) -> list[tuple[int, int]]:
    """``(height, width)`` per line ``name height width`` of a name/size file, in file order.

    Reads as Caffe does (``while (infile >> name >> height >> width)``): whitespace-separated
    triples up to the first one whose height or width is not an integer.
    """
    try:
        tokens = Path(path).read_text().split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLibsError(f"{path}: cannot read the name/size file ({exc})") from None
    out: list[tuple[int, int]] = []
    for k in range(0, len(tokens) - 2, 3):
        try:
            out.append((int(tokens[k + 1]), int(tokens[k + 2])))
        except ValueError:
            break
    return out


def _size(b: np.ndarray, normalized: bool = True) -> np.float32:
    """``BBoxSize``: 0 for an invalid box; ``+1`` widths when not normalized."""
    if b[2] < b[0] or b[3] < b[1]:
        return _F(0)
    w, h = _F(b[2] - b[0]), _F(b[3] - b[1])
    if normalized:
        return _F(w * h)
    return _F(_F(w + _F(1)) * _F(h + _F(1)))


def _clip(b: np.ndarray, height: float = 1.0, width: float = 1.0) -> tuple[np.ndarray, np.float32]:
    """``ClipBBox``; the stored size is always the normalized formula, as in Caffe."""
    hi = np.array([width, height, width, height], dtype=_F)
    c = np.maximum(np.minimum(b, hi), _F(0)).astype(_F)
    return c, _size(c)


def _scale(b: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.float32]:
    """``ScaleBBox``: to pixels; size with ``+1`` unless both dimensions are <= 1."""
    s = (b * np.array([width, height, width, height], dtype=_F)).astype(_F)
    return s, _size(s, normalized=not (width > 1 or height > 1))


def _project(src: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """``ProjectBBox`` (clipped), or None where Caffe returns false without writing."""
    if b[0] >= src[2] or b[2] <= src[0] or b[1] >= src[3] or b[3] <= src[1]:
        return None
    sw, sh = _F(src[2] - src[0]), _F(src[3] - src[1])
    p = np.array(
        [(b[0] - src[0]) / sw, (b[1] - src[1]) / sh, (b[2] - src[0]) / sw, (b[3] - src[1]) / sh], dtype=_F
    )
    return _clip(p)[0]


def output_bbox(
    box: np.ndarray, img_hw: tuple[int, int], resize: object | None = None
) -> tuple[np.ndarray, np.float32]:
    """Caffe's ``OutputBBox``: a normalized box in the original image's pixels, and its size.

    ``resize`` is a ``ResizeParameter`` (``detection_evaluate_param.resize_param``) or None.
    """
    height, width = img_hw
    b = np.asarray(box, dtype=_F)[:4]
    mode = int(resize.resize_mode) if resize is not None else 0
    if mode:
        rh, rw = _F(resize.height), _F(resize.width)
        if not (rh > 0 and rw > 0):
            raise ModelLibsError(
                f"resize_param needs height and width > 0 (has {resize.height}x{resize.width})"
            )
        r_aspect = _F(rw / rh)
        aspect = _F(_F(width) / _F(height))
        if mode == WARP:
            return _scale(_clip(b)[0], height, width)
        if mode == FIT_LARGE_SIZE_AND_PAD:
            if aspect > r_aspect:
                pad = _F(_F(rh - _F(rw / aspect)) / _F(2))
                src = np.array([0, pad / rh, 1, _F(1) - _F(pad / rh)], dtype=_F)
            else:
                pad = _F(_F(rw - _F(rh * aspect)) / _F(2))
                src = np.array([pad / rw, 0, _F(1) - _F(pad / rw), 1], dtype=_F)
            proj = _project(src, b)
            return _scale(_clip(b if proj is None else proj)[0], height, width)
        if mode == FIT_SMALL_SIZE:
            hs, ws = int(resize.height_scale), int(resize.width_scale)
            if hs == 0 or ws == 0:
                return _scale(_clip(b)[0], height, width)
            return _clip(_scale(b, hs, ws)[0], _F(height), _F(width))
        raise ModelLibsError(f"unknown resize_mode {mode}")
    return _scale(_clip(b)[0], height, width)


def _jaccard(a: np.ndarray, sa: np.float32, b: np.ndarray, sb: np.float32, normalized: bool) -> np.float32:
    """Caffe's ``JaccardOverlap(bbox1, bbox2, normalized)`` with the boxes' stored sizes.

    Not normalized, two disjoint boxes still "intersect" in the 1x1 pixel Caffe's
    ``IntersectBBox`` returns for them, so their overlap is small but not 0.
    """
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        inter_box = np.zeros(4, dtype=_F)
    else:
        inter_box = np.array([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])], dtype=_F)
    iw = _F(inter_box[2] - inter_box[0])
    ih = _F(inter_box[3] - inter_box[1])
    if not normalized:
        iw, ih = _F(iw + _F(1)), _F(ih + _F(1))
    if not (iw > 0 and ih > 0):
        return _F(0)
    inter = _F(iw * ih)

    def stored(x: np.ndarray, s: np.float32) -> np.float32:
        return _F(0) if (x[2] < x[0] or x[3] < x[1]) else s

    return _F(inter / _F(_F(stored(a, sa) + stored(b, sb)) - inter))


def detection_evaluate(
    det: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    background_label_id: int = 0,
    overlap_threshold: float = 0.5,
    evaluate_difficult_gt: bool = False,
    sizes: Sequence[tuple[int, int]] | None = None,
    resize: object | None = None,
    start: int = 0,
) -> np.ndarray:
    """Caffe's DetectionEvaluate layer (one forward pass).

    ``det``: (N, 7) ``[image_id, label, score, xmin, ymin, xmax, ymax]`` (DetectionOutput's
    format; rows with label -1, DetectionOutput's "nothing found" rows, are ignored). ``gt``:
    (M, 8) ``[image_id, label, instance_id, xmin, ymin, xmax, ymax, difficult]``. Returns the
    (K, 5) rows the layer emits.

    ``sizes`` (from ``name_size_file``, see :func:`read_name_sizes`): boxes are then compared
    in each original image's pixels (``OutputBBox`` with ``resize``, Caffe's pixel overlap).
    The k-th image that has detection rows in this pass uses ``sizes[(start + k) % len]`` -
    Caffe's running ``count_``, which the caller advances by the number of such images.
    """
    det = np.asarray(det, dtype=_F).reshape(-1, 7)
    gt = np.asarray(gt, dtype=_F).reshape(-1, 8)
    thr = _F(overlap_threshold)
    pixels = bool(sizes)
    # GetGroundTruth (LabelBBox version): stops at the first image_id -1 row.
    all_gt: dict[int, dict[int, list[np.ndarray]]] = {}
    for r in gt:
        item, label = int(r[0]), int(r[1])
        if item == -1:
            break
        if label == background_label_id:
            raise ModelLibsError(f"ground truth row {r.tolist()} has the background label")
        all_gt.setdefault(item, {}).setdefault(label, []).append(r)
    # GetDetectionResults: skips image_id -1 rows.
    all_det: dict[int, dict[int, list[np.ndarray]]] = {}
    for r in det:
        item, label = int(r[0]), int(r[1])
        if item == -1:
            continue
        if label == background_label_id:
            raise ModelLibsError(f"detection row {r.tolist()} has the background label")
        all_det.setdefault(item, {}).setdefault(label, []).append(r)
    num_pos: dict[int, int] = {}
    for labels in all_gt.values():
        for label, boxes in labels.items():
            n = len(boxes) if evaluate_difficult_gt else sum(1 for b in boxes if b[7] == 0)
            num_pos[label] = num_pos.get(label, 0) + n
    out: list[list[float]] = []
    for c in range(num_classes):
        if c == background_label_id:
            continue
        out.append([-1, c, num_pos.get(c, 0), -1, -1])
    for k, item in enumerate(sorted(all_det)):
        img_hw = sizes[(start + k) % len(sizes)] if pixels else None
        for label in sorted(all_det[item]):
            if label == -1:
                continue
            boxes = all_det[item][label]
            gts = all_gt.get(item, {}).get(label)
            if gts is None:
                out.extend([item, label, float(b[2]), 0, 1] for b in boxes)
                continue
            if pixels:
                gt_boxes = [output_bbox(g[3:7], img_hw, resize) for g in gts]
            else:
                gt_boxes = [(g[3:7], _size(g[3:7])) for g in gts]
            # std::sort by descending score (not stable; ties are rare in float scores).
            boxes = sorted(boxes, key=lambda b: -float(b[2]))
            visited = [False] * len(gts)
            for b in boxes:
                box = output_bbox(b[3:7], img_hw, resize) if pixels else (b[3:7], _size(b[3:7]))
                best, jmax = _F(-1), -1
                for j, (g, sg) in enumerate(gt_boxes):
                    o = _jaccard(box[0], box[1], g, sg, normalized=not pixels)
                    if o > best:
                        best, jmax = o, j
                row = [item, label, float(b[2]), 0, 1]
                if best >= thr:
                    if evaluate_difficult_gt or gts[jmax][7] == 0:
                        if not visited[jmax]:
                            row[3:5] = [1, 0]
                            visited[jmax] = True
                    else:
                        row[3:5] = [0, 0]
                out.append(row)
    return np.array(out, dtype=_F).reshape(-1, 5)
