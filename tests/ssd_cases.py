"""Seeded SSD blobs (priors, predictions, ground truth) and one-layer Caffe nets for them.

Shared by the PyTorch SSD layer tests: the same arrays go into pycaffe and into
``model_libs.pytorch.ssd_layers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from model_libs.proto import caffe_pb2

VARIANCES = (0.1, 0.1, 0.2, 0.2)


def grid_priors(grids: tuple[int, ...] = (10, 5, 3, 1), clip: bool = False) -> np.ndarray:
    """PriorBox-like boxes (P, 4): per cell a small and a large square and 2:1, 1:2 boxes.

    Unclipped boxes of the outer cells cross the image border, as DSOD's priors do.
    """
    out = []
    for k, g in enumerate(grids):
        s = 0.15 + 0.2 * k
        s2 = float(np.sqrt(s * (s + 0.2)))
        for i in range(g):
            for j in range(g):
                cx, cy = (j + 0.5) / g, (i + 0.5) / g
                for w, h in (
                    (s, s),
                    (s2, s2),
                    (s * 1.41421356, s / 1.41421356),
                    (s / 1.41421356, s * 1.41421356),
                ):
                    out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    p = np.array(out, dtype=np.float32)
    return np.clip(p, 0, 1) if clip else p


def prior_blob(priors: np.ndarray) -> np.ndarray:
    """PriorBox's top (1, 2, P*4): boxes, then the variances."""
    var = np.tile(np.array(VARIANCES, dtype=np.float32), (len(priors), 1))
    return np.stack([priors.reshape(-1), var.reshape(-1)])[None].astype(np.float32)


@dataclass
class Case:
    """Blobs of one MultiBoxLoss / DetectionOutput test."""

    loc: np.ndarray  # (N, P*4)
    conf: np.ndarray  # (N, P*C) logits
    prior: np.ndarray  # (1, 2, P*4)
    label: np.ndarray  # (1, 1, G, 8)
    num_classes: int
    notes: dict = field(default_factory=dict)


def make_case(
    seed: int, num: int = 4, num_classes: int = 5, no_gt: tuple[int, ...] = (2,), loc_classes: int = 1
) -> Case:
    """Random but seeded blobs: ``num`` images, 0-5 boxes each (some difficult), the images in
    ``no_gt`` without ground truth, one box exactly on a prior, one box overlapped by no
    prior at all (a sliver in a corner)."""
    rng = np.random.default_rng(seed)
    pri = grid_priors()
    P = len(pri)
    rows = []
    for i in range(num):
        if i in no_gt:
            continue
        for k in range(int(rng.integers(1, 6))):
            cx, cy = rng.uniform(0.1, 0.9, 2)
            w, h = rng.uniform(0.05, 0.6, 2)
            box = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, 1)
            rows.append([i, int(rng.integers(1, num_classes)), k, *box, float(rng.random() < 0.25)])
    first = next(r for r in rows if r[0] == 0)
    rows.insert(0, [0, 1, 9, *pri[37].tolist(), 0.0])  # exactly a prior
    del first
    rows.append([num - 1, num_classes - 1, 7, 0.0, 0.0, 0.002, 0.002, 0.0])  # tiny: no prior overlaps much
    label = np.array(rows, dtype=np.float32)[None, None]
    loc = (rng.normal(0, 0.6, (num, P * 4 * loc_classes))).astype(np.float32)
    conf = rng.normal(0, 1.5, (num, P * num_classes)).astype(np.float32)
    return Case(loc, conf, prior_blob(pri), label, num_classes)


def softmax(conf: np.ndarray, num_classes: int) -> np.ndarray:
    """Class probabilities (N, P*C) from logits, per prior (float32)."""
    x = conf.reshape(conf.shape[0], -1, num_classes).astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32).reshape(conf.shape)


def layer_param(text: str) -> caffe_pb2.LayerParameter:
    """The LayerParameter of prototxt text ``layer { ... }``."""
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    assert len(net.layer) == 1
    return net.layer[0]


def shapes(*arrays: np.ndarray) -> list[list[int]]:
    """Bottom shapes for a layer builder."""
    return [list(a.shape) for a in arrays]


def input_layer(name: str, shape: tuple[int, ...]) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def scaled(name: str) -> str:
    """A Scale layer (one learned factor, 1) so that Caffe back-propagates into ``name``."""
    return (
        f'layer {{ name: "{name}_s" type: "Scale" bottom: "{name}" top: "{name}_s" '
        'scale_param { axis: 0 num_axes: 0 filler { type: "constant" value: 1 } } }\n'
    )


def multibox_net(case: Case, layer_text: str, path: Path) -> Path:
    """A Caffe net: inputs, unit Scale layers on loc/conf, the MultiBoxLoss ``layer_text``
    (bottoms loc_s, conf_s, prior, label; top loss)."""
    text = (
        input_layer("loc", case.loc.shape)
        + input_layer("conf", case.conf.shape)
        + input_layer("prior", case.prior.shape)
        + input_layer("label", case.label.shape)
        + scaled("loc")
        + scaled("conf")
        + layer_text
    )
    path.write_text(text)
    return path
