"""Shape inference, parameter and FLOP counting for Caffe nets, without Caffe.

``summarize(net)`` walks a NetParameter (or a prototxt path) layer by layer with Caffe's
own output-size rules (ceil-mode pooling, SSD PriorBox counts...) and returns a
:class:`NetSummary`; ``python -m model_libs summary NET.prototxt`` prints it as a table.

Stored values are what a caffemodel holds: learnable blobs plus BatchNorm statistics
(mean, variance and the moving-average factor, ``2C + 1`` per BatchNorm layer).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from .cli import PROG, make_parser, run
from .errors import ModelLibsError
from .proto import caffe_pb2

Shape = list[int]


@dataclass
class LayerSummary:
    name: str
    type: str
    tops: list[str]
    shapes: list[Shape]
    params: int = 0  # learnable values
    statistics: int = 0  # non-learned stored values (BatchNorm mean/var/factor)
    blob_shapes: list[Shape] = field(default_factory=list)
    flops: int = 0


@dataclass
class NetSummary:
    name: str
    layers: list[LayerSummary]
    blob_shapes: dict[str, Shape]

    @property
    def learnable(self) -> int:
        return sum(x.params for x in self.layers)

    @property
    def statistics(self) -> int:
        return sum(x.statistics for x in self.layers)

    @property
    def stored_values(self) -> int:
        """Every float a caffemodel of this net stores."""
        return self.learnable + self.statistics

    @property
    def flops(self) -> int:
        return sum(x.flops for x in self.layers)

    @property
    def priors(self) -> int:
        """Number of prior boxes (the concatenated PriorBox outputs / 4)."""
        return sum(x.shapes[0][2] // 4 for x in self.layers if x.type == "PriorBox")

    def priors_by_layer(self) -> dict[str, int]:
        return {x.name: x.shapes[0][2] // 4 for x in self.layers if x.type == "PriorBox"}

    def table(self) -> str:
        """A human-readable table with totals."""
        rows = [("layer", "type", "output", "params", "FLOPs")]
        for x in self.layers:
            shape = " ".join("x".join(map(str, s)) for s in x.shapes) or "-"
            rows.append((x.name, x.type, shape, f"{x.params + x.statistics:,}", f"{x.flops:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [
            "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines += [
            "-" * len(lines[0]),
            f"layers: {len(self.layers)}",
            f"learnable parameters: {self.learnable:,}",
            f"BatchNorm statistics: {self.statistics:,}",
            f"stored values: {self.stored_values:,} ({self.stored_values * 4 / 1e6:.1f} MB as float32)",
            f"FLOPs (multiply-add = 2): {self.flops:,} ({self.flops / 1e9:.2f} G)",
        ]
        if self.priors:
            lines.append(f"prior boxes: {self.priors:,}")
        return "\n".join(lines)


def load_net(path: str | Path) -> caffe_pb2.NetParameter:
    """Parse a prototxt file into a NetParameter, with one clear error on bad input."""
    from .inputs import read_text

    p = Path(path)
    text = read_text(p, "net prototxt")  # a caffemodel given here is named as binary
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        raise ModelLibsError(f"{p}: not a valid net prototxt: {exc}") from None
    if not (len(net.layer) or len(net.layers) or len(net.input)):
        raise ModelLibsError(f"{p}: net prototxt defines no layers")
    return net


def _pair(repeated, h_value, w_value, has_h, default) -> tuple[int, int]:
    if has_h:
        return h_value, w_value
    if len(repeated) == 0:
        return default, default
    if len(repeated) == 1:
        return repeated[0], repeated[0]
    return repeated[0], repeated[1]


def _conv_geometry(cp) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    k = _pair(cp.kernel_size, cp.kernel_h, cp.kernel_w, cp.HasField("kernel_h"), 1)
    p = _pair(cp.pad, cp.pad_h, cp.pad_w, cp.HasField("pad_h"), 0)
    s = _pair(cp.stride, cp.stride_h, cp.stride_w, cp.HasField("stride_h"), 1)
    d = (cp.dilation[0], cp.dilation[-1]) if len(cp.dilation) else (1, 1)
    return k, p, s, d


def _rule_met(rule, phase: int, level: int, stages: frozenset[str]) -> bool:
    """Caffe's ``Net::StateMeetsRule`` for one NetStateRule."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def included(layer, phase: int, level: int = 0, stages: frozenset[str] = frozenset()) -> bool:
    """Whether ``layer`` is part of the net in the given state (Caffe's ``FilterNet``): with
    include rules, when any of them is met; with exclude rules, when none is; both at once
    is an error, as in Caffe."""
    if layer.include and layer.exclude:
        raise ModelLibsError(
            f"layer {layer.name!r} ({layer.type}): specify either include or exclude rules, not both"
        )
    if layer.include:
        return any(_rule_met(r, phase, level, stages) for r in layer.include)
    return not any(_rule_met(r, phase, level, stages) for r in layer.exclude)


