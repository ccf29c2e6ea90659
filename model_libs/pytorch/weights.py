"""A :class:`~model_libs.pytorch.net.CaffeNet`'s blobs <-> a ``.caffemodel``, one to one.

``to_caffemodel(net)`` gives the NetParameter Caffe would snapshot for the net: its phase's
layers, named and typed as in the source prototxt, each with its blobs in Caffe's order and
shapes. ``load_caffemodel(net, weights)`` copies a caffemodel's blobs into the net, matching
layers by name as Caffe's ``CopyTrainedLayersFrom`` does; a caffemodel for another net is one
:class:`~model_libs.errors.ModelLibsError` naming the file and the first mismatches. Both go
through :mod:`model_libs.engines.caffemodel`.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..engines.caffemodel import (
    CheckReport,
    PathLike,
    blob_array,
    check_expected,
    layers_with_blobs,
    load_weights,
    raise_on_mismatch,
    weights_net,
    write_caffemodel,
)
from ..proto import caffe_pb2
from .net import CaffeNet


def blob_arrays(net: CaffeNet) -> dict[str, list[np.ndarray]]:
    """{layer: [float32 arrays]} of every layer with blobs, in net order."""
    out: dict[str, list[np.ndarray]] = {}
    for layer, _, t, _, _ in net.named_blobs():
        out.setdefault(layer, []).append(t.detach().to("cpu", torch.float32).contiguous().numpy().copy())
    return out


def to_caffemodel(net: CaffeNet, legacy: bool = False) -> caffe_pb2.NetParameter:
    """The caffemodel NetParameter of ``net``'s current blobs."""
    return weights_net(net.net_param, blob_arrays(net), legacy=legacy)


def save_caffemodel(net: CaffeNet, path: PathLike) -> None:
    """Write ``net``'s blobs as a ``.caffemodel`` (atomically)."""
    write_caffemodel(path, to_caffemodel(net))


def expected_shapes(net: CaffeNet) -> list[tuple[str, str, list[list[int]]]]:
    """(layer, type, blob shapes) of every layer of ``net`` that stores blobs."""
    return [
        (m.caffe_name, m.caffe_type, [list(m.blob(i).shape) for i in range(m.n_blobs)])
        for m in net.layers.values()
        if m.n_blobs
    ]


def load_caffemodel(
    net: CaffeNet, weights: caffe_pb2.NetParameter | PathLike, strict: bool = True
) -> CheckReport:
    """Copy the blobs of ``weights`` (a caffemodel path or NetParameter) into ``net``.

    Layers are matched by name; extra caffemodel layers are ignored (as Caffe does). A type,
    blob-count or shape mismatch is an error; so is a net layer missing from the caffemodel
    when ``strict`` (otherwise it keeps its current blobs). Nothing is copied on error.
    """
    name = "caffemodel" if isinstance(weights, caffe_pb2.NetParameter) else os.fspath(weights)
    model = load_weights(weights)
    report = check_expected(expected_shapes(net), model)
    if not strict:
        report.missing = []
    raise_on_mismatch(report, name, what=f"the net {net.net_param.name!r} ({net.phase})")
    stored = {layer: blobs for layer, _, blobs in layers_with_blobs(model)}
    with torch.no_grad():
        for module in net.layers.values():
            blobs = stored.get(module.caffe_name)
            if not module.n_blobs or blobs is None:
                continue
            for i, b in enumerate(blobs):
                t = module.blob(i)
                a = blob_array(b, f"{name}: layer {module.caffe_name!r} blob {i}").reshape(t.shape)
                t.copy_(torch.from_numpy(a))
    return report
