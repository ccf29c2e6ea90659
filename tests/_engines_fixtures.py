"""Shared helpers for the engine tests: cached deploy nets and random caffemodels."""

from __future__ import annotations

import functools
import os

import numpy as np

from model_libs.dsod import deploy_net, recipe
from model_libs.engines.caffemodel import caffemodel_bytes
from model_libs.engines.init import init_weights
from model_libs.proto import caffe_pb2

# Blobs compared between engines: the raw head outputs, then the final detections.
RAW_OUTPUTS = ("mbox_loc", "mbox_conf_flatten", "mbox_priorbox")


@functools.cache
def deploy(model: str, batch: int = 1) -> caffe_pb2.NetParameter:
    return deploy_net(recipe(model), batch=batch)


@functools.cache
def random_weights(model: str, seed: int = 1) -> bytes:
    """Serialized random caffemodel (BN stats and scales perturbed) for ``model``."""
    return caffemodel_bytes(init_weights(deploy(model), seed=seed, randomize=True))


def weights_net(model: str, seed: int = 1) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    net.ParseFromString(random_weights(model, seed))
    return net


def test_images(n: int, seed: int = 0) -> np.ndarray:
    """``n`` smooth-ish random images as a preprocessed-like NCHW batch is not wanted here:
    this returns BGR uint8 images of assorted sizes."""
    rng = np.random.default_rng(seed)
    sizes = [(300, 300), (240, 320), (480, 360), (100, 150), (375, 500), (200, 200), (64, 96), (512, 512)]
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        import cv2

        img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
        out.append(img)
    return out


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