def _prior_count(pp) -> int:
    ars = [1.0]
    for ar in pp.aspect_ratio:
        if any(abs(ar - a) < 1e-6 for a in ars):
            continue
        ars.append(ar)
        if pp.flip:
            ars.append(1.0 / ar)
    return len(ars) * len(pp.min_size) + len(pp.max_size)


def _numel(shape: Shape) -> int:
    return int(math.prod(shape)) if shape else 1


def _at_least_one(ctx: str, **values: int) -> None:
    """Caffe aborts (``Check failed``) on a zero size; say which field, before any work."""
    for name, v in values.items():
        if v < 1:
            raise ModelLibsError(f"{ctx}: {name} is {v}; it must be at least 1")


def infer_layer(layer, bottoms: list[Shape], ctx: str) -> tuple[list[Shape], list[Shape], int, int]:
    """Output shapes, parameter blob shapes, statistics count and FLOPs for one layer whose
    bottoms have shapes ``bottoms``; ``ctx`` names the layer in errors."""
    t = layer.type
    b0 = bottoms[0] if bottoms else None

    def need(n):
        if len(bottoms) < n:
            raise ModelLibsError(f"{ctx}: {t} needs {n} bottom(s), got {len(bottoms)}")

    if t in ("Input",):
        shapes = [list(s.dim) for s in layer.input_param.shape]
        return shapes * (len(layer.top) if len(shapes) == 1 else 1), [], 0, 0
    if t in ("AnnotatedData", "Data"):
        tp = layer.transform_param
        h, w = tp.resize_param.height, tp.resize_param.width
        if tp.crop_size:
            h = w = tp.crop_size
        if not h or not w:
            raise ModelLibsError(f"{ctx}: data layer without a resize/crop size; shapes unknown")
        batch = layer.data_param.batch_size
        out = [[batch, 3, h, w]]
        if len(layer.top) > 1:
            out.append([1, 1, 1, 8] if t == "AnnotatedData" else [batch])
        return out, [], 0, 0
    need(1)
    if t in ("Convolution", "Deconvolution"):
        cp = layer.convolution_param
        (kh, kw), (ph, pw), (sh, sw), (dh, dw) = _conv_geometry(cp)
        n, c, h, w = b0
        g = cp.group
        _at_least_one(ctx, num_output=cp.num_output, group=g, kernel=min(kh, kw), stride=min(sh, sw))
        _at_least_one(ctx, dilation=min(dh, dw))
        if c % g or cp.num_output % g:
            raise ModelLibsError(
                f"{ctx}: group {g} does not divide {c} input and {cp.num_output} output channels"
            )
        if t == "Convolution":
            oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
            ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
            blobs = [[cp.num_output, c // g, kh, kw]]
        else:
            oh = sh * (h - 1) + dh * (kh - 1) + 1 - 2 * ph
            ow = sw * (w - 1) + dw * (kw - 1) + 1 - 2 * pw
            blobs = [[c, cp.num_output // g, kh, kw]]
        if oh <= 0 or ow <= 0:
            raise ModelLibsError(
                f"{ctx}: input {h}x{w} is too small for this {t} "
                f"(kernel {kh}x{kw}, stride {sh}); the input size is impossible"
            )
        if cp.bias_term:
            blobs.append([cp.num_output])
        macs = (c // g) * kh * kw * n * cp.num_output * oh * ow
        if t == "Deconvolution":
            macs = (cp.num_output // g) * kh * kw * n * c * h * w
        return [[n, cp.num_output, oh, ow]], blobs, 0, 2 * macs
    if t == "Pooling":
        pp = layer.pooling_param
        n, c, h, w = b0
        if pp.global_pooling:
            return [[n, c, 1, 1]], [], 0, n * c * h * w
        kh, kw = (pp.kernel_h, pp.kernel_w) if pp.HasField("kernel_h") else (pp.kernel_size,) * 2
        ph, pw = (pp.pad_h, pp.pad_w) if pp.HasField("pad_h") else (pp.pad,) * 2
        sh, sw = (pp.stride_h, pp.stride_w) if pp.HasField("stride_h") else (pp.stride,) * 2
        _at_least_one(ctx, kernel=min(kh, kw), stride=min(sh, sw))
        oh = int(math.ceil((h + 2 * ph - kh) / sh)) + 1
        ow = int(math.ceil((w + 2 * pw - kw) / sw)) + 1
        if ph and (oh - 1) * sh >= h + ph:
            oh -= 1
        if pw and (ow - 1) * sw >= w + pw:
            ow -= 1
        if oh <= 0 or ow <= 0:
            raise ModelLibsError(
                f"{ctx}: input {h}x{w} is too small for this pooling "
                f"(kernel {kh}x{kw}); the input size is impossible"
            )
        return [[n, c, oh, ow]], [], 0, n * c * oh * ow * kh * kw
    if t == "Concat":
        axis = layer.concat_param.axis % len(b0)
        for s in bottoms[1:]:
            if len(s) != len(b0) or any(a != b for i, (a, b) in enumerate(zip(s, b0)) if i != axis):
                raise ModelLibsError(f"{ctx}: Concat bottoms disagree: {bottoms}")
        out = list(b0)
        out[axis] = sum(s[axis] for s in bottoms)
        return [out], [], 0, 0
    if t == "BatchNorm":
        c = b0[1] if len(b0) > 1 else 1
        return [list(b0)], [[c], [c], [1]], 2 * c + 1, 2 * _numel(b0)
    if t == "Scale":
        sp = layer.scale_param
        axis = sp.axis % len(b0)
        blobs = []
        if len(bottoms) == 1:
            n_axes = len(b0) - axis if sp.num_axes == -1 else sp.num_axes
            blobs.append(b0[axis : axis + n_axes])
            if sp.bias_term:
                blobs.append(b0[axis : axis + n_axes])
        elif sp.bias_term:
            blobs.append(list(bottoms[1]))
        return [list(b0)], blobs, 0, _numel(b0)
    if t == "Normalize":
        np_ = layer.norm_param
        blobs = [[]] if np_.channel_shared else [[b0[1]]]  # Caffe: a 0-axis blob when shared
        return [list(b0)], blobs, 0, 3 * _numel(b0)
    if t == "InnerProduct":
        ip = layer.inner_product_param
        _at_least_one(ctx, num_output=ip.num_output)
        axis = ip.axis % len(b0)
        k = _numel(b0[axis:])
        weight = [k, ip.num_output] if ip.transpose else [ip.num_output, k]  # Caffe's layout
        blobs = [weight] + ([[ip.num_output]] if ip.bias_term else [])
        return [b0[:axis] + [ip.num_output]], blobs, 0, 2 * _numel(b0[:axis]) * k * ip.num_output
    if t in ("ReLU", "Sigmoid", "TanH", "Dropout", "Softmax", "Power", "AbsVal", "BNLL"):
        return [list(b0)], [], 0, _numel(b0)
    if t == "Eltwise":
        for s in bottoms[1:]:
            if s != b0:
                raise ModelLibsError(f"{ctx}: Eltwise bottoms differ in shape: {bottoms}")
        return [list(b0)], [], 0, _numel(b0) * (len(bottoms) - 1)
    if t == "Permute":
        order = list(layer.permute_param.order)
        order += [i for i in range(len(b0)) if i not in order]
        return [[b0[i] for i in order]], [], 0, 0
    if t == "Flatten":
        fp = layer.flatten_param
        a, e = fp.axis % len(b0), fp.end_axis % len(b0)
        return [b0[:a] + [_numel(b0[a : e + 1])] + b0[e + 1 :]], [], 0, 0
    if t == "Reshape":
        rp = layer.reshape_param
        axis = rp.axis % (len(b0) + 1) if rp.axis < 0 else rp.axis
        end = len(b0) if rp.num_axes == -1 else axis + rp.num_axes
        dims = list(rp.shape.dim)
        mid = [b0[axis + i] if d == 0 else d for i, d in enumerate(dims)]
        out = b0[:axis] + mid + b0[end:]
        if -1 in out:
            known = _numel([d for d in out if d != -1])
            out[out.index(-1)] = _numel(b0) // known
        if _numel(out) != _numel(b0):
            raise ModelLibsError(f"{ctx}: Reshape to {out} does not match input {b0}")
        return [out], [], 0, 0
    if t == "PriorBox":
        need(2)
        n_priors = _prior_count(layer.prior_box_param)
        return [[1, 2, b0[2] * b0[3] * n_priors * 4]], [], 0, 0
    if t == "DetectionOutput":
        keep = layer.detection_output_param.keep_top_k
        return [[1, 1, keep if keep > 0 else 1, 7]], [], 0, 0
    if t == "DetectionEvaluate":
        return [[1, 1, 1, 5]], [], 0, 0
    if t in ("MultiBoxLoss", "SoftmaxWithLoss", "EuclideanLoss", "Accuracy"):
        return [[]], [], 0, 0
    if t == "Split":
        return [list(b0) for _ in layer.top], [], 0, 0
    if t == "Silence":
        return [], [], 0, 0
    raise ModelLibsError(f"{ctx}: layer type {t!r} is not supported by the shape inference")


def summarize(net: caffe_pb2.NetParameter | str | Path, phase: str = "auto") -> NetSummary:
    """Infer every blob's shape and count parameters and FLOPs of ``net``.

    ``phase`` is ``TRAIN``, ``TEST`` or ``auto`` (TRAIN when the net has TRAIN-only
    layers and no TEST-only ones, else TEST); layers excluded by that phase are skipped.
    """
    if not isinstance(net, caffe_pb2.NetParameter):
        net = load_net(net)
    if phase == "auto":
        phases = {r.phase for layer in net.layer for r in layer.include if r.HasField("phase")}
        phase_id = caffe_pb2.TRAIN if phases == {caffe_pb2.TRAIN} else caffe_pb2.TEST
    else:
        phase_id = caffe_pb2.Phase.Value(phase)
    blobs: dict[str, Shape] = {}
    for i, name in enumerate(net.input):
        if i < len(net.input_shape):
            blobs[name] = list(net.input_shape[i].dim)
        elif len(net.input_dim) >= 4 * (i + 1):
            blobs[name] = list(net.input_dim[4 * i : 4 * i + 4])
        else:
            raise ModelLibsError(f"net input {name!r} has no shape")
    layers = []
    for layer in net.layer:
        if not included(layer, phase_id):
            continue
        ctx = f"layer {layer.name!r} ({layer.type})"
        try:
            bottoms = [blobs[b] for b in layer.bottom]
        except KeyError as exc:
            raise ModelLibsError(f"{ctx}: bottom {exc.args[0]!r} is produced by no earlier layer") from None
        shapes, blob_shapes, stats, flops = infer_layer(layer, bottoms, ctx)
        for top, shape in zip(layer.top, shapes):
            blobs[top] = shape
        n_values = sum(_numel(s) for s in blob_shapes)
        layers.append(
            LayerSummary(
                layer.name,
                layer.type,
                list(layer.top),
                shapes,
                params=n_values - stats,
                statistics=stats,
                blob_shapes=blob_shapes,
                flops=flops,
            )
        )
    return NetSummary(net.name, layers, blobs)


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser(f"{PROG} summary", "Shape-infer a Caffe net and count parameters/FLOPs.")
    ap.add_argument("prototxt")
    ap.add_argument("--phase", choices=["auto", "TRAIN", "TEST"], default="auto")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``summary NET.prototxt [--phase TRAIN|TEST]``: print the per-layer table and totals."""
    return run(argv, build_parser, lambda args: print(summarize(args.prototxt, args.phase).table()))
