"""Benchmark: the PyTorch MultiBoxLoss (forward + backward) and DetectionOutput at DSOD300's
shapes, beside the project's Caffe on the same blobs.

    python bench/bench_pytorch_ssd.py [--batch 8] [--classes 21] [--repeat 5] [--device cpu]
                                      [--no-caffe] [--json out.json]

Shapes: DSOD300's 8,744 priors (PriorBox boxes on its 38/19/10/5/3/2 maps), ``--classes``
classes, ``--batch`` images with about 3 ground-truth boxes each (some difficult, one image
without any). Blobs are seeded random predictions. Reports the median milliseconds per call
and Caffe/PyTorch ratios; Caffe is the CPU-only build (``--no-caffe`` skips it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from google.protobuf import text_format

from model_libs.cli import make_parser, run
from model_libs.proto import caffe_pb2
from model_libs.pytorch.ssd_layers import DetectionOutput, MultiBoxLoss

# DSOD300: feature map sizes, min/max sizes, aspect ratios (1 + flipped 2 [+ 3])
MAPS = [(38, 30, 60, (2,)), (19, 60, 111, (2, 3)), (10, 111, 162, (2, 3)), (5, 162, 213, (2, 3)),
        (3, 213, 264, (2,)), (2, 264, 315, (2,))]  # fmt: skip

LOSS = """layer { name: "mbox_loss" type: "MultiBoxLoss"
  bottom: "loc_s" bottom: "conf_s" bottom: "prior" bottom: "label" top: "loss"
  propagate_down: true propagate_down: true propagate_down: false propagate_down: false
  loss_param { normalization: VALID }
  multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1 num_classes: %d
    share_location: true match_type: PER_PREDICTION overlap_threshold: 0.5 use_prior_for_matching: true
    background_label_id: 0 use_difficult_gt: true neg_pos_ratio: 3 neg_overlap: 0.5 code_type: CENTER_SIZE
    ignore_cross_boundary_bbox: false mining_type: MAX_NEGATIVE } }
"""
DETOUT = """layer { name: "detection_out" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior"
  top: "detection_out"
  detection_output_param { num_classes: %d share_location: true background_label_id: 0
    nms_param { nms_threshold: 0.45 top_k: 400 } keep_top_k: 200 confidence_threshold: 0.01
    code_type: CENTER_SIZE } }
