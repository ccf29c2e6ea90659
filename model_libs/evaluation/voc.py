"""PASCAL VOC detection AP with the VOC devkit's semantics (``VOCevaldet.m`` / ``VOCap.m``).

What the devkit does, and so what this module does:

* Detections of a class are ranked by descending score; ties keep their input order
  (MATLAB's ``sort`` is stable).
* Overlap uses the +1 pixel convention: ``iw = min(x2) - max(x1) + 1`` (likewise ``ih``),
  ``IoU = iw*ih / ((w1+1)(h1+1) + (w2+1)(h2+1) - iw*ih)``, counted only when ``iw > 0`` and
  ``ih > 0``.
* Each detection is assigned to the ground-truth box (of its class, in its image) it overlaps
  most — the first such box on ties, difficult boxes included. If that overlap is
  ``>= iou_threshold`` (0.5): a difficult box makes the detection "don't care" (neither true
  nor false positive); otherwise the first detection assigned to the box is a true positive
  and later ones are false positives (duplicates). Below the threshold it is a false positive.
* ``npos`` counts the non-difficult boxes; recall = cumTP / npos, precision = cumTP /
  (cumTP + cumFP).
* ``11point`` (VOC2007): mean over ``t = 0:0.1:1`` of the maximum precision at recall >= t
  (0 if none), with recall = cumTP/npos in double precision and t the exact doubles MATLAB's
  colon operator produces (first half ``k*0.1``, second half ``1 - (10-k)*0.1``): so t(4) is
  0.30000000000000004 and a recall of exactly 3/10 does *not* reach it, while 6/10 and 7/10
  do reach 0.6 and 0.7. (py-faster-rcnn's ``voc_eval.py`` uses ``np.arange`` thresholds and
  differs at 0.3, 0.6 and 0.7; Caffe's float32 recall differs at 0.7 and 0.9 — see
  :mod:`.caffe_ap`.)
* ``area`` (VOC2010+): the area under the monotone (right-to-left maximum) precision envelope,
  summed where recall changes.

A class with no non-difficult ground truth (npos == 0) has no defined AP: it is reported as
``None`` and left out of the mAP.

Ground truth is a plain structure so any reader (VOC XML here, LMDB elsewhere) can feed it:
``{image_id: [(class_name, (xmin, ymin, xmax, ymax), difficult), ...]}``. The image ids in it
are the evaluated image set; a detection on another image id is an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import ModelLibsError
from .results import ClassDetections

Metric = Literal["11point", "area"]
METRICS: tuple[str, ...] = ("11point", "area")

GTObject = tuple[str, Sequence[float], bool]
GroundTruth = Mapping[str, Sequence[GTObject]]


# ----------------------------------------------------------------------------- ground truth


def load_voc_ground_truth(root: str | os.PathLike, year: str, image_set: str) -> dict[str, list[GTObject]]:
    """Ground truth of ``<root>/<year>/ImageSets/Main/<image_set>.txt`` from its Annotations.

    ``root`` is the VOCdevkit folder (holding ``VOC2007/``); a ``root`` that is itself the
    year folder is accepted too. The XML files are read by the converter's reader
    (:func:`model_libs.datasets.voc.parse_voc_xml`).
    """
    from ..datasets.voc import parse_voc_xml, split_ids

    base = Path(root)
    if not (base / year).is_dir() and (base / "Annotations").is_dir():
        base, year = base.parent, base.name
    gt = {}
    for i in split_ids(base, year, image_set):
        xml = base / year / "Annotations" / f"{i}.xml"
        ann = parse_voc_xml(xml)
        for k, o in enumerate(ann.objects):  # can match nothing: a broken annotation, not a 0
            if o.xmax < o.xmin or o.ymax < o.ymin:
                raise ModelLibsError(
                    f"{xml}: object {k} ({o.name}) box {o.box} is inverted (xmax < xmin or ymax < ymin)"
                )
        gt[i] = [(o.name, o.box, o.difficult) for o in ann.objects]
    return gt


def classes_in(ground_truth: GroundTruth) -> list[str]:
    """Sorted class names present in ``ground_truth``."""
    return sorted({o[0] for objs in ground_truth.values() for o in objs})


# ----------------------------------------------------------------------------- AP


@dataclass
class ClassResult:
    """Evaluation of one class: AP (None when npos == 0) and its precision–recall curve."""

    name: str
    ap: float | None
    npos: int
    ndet: int
    tp: int
    fp: int
    ignored: int
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)


@dataclass
class VocEvaluation:
    """Per-class results and mAP (mean AP over classes whose AP is defined)."""

    metric: str
    iou_threshold: float
    classes: dict[str, ClassResult]

    @property
    def mAP(self) -> float | None:
        aps = [r.ap for r in self.classes.values() if r.ap is not None]
        return float(np.mean(aps)) if aps else None

    @property
    def ap(self) -> dict[str, float | None]:
        return {c: r.ap for c, r in self.classes.items()}


def _matlab_colon(a: float, d: float, b: float) -> tuple[float, ...]:
    """The doubles of MATLAB's ``a:d:b`` (symmetric algorithm: ``a + k*d`` for the first
    half, ``b - k*d`` for the second, ``(a+b)/2`` in the middle when there is one)."""
    n = int(np.floor((b - a) / d + 1e-10))
    v = [0.0] * (n + 1)
    for k in range(n // 2 + 1):
        v[k] = a + k * d
        v[n - k] = b - k * d
    if n % 2 == 0:
        v[n // 2] = (a + b) / 2
    return tuple(v)


VOC07_THRESHOLDS: tuple[float, ...] = _matlab_colon(0.0, 0.1, 1.0)
"""The recall thresholds of VOCevaldet.m's ``for t=0:0.1:1``."""


