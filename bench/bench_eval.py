"""Benchmark: VOC AP on a VOC07-test-sized set (4,952 images, 20 classes, 200 dets/image).

    python bench/bench_eval.py [--images 4952] [--per-image 200] [--files] [--naive]

Generates a seeded synthetic set in memory (about 2.4 ground-truth boxes per image, as in
VOC07 test; detections are jittered copies of the ground truth plus clutter), then times
:func:`model_libs.evaluation.voc.evaluate_voc` for both metrics. ``--files`` also writes the
comp4 result files to a temporary folder and times reading them back. ``--naive`` times a
plain per-detection Python loop on a subset of classes and reports the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from model_libs.cli import make_parser, run
from model_libs.evaluation.results import (
    ClassDetections,
    read_result_dir,
    write_result_files,
)
from model_libs.evaluation.voc import evaluate_voc

CLASSES = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


def make_set(n_images: int, per_image: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(n_images)]
    gt: dict[str, list] = {}
    gt_rows = []  # (image index, class index, box)
    for k, img in enumerate(ids):
        n = rng.poisson(2.4)
        objs = []
        for _ in range(n):
            c = int(rng.integers(len(CLASSES)))
            x1, y1 = rng.uniform(0, 400, 2)
            w, h = rng.uniform(10, 200, 2)
            box = (float(np.floor(x1)), float(np.floor(y1)), float(np.floor(x1 + w)), float(np.floor(y1 + h)))
            objs.append((CLASSES[c], box, bool(rng.random() < 0.1)))
            gt_rows.append((k, c, box))
        gt[img] = objs
    n_det = n_images * per_image
    img_idx = np.repeat(np.arange(n_images), per_image)
    cls_idx = rng.integers(len(CLASSES), size=n_det)
    x1 = rng.uniform(0, 400, n_det)
    y1 = rng.uniform(0, 400, n_det)
    boxes = np.stack([x1, y1, x1 + rng.uniform(10, 200, n_det), y1 + rng.uniform(10, 200, n_det)], 1)
    scores = rng.random(n_det) * 0.6
    # About 2 jittered hits per GT box, with high scores.
    hits = rng.choice(n_det, size=min(n_det, 2 * len(gt_rows)), replace=False)
    for h, (k, c, box) in zip(hits, gt_rows * 2, strict=False):
        img_idx[h], cls_idx[h] = k, c
        boxes[h] = np.array(box) + rng.normal(0, 6, 4)
        scores[h] = 0.4 + 0.6 * rng.random()
    scores = np.round(scores, 4)
    id_arr = np.array(ids, dtype=object)
    dets = {}
    for c, name in enumerate(CLASSES):
        m = cls_idx == c
        dets[name] = ClassDetections(id_arr[img_idx[m]], scores[m], boxes[m])
    return dets, gt


def naive_ap(det: ClassDetections, gt, cls: str) -> float:
    npos = sum(1 for objs in gt.values() for o in objs if o[0] == cls and not o[2])
    order = sorted(range(len(det)), key=lambda i: -det.scores[i])
    used: dict[str, set] = {}
    tp, fp = [], []
    for i in order:
        img = det.image_ids[i]
        x1, y1, x2, y2 = det.boxes[i]
        best, jb = -1.0, -1
        for j, (c, (gx1, gy1, gx2, gy2), _d) in enumerate(gt[img]):
            if c != cls:
                continue
            iw = min(x2, gx2) - max(x1, gx1) + 1
            ih = min(y2, gy2) - max(y1, gy1) + 1
            if iw > 0 and ih > 0:
                ov = iw * ih / ((x2 - x1 + 1) * (y2 - y1 + 1) + (gx2 - gx1 + 1) * (gy2 - gy1 + 1) - iw * ih)
                if ov > best:
                    best, jb = ov, j
        t = f = 0
        if best >= 0.5:
            if not gt[img][jb][2]:
                s = used.setdefault(img, set())
                if jb in s:
                    f = 1
                else:
                    t = 1
                    s.add(jb)
        else:
            f = 1
        tp.append(t)
        fp.append(f)
    tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
    rec = tp_c / npos
    prec = tp_c / np.maximum(tp_c + fp_c, 1)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx]))


def build_parser():
    ap = make_parser("bench_eval.py", __doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=4952)
    ap.add_argument("--per-image", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--files", action="store_true", help="also time writing/reading comp4 files")
    ap.add_argument("--naive", action="store_true", help="time a per-detection loop (2 classes)")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(argv, build_parser, _bench)


def _bench(args) -> int:

    t0 = time.perf_counter()
    dets, gt = make_set(args.images, args.per_image)
    n = sum(len(d) for d in dets.values())
    print(
        f"synthetic set: {args.images} images, {len(CLASSES)} classes, {n} detections, "
        f"{sum(len(v) for v in gt.values())} GT boxes (generated in "
        f"{time.perf_counter() - t0:.1f}s)"
    )
    print(f"cpus available: {len(os.sched_getaffinity(0))}")
    for metric in ("area", "11point"):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = evaluate_voc(dets, gt, metric=metric)
            times.append(time.perf_counter() - t0)
        print(
            f"evaluate_voc metric={metric:8s} mAP={res.mAP:.4f}  "
            f"best {min(times):.3f}s  (runs: {', '.join(f'{t:.3f}' for t in times)})"
        )
    if args.files:
        with tempfile.TemporaryDirectory() as tmp:
            write_result_files(tmp, dets)
            t0 = time.perf_counter()
            read = read_result_dir(tmp)
            t_read = time.perf_counter() - t0
            t0 = time.perf_counter()
            evaluate_voc(read, gt, metric="area")
            t_eval = time.perf_counter() - t0
            print(f"from comp4 files: read {t_read:.3f}s + evaluate {t_eval:.3f}s")
    if args.naive:
        sub = CLASSES[:2]
        t0 = time.perf_counter()
        vals = {c: naive_ap(dets[c], gt, c) for c in sub}
        t_naive = (time.perf_counter() - t0) * len(CLASSES) / len(sub)
        t0 = time.perf_counter()
        fast = evaluate_voc({c: dets[c] for c in sub}, gt, metric="area")
        t_fast = (time.perf_counter() - t0) * len(CLASSES) / len(sub)
        diff = max(abs(vals[c] - fast.ap[c]) for c in sub)
        print(
            f"naive loop (extrapolated to 20 classes) {t_naive:.1f}s vs vectorised "
            f"{t_fast:.3f}s: {t_naive / t_fast:.0f}x; max |AP diff| = {diff:.2e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
