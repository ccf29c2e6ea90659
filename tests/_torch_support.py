"""Helpers for the PyTorch engine tests: the same net in pycaffe and in CaffeNet, with the
same blobs, run forward and backward on the same inputs and top diffs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from model_libs.proto import caffe_pb2


def require_torch():
    """``torch``; skips without it (tests/conftest.py turns that into a failure under CI for
    tests marked ``torch``)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch


def require_caffe():
    """pycaffe in CPU mode; skips without a built Caffe (a failure under CI for tests marked
    ``caffe``)."""
    from model_libs.caffe_env import find_caffe, import_caffe

    if find_caffe(required=False) is None:
        pytest.skip("Caffe is not built (run `bash scripts/setup.sh` or set CAFFE_ROOT)")
    caffe = import_caffe()
    caffe.set_mode_cpu()
    return caffe


def net_from_text(text: str, inputs: dict[str, tuple[int, ...]], force_backward: bool = True):
    """A NetParameter: one Input layer per input, then the layers of ``text``."""
    net = caffe_pb2.NetParameter()
    net.name = "t"
    net.force_backward = force_backward
    for name, shape in inputs.items():
        layer = net.layer.add(name=f"input_{name}", type="Input", top=[name])
        layer.input_param.shape.add().dim.extend(shape)
    body = caffe_pb2.NetParameter()
    text_format.Parse(text, body)
    net.layer.extend(body.layer)
    return net


def caffe_net(net: caffe_pb2.NetParameter, phase: str, tmp_path: Path, weights: bytes | None = None):
    """A pycaffe Net of ``net`` in ``phase`` (weights from caffemodel bytes when given)."""
    caffe = require_caffe()
    proto = tmp_path / "net.prototxt"
    proto.write_text(str(net))
    ph = caffe.TRAIN if phase == "TRAIN" else caffe.TEST
    if weights is None:
        return caffe.Net(os.fspath(proto), ph)
    model = tmp_path / "w.caffemodel"
    model.write_bytes(weights)
    return caffe.Net(os.fspath(proto), ph, weights=os.fspath(model))


def copy_blobs_to_caffe(tnet, cnet) -> None:
    """Set every Caffe parameter blob to the CaffeNet's value."""
    for layer, i, t, _, _ in tnet.named_blobs():
        cnet.params[layer][i].data[...] = t.detach().numpy().reshape(cnet.params[layer][i].data.shape)


def raw_deploy(model: str) -> caffe_pb2.NetParameter:
    """The deploy net without DetectionOutput (owned by the SSD layers module)."""
    from _engines_fixtures import deploy

    net = caffe_pb2.NetParameter()
    net.CopyFrom(deploy(model))
    keep = [x for x in net.layer if x.type != "DetectionOutput"]
    del net.layer[:]
    net.layer.extend(keep)
    return net


def top_diffs(cnet, seed: int = 0) -> dict[str, np.ndarray]:
    """The random diffs :func:`run_both` feeds into the outputs of ``cnet``."""
    rng = np.random.default_rng(seed + 7)
    return {o: rng.normal(0, 1, cnet.blobs[o].data.shape).astype(np.float32) for o in cnet.outputs}


def _last_writers(net: caffe_pb2.NetParameter) -> dict[str, int]:
    last: dict[str, int] = {}
    for i, layer in enumerate(net.layer):
        for t in layer.top:
            last[t] = i
    return last


def caffe_decisions_of(net: caffe_pb2.NetParameter, cnet) -> dict[str, np.ndarray]:
    """Caffe's discrete choices in its last forward, read from its blobs: for each ReLU,
    which elements it passed; for each MAX Pooling, which element of each window it took
    (the first maximum, Caffe's rule, found on Caffe's own pooling input). Layers whose
    blobs a later layer overwrites are left out."""
    import torch
    import torch.nn.functional as F

    last = _last_writers(net)
    out: dict[str, np.ndarray] = {}
    for i, layer in enumerate(net.layer):
        if layer.type == "ReLU" and last[layer.top[0]] == i:
            out[layer.name] = cnet.blobs[layer.top[0]].data > 0
        elif (
            layer.type == "Pooling"
            and layer.pooling_param.pool == caffe_pb2.PoolingParameter.MAX
            and not layer.pooling_param.global_pooling
            and last.get(layer.bottom[0], -1) < i
        ):
            p = layer.pooling_param
            x = torch.from_numpy(cnet.blobs[layer.bottom[0]].data.copy())
            k, s, pad = p.kernel_size, p.stride, p.pad
            _, idx = F.max_pool2d(x, k, s, pad, ceil_mode=True, return_indices=True)
            out[layer.name] = idx.numpy()
    return out


def record_decisions(tnet) -> dict[str, np.ndarray]:
    """Hook ``tnet`` (built with ``fuse=False``) so that its next forward records its ReLU
    and MAX pooling decisions into the returned dict, in :func:`caffe_decisions_of`'s form."""
    import torch.nn.functional as F

    from model_libs.pytorch.layers import Pooling, ReLU

    out: dict[str, np.ndarray] = {}
    for module in tnet.layers.values():
        if isinstance(module, ReLU):
            module.register_forward_hook(
                lambda mod, inp, o: out.__setitem__(mod.caffe_name, (o[0] > 0).cpu().numpy())
            )
        elif isinstance(module, Pooling) and module.max and not module.global_pooling:

            def hook(mod, inp, o):
                _, idx = F.max_pool2d(
                    inp[0], mod.kernel, mod.stride, mod.pad, ceil_mode=True, return_indices=True
                )
                out[mod.caffe_name] = idx.cpu().numpy()

            module.register_forward_hook(hook)
    return out


