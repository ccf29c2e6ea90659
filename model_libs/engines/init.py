"""Initialise a net's parameter blobs from its fillers, as Caffe would, without Caffe.

``init_weights(deploy, seed)`` returns a caffemodel NetParameter for an untrained model:
blob shapes come from :func:`model_libs.summary.summarize`; values follow each layer's
filler with Caffe's semantics:

- ``constant`` (value), ``uniform`` (min, max), ``gaussian`` (mean, std, ``sparse``),
  ``positive_unitball``;
- ``xavier``: uniform in ±sqrt(3 / n), ``msra``: gaussian with std sqrt(2 / n), where
  n = fan_in = count / shape[0] (Caffe's FAN_IN default), fan_out = count / shape[1] or
  their average (``variance_norm``);
- ``bilinear``: Caffe's BilinearFiller (upsampling kernel, same for every channel pair).

Defaults where a layer names no filler are Caffe's: constant 0 for Convolution /
Deconvolution / InnerProduct weights and biases, constant 1 for Scale and Normalize scales.
BatchNorm blobs are mean 0, variance 1, moving-average factor 1 (an identity normalisation;
Caffe's own zero-initialised statistics would divide by sqrt(eps)).

``randomize=True`` (for tests) perturbs BatchNorm statistics, Scale and Normalize values a
little so that engine comparisons see non-trivial activations.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ModelLibsError
from ..proto import caffe_pb2
from ..summary import summarize
from .caffemodel import weights_net

FILLER_TYPES = ("constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra", "bilinear")


def _fans(shape: list[int]) -> tuple[float, float]:
    count = math.prod(shape)
    fan_in = count / shape[0] if shape else 1
    fan_out = count / shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _norm(filler: caffe_pb2.FillerParameter, shape: list[int]) -> float:
    fan_in, fan_out = _fans(shape)
    vn = filler.variance_norm
    if vn == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2
    if vn == caffe_pb2.FillerParameter.FAN_OUT:
        return fan_out
    return fan_in


def bilinear_kernel(shape: list[int]) -> np.ndarray:
    """Caffe's BilinearFiller: ``f = ceil(kw / 2)``, ``c = (2f - 1 - f % 2) / (2f)``,
    value ``(1 - |x/f - c|) * (1 - |y/f - c|)`` at every (x, y) of every channel pair."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ModelLibsError(f"bilinear filler needs a 4-D blob with square kernels, got {shape}")
    kh, kw = shape[2], shape[3]
    f = math.ceil(kw / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    x = np.arange(kw, dtype=np.float64)
    y = np.arange(kh, dtype=np.float64)
    k = np.outer(1 - np.abs(y / f - c), 1 - np.abs(x / f - c)).astype(np.float32)
    return np.broadcast_to(k, shape).copy()


def fill(filler: caffe_pb2.FillerParameter, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """Values for one blob of ``shape`` drawn as Caffe's ``filler`` would (float32)."""
    t = filler.type
    if t == "constant":
        return np.full(shape, filler.value, dtype=np.float32)
    if t == "uniform":
        return rng.uniform(filler.min, filler.max, size=shape).astype(np.float32)
    if t == "gaussian":
        a = rng.normal(filler.mean, filler.std, size=shape)
        if filler.sparse >= 0:  # Caffe keeps each value with probability sparse / shape[0]
            if not shape:
                raise ModelLibsError("a sparse gaussian filler needs a blob with at least one axis")
            a *= rng.random(size=shape) < filler.sparse / shape[0]
        return a.astype(np.float32)
    if t == "positive_unitball":
        a = rng.uniform(0, 1, size=shape)
        rows = a.reshape(shape[0], -1) if shape else a.reshape(1, -1)
        rows /= rows.sum(axis=1, keepdims=True)
        return a.astype(np.float32)
    if t == "xavier":
        scale = math.sqrt(3.0 / _norm(filler, shape))
        return rng.uniform(-scale, scale, size=shape).astype(np.float32)
    if t == "msra":
        return rng.normal(0.0, math.sqrt(2.0 / _norm(filler, shape)), size=shape).astype(np.float32)
    if t == "bilinear":
        return bilinear_kernel(shape)
    raise ModelLibsError(f"unknown filler type {t!r} (known: {', '.join(FILLER_TYPES)})")


def _constant(value: float) -> caffe_pb2.FillerParameter:
    return caffe_pb2.FillerParameter(type="constant", value=value)


def _fillers(layer: caffe_pb2.LayerParameter, n_blobs: int) -> list[caffe_pb2.FillerParameter | None]:
    """The filler for each blob of ``layer`` (None: BatchNorm statistics)."""
    t = layer.type
    if t in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        return [p.weight_filler, p.bias_filler][:n_blobs]
    if t == "InnerProduct":
        p = layer.inner_product_param
        return [p.weight_filler, p.bias_filler][:n_blobs]
    if t == "Scale":
        p = layer.scale_param
        scale = p.filler if p.HasField("filler") else _constant(1.0)
        if len(layer.bottom) > 1:  # the scale comes from the second bottom; only a bias is stored
            return [p.bias_filler][:n_blobs]
        return [scale, p.bias_filler][:n_blobs]
    if t == "Normalize":
        p = layer.norm_param
        return [p.scale_filler if p.HasField("scale_filler") else _constant(1.0)]
    if t == "BatchNorm":
        return [None] * n_blobs
    raise ModelLibsError(f"layer {layer.name!r}: no filler rule for parameter blobs of a {t} layer")


def init_weights(
    deploy: caffe_pb2.NetParameter, seed: int = 0, randomize: bool = False, legacy: bool = False
) -> caffe_pb2.NetParameter:
    """A caffemodel NetParameter for ``deploy`` with blobs filled from its fillers.

    Deterministic for a given ``seed``. ``randomize`` perturbs BatchNorm statistics (mean
    N(0, 0.1), variance U(0.5, 1.5)), Scale scales (x U(0.8, 1.2)), biases (+N(0, 0.05)),
    Normalize scales (x U(0.8, 1.2)) and constant-filled Convolution/InnerProduct weights
    (+N(0, 1/sqrt(fan_in))) so test outputs are non-trivial. ``legacy`` writes blob
    shapes in the legacy 4-D form.
    """
    return weights_net(deploy, init_arrays(deploy, seed, randomize), legacy=legacy)


def init_arrays(
    deploy: caffe_pb2.NetParameter,
    seed: int = 0,
    randomize: bool = False,
    phase: str = "auto",
    caffe_statistics: bool = False,
) -> dict[str, list[np.ndarray]]:
    """{layer: [blob arrays]} as :func:`init_weights` fills them, for the layers of
    ``deploy`` in ``phase`` (see :func:`model_libs.summary.summarize`).

    ``caffe_statistics`` starts BatchNorm statistics at zero, as Caffe's BatchNorm layer does
    for a net trained from scratch (the first training step then sets the factor to 1).
    """
    if seed < 0:
        raise ModelLibsError(f"seed must be 0 or more (got {seed})")
    rng = np.random.default_rng(seed)
    by_name = {layer.name: layer for layer in deploy.layer}
    out: dict[str, list[np.ndarray]] = {}
    for ls in summarize(deploy, phase).layers:
        if not ls.blob_shapes:
            continue
        layer = by_name[ls.name]
        fillers = _fillers(layer, len(ls.blob_shapes))
        arrays = []
        for i, (filler, shape) in enumerate(zip(fillers, ls.blob_shapes)):
            if filler is None:  # BatchNorm: mean, variance, factor
                if caffe_statistics and not randomize:
                    a = np.zeros(shape, dtype=np.float32)
                elif i == 0:
                    a = (rng.normal(0, 0.1, shape) if randomize else np.zeros(shape)).astype(np.float32)
                elif i == 1:
                    a = (rng.uniform(0.5, 1.5, shape) if randomize else np.ones(shape)).astype(np.float32)
                else:
                    a = np.ones(shape, dtype=np.float32)
            else:
                a = fill(filler, shape, rng)
                if (
                    randomize
                    and i == 0
                    and filler.type == "constant"
                    and layer.type in ("Convolution", "InnerProduct")
                ):
                    # e.g. GRP-DSOD's gate fc layers (constant 0): give the gates some signal
                    a = (a + rng.normal(0, 1 / math.sqrt(math.prod(shape[1:])), shape)).astype(np.float32)
                elif (
                    randomize
                    and layer.type in ("Scale", "Normalize")
                    and i == 0
                    and not (layer.type == "Scale" and len(layer.bottom) > 1)
                ):
                    a = (a * rng.uniform(0.8, 1.2, shape)).astype(np.float32)
                elif randomize and i == 1:
                    a = (a + rng.normal(0, 0.05, shape)).astype(np.float32)
            arrays.append(a)
        out[ls.name] = arrays
    return out