def ap_11point(rec: np.ndarray, prec: np.ndarray) -> float:
    """VOC2007 11-point AP (``VOCevaldet.m``): mean of max precision at ``rec >= t``."""
    total = 0.0
    for t in VOC07_THRESHOLDS:
        mask = rec >= t
        total += float(prec[mask].max()) if mask.any() else 0.0
    return total / 11.0


def ap_area(rec: np.ndarray, prec: np.ndarray) -> float:
    """VOC2010+ AP: area under the monotone precision envelope (``VOCap.m``)."""
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def _iou_devkit(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Row-wise devkit overlap of ``det`` and ``gt`` (both (K, 4)); -inf where disjoint."""
    ix1 = np.maximum(det[:, 0], gt[:, 0])
    iy1 = np.maximum(det[:, 1], gt[:, 1])
    ix2 = np.minimum(det[:, 2], gt[:, 2])
    iy2 = np.minimum(det[:, 3], gt[:, 3])
    iw = ix2 - ix1 + 1.0
    ih = iy2 - iy1 + 1.0
    inter = iw * ih
    ua = (
        (det[:, 2] - det[:, 0] + 1.0) * (det[:, 3] - det[:, 1] + 1.0)
        + (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0)
        - inter
    )
    ok = (iw > 0) & (ih > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ov = np.where(ok, inter / np.where(ok, ua, 1.0), -np.inf)
    return ov


def _image_index(det: ClassDetections, image_pos: Mapping[str, int], set_name: str) -> np.ndarray:
    """Map each detection's image id to its position in the ground truth, or raise."""
    if len(det) == 0:
        return np.zeros(0, dtype=np.int64)
    get = image_pos.get
    pos = np.fromiter((get(str(i), -1) for i in det.image_ids), np.int64, len(det))
    missing = np.flatnonzero(pos < 0)
    if len(missing):
        i = int(missing[0])
        raise ModelLibsError(
            f"{det.where(i)}: image id {str(det.image_ids[i])!r} is not in the ground truth ({set_name})"
        )
    return pos


def evaluate_class(
    det: ClassDetections,
    gt_img: np.ndarray,
    gt_box: np.ndarray,
    gt_diff: np.ndarray,
    det_img: np.ndarray,
    n_images: int,
    metric: Metric = "area",
    iou_threshold: float = 0.5,
    name: str = "",
) -> ClassResult:
    """AP of one class. ``gt_*`` are this class's boxes (image position, box, difficult) in
    ground-truth order; ``det_img`` is each detection's image position."""
    if metric not in METRICS:
        raise ModelLibsError(f"unknown metric {metric!r} (use one of {', '.join(METRICS)})")
    npos = int(np.count_nonzero(~gt_diff))
    n = len(det)
    # CSR layout of GT by image, keeping the original order within an image.
    g_order = np.argsort(gt_img, kind="stable")
    gt_box, gt_diff = gt_box[g_order], gt_diff[g_order]
    counts_img = (
        np.bincount(gt_img, minlength=n_images) if len(gt_img) else np.zeros(n_images, dtype=np.int64)
    )
    start_img = np.concatenate(([0], np.cumsum(counts_img)[:-1]))

    order = np.argsort(-det.scores, kind="stable")
    d_img = det_img[order]
    d_box = det.boxes[order]
    tp = np.zeros(n, dtype=np.int64)
    fp = np.zeros(n, dtype=np.int64)

    cnt = counts_img[d_img] if n else np.zeros(0, dtype=np.int64)
    total = int(cnt.sum())
    assigned = np.full(n, -1, dtype=np.int64)  # global GT index of the best overlap
    ovmax = np.full(n, -np.inf)
    if total:
        pair_det = np.repeat(np.arange(n), cnt)
        seg_start = np.cumsum(cnt) - cnt
        pair_gt = np.repeat(start_img[d_img], cnt) + (np.arange(total) - np.repeat(seg_start, cnt))
        ov = _iou_devkit(d_box[pair_det], gt_box[pair_gt])
        has = cnt > 0
        seg_max = np.full(n, -np.inf)
        seg_max[has] = np.maximum.reduceat(ov, seg_start[has])
        is_max = (ov == seg_max[pair_det]) & np.isfinite(ov)
        hit = np.flatnonzero(is_max)
        dets_hit, first = np.unique(pair_det[hit], return_index=True)
        assigned[dets_hit] = pair_gt[hit[first]]
        ovmax = seg_max
    matched = (assigned >= 0) & (ovmax >= iou_threshold)
    fp[~matched] = 1
    m_idx = np.flatnonzero(matched)
    g = assigned[m_idx]
    care = ~gt_diff[g]
    m_idx, g = m_idx[care], g[care]
    ignored = int(np.count_nonzero(~care))
    # The first detection (in rank order) on a GT box is the TP; later ones are duplicates.
    _, first = np.unique(g, return_index=True)
    is_first = np.zeros(len(g), dtype=bool)
    is_first[first] = True
    tp[m_idx[is_first]] = 1
    fp[m_idx[~is_first]] = 1

    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(fp)
    denom = tp_cum + fp_cum
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(denom > 0, tp_cum / np.maximum(denom, 1), 0.0)
        rec = tp_cum / npos if npos else np.zeros(n)
    if npos == 0:
        ap: float | None = None
    elif metric == "11point":
        ap = ap_11point(rec, prec)
    else:
        ap = ap_area(rec, prec)
    return ClassResult(name, ap, npos, n, int(tp.sum()), int(fp.sum()), ignored, prec, rec)


def evaluate_voc(
    detections: Mapping[str, ClassDetections],
    ground_truth: GroundTruth,
    classes: Iterable[str] | None = None,
    metric: Metric = "area",
    iou_threshold: float = 0.5,
    set_name: str = "ground truth",
) -> VocEvaluation:
    """Per-class AP and mAP of ``detections`` against ``ground_truth`` (devkit semantics).

    ``classes`` defaults to the detection classes. A class without detections gets AP 0 (if it
    has ground truth). Every detection's image id must be in ``ground_truth``.
    """
    if metric not in METRICS:
        raise ModelLibsError(f"unknown metric {metric!r} (use one of {', '.join(METRICS)})")
    classes = list(detections) if classes is None else list(classes)
    image_ids = list(ground_truth)
    image_pos = {i: k for k, i in enumerate(image_ids)}
    per_class: dict[str, tuple[list[int], list[Sequence[float]], list[bool]]] = {
        c: ([], [], []) for c in classes
    }
    for k, img in enumerate(image_ids):
        for obj in ground_truth[img]:
            cls, box, difficult = obj[0], obj[1], obj[2]
            if cls in per_class:
                lst = per_class[cls]
                lst[0].append(k)
                lst[1].append(box)
                lst[2].append(bool(difficult))
    results: dict[str, ClassResult] = {}
    empty = ClassDetections(np.zeros(0, dtype=object), np.zeros(0), np.zeros((0, 4)))
    for c in classes:
        det = detections.get(c, empty)
        d_img = _image_index(det, image_pos, set_name)
        gi, gb, gd = per_class[c]
        results[c] = evaluate_class(
            det,
            np.array(gi, dtype=np.int64),
            np.array(gb, dtype=np.float64).reshape(-1, 4),
            np.array(gd, dtype=bool),
            d_img,
            len(image_ids),
            metric,
            iou_threshold,
            name=c,
        )
    return VocEvaluation(metric, iou_threshold, results)