def force_caffe_decisions(tnet, decisions: dict[str, np.ndarray]) -> None:
    """Make the ReLUs and MAX Poolings of ``tnet`` (built with ``fuse=False``) take Caffe's
    decisions: a ReLU gives ``x * mask`` (whose gradient is the mask, as ReLU's is), a
    pooling gathers the window elements Caffe took (its gradient goes there).

    Why: in float32 a pre-activation within ~1e-6 of zero, or two window elements within
    ~1e-6 of each other, can fall either way in two engines; each such flip reroutes one
    element's gradient, which moves whole gradient blobs by ~1e-3 relative in a net the size
    of DSOD (PyTorch float32 against PyTorch float64 differs that much too). With the same
    decisions the remaining difference is the arithmetic of every layer's backward."""
    import torch

    from model_libs.pytorch.layers import Pooling

    for name, d in decisions.items():
        module = tnet.layer(name)
        if isinstance(module, Pooling):
            idx = torch.from_numpy(d)

            def hook(mod, inp, out, idx=idx):
                x = inp[0]
                i = idx.to(x.device)
                return (x.flatten(2).gather(2, i.flatten(2)).view(i.shape),)

        else:
            m = torch.from_numpy(d.astype(np.float32))

            def hook(mod, inp, out, m=m):
                return (inp[0] * m.to(inp[0].device).reshape(inp[0].shape),)

        module.register_forward_hook(hook)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| (0 when both are 0)."""
    nb = float(np.linalg.norm(np.asarray(b, dtype=np.float64)))
    d = float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))
    return d / nb if nb else d


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to max |b| (the blob's scale)."""
    b = np.asarray(b, dtype=np.float64)
    scale = float(np.abs(b).max(initial=0.0))
    d = float(np.abs(np.asarray(a, dtype=np.float64).reshape(b.shape) - b).max(initial=0.0))
    return d / scale if scale else d


def run_both(
    net: caffe_pb2.NetParameter,
    inputs: dict[str, np.ndarray],
    phase: str,
    tmp_path: Path,
    seed: int = 0,
    weights: caffe_pb2.NetParameter | None = None,
    prepare=None,
    backward: bool = True,
    caffe_decisions: bool = False,
):
    """Forward and backward of ``net`` in both engines with identical blobs (the fillers',
    or ``weights``; ``prepare(tnet)`` may change them first), inputs and random top diffs.
    Returns (torch tops, caffe tops, torch grads, caffe grads, tnet, cnet) where grads map
    ``input:<name>`` and ``<layer>/<i>`` to arrays.

    ``caffe_decisions``: PyTorch's ReLUs and max poolings take exactly Caffe's decisions
    (see :func:`force_caffe_decisions`), so that gradients are compared along the same path."""
    torch = require_torch()
    from model_libs.pytorch.net import CaffeNet
    from model_libs.pytorch.weights import load_caffemodel

    tnet = CaffeNet(net, phase, seed=seed, fuse=not caffe_decisions)
    if weights is not None:
        load_caffemodel(tnet, weights)
    if prepare is not None:
        with torch.no_grad():
            prepare(tnet)
    cnet = caffe_net(net, phase, tmp_path)
    copy_blobs_to_caffe(tnet, cnet)
    for k, v in inputs.items():
        cnet.blobs[k].data[...] = v
    cnet.forward()
    if caffe_decisions:
        force_caffe_decisions(tnet, caffe_decisions_of(net, cnet))
    tin = {k: torch.from_numpy(v.copy()).requires_grad_(backward) for k, v in inputs.items()}
    with torch.set_grad_enabled(backward):
        tops = tnet(tin)
    outs = list(cnet.outputs)
    diffs = top_diffs(cnet, seed)
    ctops = {o: cnet.blobs[o].data.copy() for o in outs}
    ttops = {o: tops[o].detach().numpy() for o in outs}
    tgrads, cgrads = {}, {}
    if not backward:
        return ttops, ctops, tgrads, cgrads, tnet, cnet
    objective = sum((tops[o] * torch.from_numpy(diffs[o]).reshape(tops[o].shape)).sum() for o in outs)
    if objective.requires_grad:
        objective.backward()
    cnet.backward(**diffs)
    for k in inputs:
        if tin[k].grad is not None:
            tgrads[f"input:{k}"] = tin[k].grad.numpy()
            cgrads[f"input:{k}"] = cnet.blobs[k].diff.copy()
    for layer, i, t, _, _ in tnet.named_blobs():
        if t.requires_grad:
            tgrads[f"{layer}/{i}"] = (t.grad if t.grad is not None else torch.zeros_like(t)).numpy()
            cgrads[f"{layer}/{i}"] = cnet.params[layer][i].diff.copy()
    return ttops, ctops, tgrads, cgrads, tnet, cnet
