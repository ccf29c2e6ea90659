"""Shared helpers for the engine tests: cached deploy nets and random caffemodels."""

from __future__ import annotations

import functools

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


def sample_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` smooth random BGR uint8 images of assorted sizes."""
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


def sorted_rows(rows: np.ndarray) -> np.ndarray:
    """DetectionOutput rows ordered by (image, label, -score, xmin, ymin)."""
    r = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return r[np.lexsort((r[:, 4], r[:, 3], -r[:, 2], r[:, 1], r[:, 0]))]


def detection_differences(
    a: np.ndarray, b: np.ndarray, box_rtol: float = 1e-3, score_atol: float = 1e-4
) -> list[str]:
    """Why two DetectionOutput results differ (empty when they agree): same rows, same
    labels, scores within ``score_atol``, boxes within ``box_rtol`` relative (absolute for
    coordinates below 1)."""
    ra, rb = sorted_rows(a), sorted_rows(b)
    if ra.shape != rb.shape:
        return [f"{len(ra)} vs {len(rb)} detections"]
    problems = []
    if not np.array_equal(ra[:, :2], rb[:, :2]):
        problems.append("image ids or labels differ")
    ds = np.abs(ra[:, 2] - rb[:, 2]).max(initial=0)
    if ds > score_atol:
        problems.append(f"scores differ by {ds:.2e}")
    # Detections whose scores tie within score_atol may come out in either order: pair each
    # row with the closest unused row of the same image, label and (tied) score.
    used = np.zeros(len(rb), dtype=bool)
    worst = 0.0
    for row in ra:
        cand = np.flatnonzero(
            ~used & (rb[:, 0] == row[0]) & (rb[:, 1] == row[1]) & (np.abs(rb[:, 2] - row[2]) <= score_atol)
        )
        if len(cand) == 0:
            continue  # already reported above
        err = (np.abs(rb[cand, 3:] - row[3:]) / np.maximum(1.0, np.abs(rb[cand, 3:]))).max(axis=1)
        k = int(np.argmin(err))
        used[cand[k]] = True
        worst = max(worst, float(err[k]))
    if worst > box_rtol:
        problems.append(f"boxes differ by {worst:.2e} (relative)")
    return problems


def blob_differences(a: dict, b: dict, rtol: float = 1e-3, atol: float = 1e-4) -> list[str]:
    """Blob-by-blob comparison of two engines' outputs."""
    problems = []
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k]).reshape(np.asarray(a[k]).shape)
        err = np.abs(x - y) - (atol + rtol * np.abs(y))
        if err.max(initial=-1) > 0:
            problems.append(f"{k}: max |diff| {np.abs(x - y).max():.3e}")
    return problems