"""


def dsod300_priors(img: int = 300) -> np.ndarray:
    """(1, 2, 8744*4): PriorBox boxes (min, sqrt(min*max), then each ratio and its flip)."""
    boxes = []
    for fm, mn, mx, ratios in MAPS:
        step = img / fm
        for i in range(fm):
            for j in range(fm):
                cx, cy = (j + 0.5) * step, (i + 0.5) * step
                whs = [(mn, mn), (np.sqrt(mn * mx),) * 2]
                for r in ratios:
                    whs += [(mn * np.sqrt(r), mn / np.sqrt(r)), (mn / np.sqrt(r), mn * np.sqrt(r))]
                for w, h in whs:
                    boxes.append(
                        [(cx - w / 2) / img, (cy - h / 2) / img, (cx + w / 2) / img, (cy + h / 2) / img]
                    )
    b = np.array(boxes, dtype=np.float32)
    var = np.tile(np.array([0.1, 0.1, 0.2, 0.2], np.float32), (len(b), 1))
    return np.stack([b.reshape(-1), var.reshape(-1)])[None]


def blobs(batch: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    prior = dsod300_priors()
    P = prior.shape[2] // 4
    rows = []
    for i in range(1, batch):  # image 0 has no ground truth
        for k in range(int(rng.integers(1, 6))):
            c = rng.uniform(0.15, 0.85, 2)
            wh = rng.uniform(0.05, 0.7, 2)
            box = np.clip(np.concatenate([c - wh / 2, c + wh / 2]), 0, 1)
            rows.append([i, int(rng.integers(1, classes)), k, *box, float(rng.random() < 0.1)])
    label = np.array(rows, np.float32)[None, None]
    loc = rng.normal(0, 0.5, (batch, P * 4)).astype(np.float32)
    conf = rng.normal(0, 1.0, (batch, P * classes)).astype(np.float32)
    return loc, conf, prior, label


def layer(text: str) -> caffe_pb2.LayerParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter()).layer[0]


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def bench_torch(loc, conf, prior, label, classes, device, repeat):
    dev = torch.device(device)
    loss_layer = MultiBoxLoss(
        layer(LOSS % classes), [list(a.shape) for a in (loc, conf, prior, label)], "TRAIN"
    )
    det_layer = DetectionOutput(layer(DETOUT % classes), [list(a.shape) for a in (loc, conf, prior)], "TEST")
    lo = torch.tensor(loc, device=dev, requires_grad=True)
    co = torch.tensor(conf, device=dev, requires_grad=True)
    pr, la = torch.tensor(prior, device=dev), torch.tensor(label, device=dev)
    probs = torch.softmax(torch.tensor(conf, device=dev).view(len(conf), -1, classes), -1).view(len(conf), -1)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step():
        lo.grad = co.grad = None
        (loss,) = loss_layer(lo, co, pr, la)
        loss.backward()
        sync()

    def detect():
        det_layer(lo.detach(), probs, pr)
        sync()

    return timed(step, repeat), timed(detect, repeat), loss_layer.stats


def bench_caffe(loc, conf, prior, label, classes, repeat):
    from model_libs.caffe_env import import_caffe

    caffe = import_caffe()
    caffe.set_mode_cpu()

    def inp(name, shape):
        dims = " ".join(f"dim: {d}" for d in shape)
        return (
            f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'
        )

    def scaled(name):
        return (
            f'layer {{ name: "{name}_s" type: "Scale" bottom: "{name}" top: "{name}_s" '
            'scale_param { axis: 0 num_axes: 0 filler { type: "constant" value: 1 } } }\n'
        )

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp)
        head = inp("loc", loc.shape) + inp("conf", conf.shape) + inp("prior", prior.shape)
        (p / "loss.prototxt").write_text(
            head + inp("label", label.shape) + scaled("loc") + scaled("conf") + LOSS % classes
        )
        (p / "det.prototxt").write_text(head + DETOUT % classes)
        net = caffe.Net(str(p / "loss.prototxt"), caffe.TRAIN)
        det = caffe.Net(str(p / "det.prototxt"), caffe.TEST)
    probs = torch.softmax(torch.tensor(conf).view(len(conf), -1, classes), -1).view(len(conf), -1).numpy()
    for n in (net, det):
        n.blobs["loc"].data[...] = loc
        n.blobs["prior"].data[...] = prior
    net.blobs["conf"].data[...] = conf
    net.blobs["label"].data[...] = label
    det.blobs["conf"].data[...] = probs

    # The Scale layers are part of the net; their cost (two elementwise passes) is negligible.
    def step():
        net.forward()
        net.backward()

    return timed(step, repeat), timed(det.forward, repeat)


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser("bench_pytorch_ssd.py", __doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-caffe", action="store_true", help="time the PyTorch layers only")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(argv, build_parser, _bench)


def _bench(a: argparse.Namespace) -> int:
    loc, conf, prior, label = blobs(a.batch, a.classes)
    P = prior.shape[2] // 4
    print(f"DSOD300 shapes: {P} priors, {a.classes} classes, batch {a.batch}, {label.shape[2]} boxes; "
          f"torch {torch.__version__} on {a.device}, {torch.get_num_threads()} threads")  # fmt: skip
    t_loss, t_det, stats = bench_torch(loc, conf, prior, label, a.classes, a.device, a.repeat)
    out = {"priors": P, "batch": a.batch, "classes": a.classes, "device": a.device, **stats}
    out.update(torch_loss_ms=t_loss, torch_detout_ms=t_det)
    print(f"MultiBoxLoss forward+backward  torch {t_loss:8.1f} ms   "
          f"({stats['num_matches']} matches, {stats['num_negatives']} negatives)")  # fmt: skip
    print(f"DetectionOutput forward        torch {t_det:8.1f} ms")
    if not a.no_caffe:
        c_loss, c_det = bench_caffe(loc, conf, prior, label, a.classes, a.repeat)
        out.update(caffe_loss_ms=c_loss, caffe_detout_ms=c_det)
        print(f"MultiBoxLoss forward+backward  caffe {c_loss:8.1f} ms   caffe/torch {c_loss / t_loss:5.2f}")
        print(f"DetectionOutput forward        caffe {c_det:8.1f} ms   caffe/torch {c_det / t_det:5.2f}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
