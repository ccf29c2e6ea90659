"""One ``nn.Module`` per Caffe layer type, with SSD Caffe's numerics.

A layer is built as ``LAYERS[type](layer, bottom_shapes, phase)`` and returns a
:class:`CaffeLayer`; ``forward(*bottoms)`` returns a tuple with one tensor per top. Output
and blob shapes come from :func:`model_libs.summary.infer_layer` (the one shape-inference
code path of the project), so a layer stores its blobs as ``blob0``, ``blob1``, ... with
exactly Caffe's shapes. Blob values start at zero; :class:`~model_libs.pytorch.net.CaffeNet`
fills them with Caffe's fillers (:mod:`model_libs.engines.init`).

Anything this engine cannot reproduce exactly (an unknown type, an unsupported parameter
value) is a :class:`~model_libs.errors.ModelLibsError` naming the layer, raised here, at
construction, before any training starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelLibsError
from ..proto import caffe_pb2
from ..summary import infer_layer

Shape = list[int]
Builder = Callable[[caffe_pb2.LayerParameter, list[Shape], str], "CaffeLayer"]

LAYERS: dict[str, Builder] = {}
PHASES = ("TRAIN", "TEST")


def register(type_name: str) -> Callable[[Builder], Builder]:
    """Class decorator: make ``builder`` the module for Caffe layers of ``type_name``."""

    def deco(builder: Builder) -> Builder:
        LAYERS[type_name] = builder
        return builder

    return deco


def layer_context(layer: caffe_pb2.LayerParameter) -> str:
    return f"layer {layer.name!r} ({layer.type})"


class CaffeLayer(nn.Module):
    """Base of every layer module: the Caffe layer's name, type, phase, shapes and blobs.

    ``bottom_shapes`` are the shapes the net was declared with; ``top_shapes`` and
    ``blob_shapes`` follow from them. Blobs are ``blob<i>`` attributes (parameters, or
    buffers for BatchNorm's statistics); ``lr_mult(i)``/``decay_mult(i)`` are the layer's
    ``param { }`` multipliers with Caffe's defaults (1, 1).
    """

    def __init__(self, layer: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape], phase: str) -> None:
        super().__init__()
        if phase not in PHASES:
            raise ModelLibsError(f"{layer_context(layer)}: phase must be TRAIN or TEST, got {phase!r}")
        self.caffe_name = layer.name
        self.caffe_type = layer.type
        self.phase = phase
        self.context = layer_context(layer)
        self.bottom_shapes = [list(s) for s in bottom_shapes]
        tops, blobs, _, _ = infer_layer(layer, self.bottom_shapes, self.context)
        self.top_shapes: list[Shape] = tops
        self.blob_shapes: list[Shape] = blobs
        self._mults = [(p.lr_mult, p.decay_mult) for p in layer.param]
        self.n_blobs = 0

    def fail(self, problem: str) -> ModelLibsError:
        return ModelLibsError(f"{self.context}: {problem}")

    def add_blobs(self, learnable: bool = True) -> None:
        """Create ``blob<i>`` for every shape in ``blob_shapes`` (zeros, float32)."""
        for i, shape in enumerate(self.blob_shapes):
            t = torch.zeros(shape, dtype=torch.float32)
            if learnable:
                self.register_parameter(f"blob{i}", nn.Parameter(t))
            else:
                self.register_buffer(f"blob{i}", t)
        self.n_blobs = len(self.blob_shapes)

    def blob(self, i: int) -> Tensor:
        return getattr(self, f"blob{i}")

    def blobs(self) -> list[Tensor]:
        return [self.blob(i) for i in range(self.n_blobs)]

    def lr_mult(self, i: int) -> float:
        return self._mults[i][0] if i < len(self._mults) else 1.0

    def decay_mult(self, i: int) -> float:
        return self._mults[i][1] if i < len(self._mults) else 1.0

    def extra_repr(self) -> str:
        return f"{self.caffe_name!r}, {self.caffe_type}, tops={self.top_shapes}"


def _need_bottoms(layer: CaffeLayer, n: int, exact: bool = True) -> None:
    got = len(layer.bottom_shapes)
    if got < n or (exact and got != n):
        raise layer.fail(f"needs {'exactly' if exact else 'at least'} {n} bottom(s), got {got}")


def _need_tops(layer: CaffeLayer, tops: int, n: int) -> None:
    if tops != n:
        raise layer.fail(f"gives {n} top(s) in this engine, the prototxt names {tops}")


def _canonical_axis(layer: CaffeLayer, axis: int, ndim: int, what: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise layer.fail(f"{what} {axis} is out of range for a {ndim}-axis bottom")
    return axis % ndim


# ----------------------------------------------------------------------------- convolution


def _conv_geometry(layer: CaffeLayer, cp: caffe_pb2.ConvolutionParameter) -> tuple:
    if cp.axis != 1:
        raise layer.fail(f"convolution_param.axis {cp.axis} is not supported (only 1)")
    for field in ("kernel_size", "pad", "stride", "dilation"):
        if len(getattr(cp, field)) > 2:
            raise layer.fail(
                f"{field} with {len(getattr(cp, field))} values: only 2-D convolution is supported"
            )
    if len(layer.bottom_shapes[0]) != 4:
        raise layer.fail(f"only 4-D (N, C, H, W) bottoms are supported, got {layer.bottom_shapes[0]}")

    def pair(rep, h, w, has_h, default):
        if has_h:
            return (h, w)
        if len(rep) == 0:
            return (default, default)
        return (rep[0], rep[-1])

    k = pair(cp.kernel_size, cp.kernel_h, cp.kernel_w, cp.HasField("kernel_h"), 1)
    p = pair(cp.pad, cp.pad_h, cp.pad_w, cp.HasField("pad_h"), 0)
    s = pair(cp.stride, cp.stride_h, cp.stride_w, cp.HasField("stride_h"), 1)
    d = pair(cp.dilation, 0, 0, False, 1)
    c = layer.bottom_shapes[0][1]
    if cp.group < 1 or c % cp.group or cp.num_output % cp.group:
        raise layer.fail(f"group {cp.group} does not divide channels {c} and num_output {cp.num_output}")
    return k, p, s, d


class _ConvolutionGeometry(CaffeLayer):
    """One bottom, one top, ``convolution_param``'s padding/stride/dilation/group, its blobs."""

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        _need_tops(self, len(layer.top), 1)
        cp = layer.convolution_param
        _, self.padding, self.stride, self.dilation = _conv_geometry(self, cp)
        self.groups = cp.group
        self.add_blobs()


@register("Convolution")
class Convolution(_ConvolutionGeometry):
    """``F.conv2d`` with Caffe's weight layout (O, C/g, kh, kw) and optional bias."""

    def forward(self, x: Tensor) -> tuple[Tensor]:
        bias = self.blob1 if self.n_blobs > 1 else None
        return (F.conv2d(x, self.blob0, bias, self.stride, self.padding, self.dilation, self.groups),)


@register("Deconvolution")
class Deconvolution(_ConvolutionGeometry):
    """``F.conv_transpose2d``; Caffe's weight layout (C, O/g, kh, kw) is PyTorch's."""

    def forward(self, x: Tensor) -> tuple[Tensor]:
        bias = self.blob1 if self.n_blobs > 1 else None
        return (
            F.conv_transpose2d(x, self.blob0, bias, self.stride, self.padding, 0, self.groups, self.dilation),
        )


@register("InnerProduct")
class InnerProduct(CaffeLayer):
    """Flatten from ``axis``, then a matrix product with the (N, K) weight ((K, N) with
    ``transpose``)."""

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        _need_tops(self, len(layer.top), 1)
        ip = layer.inner_product_param
        self.axis = _canonical_axis(self, ip.axis, len(self.bottom_shapes[0]))
        self.transpose = ip.transpose  # the weight is stored (K, N) then
        self.add_blobs()

    def forward(self, x: Tensor) -> tuple[Tensor]:
        w = self.blob0.t() if self.transpose else self.blob0
        bias = self.blob1 if self.n_blobs > 1 else None
        return (F.linear(x.flatten(self.axis), w, bias),)


# ----------------------------------------------------------------------------- normalisation


@register("BatchNorm")
class BatchNorm(CaffeLayer):
    """Caffe's BatchNorm: blobs are the running mean sum, variance sum and the factor ``s``.

    With ``use_global_stats`` (default: phase TEST) it normalises with ``blob / s`` (0 when
    ``s == 0``). Otherwise it uses the batch mean and biased variance, and updates
    ``s = s * maf + 1``, ``mean = maf * mean + batch_mean``, ``var = maf * var + m/(m-1) *
    batch_var`` (``m`` values per channel). ``eps`` is added to the variance. No affine part:
    :meth:`normalize` takes the following Scale layer's blobs when the net fuses the two.
    The statistics are always computed in float32, also under autocast.
    """

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        _need_tops(self, len(layer.top), 1)
        p = layer.batch_norm_param
        self.eps = float(p.eps)
        self.maf = float(p.moving_average_fraction)
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else phase == "TEST"
        if len(self.bottom_shapes[0]) < 2:
            raise self.fail("1-axis bottoms are not supported")
        self.channels = self.bottom_shapes[0][1]
        self.add_blobs(learnable=False)

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (self.normalize(x),)

    def normalize(self, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """BatchNorm of ``x``, then ``* weight + bias`` per channel when given (a fused
        Scale layer), in one pass."""
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        with torch.autocast(x.device.type, enabled=False):
            if self.use_global_stats:
                s = self.blob2[0]
                factor = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
                return F.batch_norm(
                    x, self.blob0 * factor, self.blob1 * factor, weight, bias, False, 0.0, self.eps
                )
            m = x.numel() // x.shape[1]
            if m > 1:
                # momentum 1 makes PyTorch write the batch mean and the unbiased
                # (m/(m-1)) batch variance into the two scratch tensors.
                mean = x.new_zeros(x.shape[1])
                var = x.new_zeros(x.shape[1])
                y = F.batch_norm(x, mean, var, weight, bias, True, 1.0, self.eps)
            else:  # one value per channel: PyTorch refuses; Caffe's factor is 1
                dims = [d for d in range(x.dim()) if d != 1]
                mean = x.detach().mean(dims)
                var = x.detach().var(dims, unbiased=False)
                mu = x.mean(dims, keepdim=True)
                y = (x - mu) / torch.sqrt(((x - mu) ** 2).mean(dims, keepdim=True) + self.eps)
                if weight is not None:
                    y = y * _channel_view(weight, x.dim()) + _channel_view(bias, x.dim())
            with torch.no_grad():
                self.blob2.mul_(self.maf).add_(1.0)
                self.blob0.mul_(self.maf).add_(mean.to(self.blob0.dtype))
                self.blob1.mul_(self.maf).add_(var.to(self.blob1.dtype))
            return y


def _channel_view(t: Tensor, ndim: int) -> Tensor:
    return t.view([1, -1] + [1] * (ndim - 2))


@register("Scale")
class Scale(CaffeLayer):
    """``top = bottom * scale (+ bias)``, ``scale`` broadcast from ``axis`` over
    ``num_axes`` axes: the stored ``blob0`` with one bottom, or ``bottom[1]`` with two (as
    GRP-DSOD's gates use it, ``axis: 0``); the optional bias is the last blob."""

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_tops(self, len(layer.top), 1)
        if len(self.bottom_shapes) not in (1, 2):
            raise self.fail(f"needs 1 or 2 bottoms, got {len(self.bottom_shapes)}")
        sp = layer.scale_param
        b0 = self.bottom_shapes[0]
        self.axis = _canonical_axis(self, sp.axis, max(len(b0), 1))
        if len(self.bottom_shapes) == 2:
            inner = self.bottom_shapes[1]
        else:
            inner = self.blob_shapes[0]
        if b0[self.axis : self.axis + len(inner)] != list(inner):
            raise self.fail(f"scale shape {inner} does not match bottom {b0} from axis {self.axis}")
        self.trailing = len(b0) - self.axis - len(inner)  # axes the scale is broadcast over
        self.two_bottoms = len(self.bottom_shapes) == 2
        self.has_bias = sp.bias_term
        # When the net fuses a BatchNorm before this layer, it asks for per-channel blobs.
        self.per_channel = not self.two_bottoms and self.axis == 1 and len(inner) == 1 and len(b0) >= 2
        self.add_blobs()

    def _view(self, t: Tensor) -> Tensor:
        # Shaped from the tensor given (the batch may differ from the declared one).
        return t.reshape((1,) * self.axis + tuple(t.shape) + (1,) * self.trailing)

    def forward(self, x: Tensor, scale: Tensor | None = None) -> tuple[Tensor]:
        s = self._view(scale if self.two_bottoms else self.blob0)
        if not self.has_bias:
            return (x * s,)
        return (torch.addcmul(self._view(self.blob(self.n_blobs - 1)), x, s),)


class _NormalizeFn(torch.autograd.Function):
    """SSD's Normalize with Caffe's own backward (``normalize_layer.cpp``).

    Caffe's bottom gradient is ``(g - x * sum(x g) / n^2) / n * scale`` with the sum over the
    normalised axes: the exact derivative when the scale is shared, but with per-channel
    scales Caffe leaves the scale out of the sum. Training must follow Caffe, so this is
    what runs. The scale's gradient is ``sum(x / n * g)`` (Caffe computes it as
    ``sum(top * g) / scale``, the same value for a non-zero scale).
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, dims: tuple[int, ...], eps: float, shared: bool):
        norm = torch.sqrt(x.square().sum(dims, keepdim=True) + eps)
        s = scale if shared else _channel_view(scale, x.dim())
        normed = x / norm
        ctx.save_for_backward(x, norm, scale)
        ctx.dims, ctx.shared = dims, shared
        return normed * s

    @staticmethod
    def backward(ctx, g: Tensor):
        x, norm, scale = ctx.saved_tensors
        dims, shared = ctx.dims, ctx.shared
        s = scale if shared else _channel_view(scale, x.dim())
        dx = dscale = None
        if ctx.needs_input_grad[0]:
            dot = (x * g).sum(dims, keepdim=True)
            dx = (g - x * (dot / norm.square())) / norm * s
        if ctx.needs_input_grad[1]:
            xg = x / norm * g
            dscale = xg.sum() if shared else xg.transpose(0, 1).reshape(x.shape[1], -1).sum(1)
            dscale = dscale.reshape(scale.shape)
        return dx, dscale, None, None, None


@register("Normalize")
class Normalize(CaffeLayer):
    """SSD's L2 normalisation: divide by ``sqrt(sum x^2 + eps)`` taken over (C, H, W) per
    image (``across_spatial``) or over C per position, then multiply by the learned scale
    (one 0-axis value when ``channel_shared``, else one per channel); Caffe's backward."""

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        _need_tops(self, len(layer.top), 1)
        p = layer.norm_param
        if len(self.bottom_shapes[0]) < 2:
            raise self.fail("needs a bottom with at least 2 axes")
        n = len(self.bottom_shapes[0])
        self.dims = tuple(range(1, n)) if p.across_spatial else (1,)
        self.channel_shared = p.channel_shared
        self.eps = float(p.eps)
        self.add_blobs()

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (_NormalizeFn.apply(x, self.blob0, self.dims, self.eps, self.channel_shared),)


# ----------------------------------------------------------------------------- pooling


@register("Pooling")
class Pooling(CaffeLayer):
    """MAX / AVE pooling with Caffe's ceil-mode output size (one less when padding is on and
    the last window would start at or past ``H + pad``) and Caffe's AVE divisor (the window
    clipped to the padded input). Both are what PyTorch's ``ceil_mode=True`` with
    ``count_include_pad=True`` computes; the output size is checked against Caffe's at
    construction."""

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        if len(layer.top) != 1:
            raise self.fail("a second top (the max mask) is not supported")
        pp = layer.pooling_param
        if pp.pool not in (caffe_pb2.PoolingParameter.MAX, caffe_pb2.PoolingParameter.AVE):
            raise self.fail(f"pool {caffe_pb2.PoolingParameter.PoolMethod.Name(pp.pool)} is not supported")
        self.max = pp.pool == caffe_pb2.PoolingParameter.MAX
        b0 = self.bottom_shapes[0]
        if len(b0) != 4:
            raise self.fail(f"only 4-D bottoms are supported, got {b0}")
        self.global_pooling = pp.global_pooling
        if self.global_pooling:
            if pp.HasField("kernel_size") or pp.HasField("kernel_h") or pp.pad or pp.pad_h or pp.pad_w:
                raise self.fail("global_pooling takes no kernel size or padding")
            return
        if pp.HasField("kernel_h") != pp.HasField("kernel_w") or not (
            pp.HasField("kernel_size") or pp.HasField("kernel_h")
        ):
            raise self.fail("needs kernel_size or both kernel_h and kernel_w")
        self.kernel = (pp.kernel_h, pp.kernel_w) if pp.HasField("kernel_h") else (pp.kernel_size,) * 2
        self.pad = (pp.pad_h, pp.pad_w) if pp.HasField("pad_h") else (pp.pad,) * 2
        self.stride = (pp.stride_h, pp.stride_w) if pp.HasField("stride_h") else (pp.stride,) * 2
        if any(p * 2 > k for p, k in zip(self.pad, self.kernel)):
            raise self.fail(f"pad {self.pad} larger than half the kernel {self.kernel} is not supported")
        for axis, (size, k, p, s) in enumerate(zip(b0[2:], self.kernel, self.pad, self.stride)):
            torch_out = (size + 2 * p - k + s - 1) // s + 1
            if (torch_out - 1) * s >= size + p:
                torch_out -= 1
            if torch_out != self.top_shapes[0][2 + axis]:
                raise self.fail(
                    f"Caffe would make a window that starts past the input (size {size}, kernel {k}, "
                    f"stride {s}, pad {p}); not supported"
                )

    def forward(self, x: Tensor) -> tuple[Tensor]:
        if self.global_pooling:
            return (x.amax((2, 3), keepdim=True) if self.max else x.mean((2, 3), keepdim=True),)
        if self.max:
            return (F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True),)
        return (F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True, count_include_pad=True),)


# ----------------------------------------------------------------------------- element-wise


@register("ReLU")
class ReLU(CaffeLayer):
    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        _need_tops(self, len(layer.top), 1)
        self.negative_slope = float(layer.relu_param.negative_slope)

    def forward(self, x: Tensor) -> tuple[Tensor]:
        if self.negative_slope:
            return (F.leaky_relu(x, self.negative_slope),)
        return (F.relu(x),)


@register("Sigmoid")
class Sigmoid(CaffeLayer):
    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        _need_tops(self, len(layer.top), 1)

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (torch.sigmoid(x),)


@register("TanH")
class TanH(Sigmoid):
    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (torch.tanh(x),)


@register("Dropout")
class Dropout(CaffeLayer):
    """Identity at TEST; at TRAIN zeroes with probability ``dropout_ratio`` and scales the
    rest by ``1 / (1 - ratio)`` as Caffe does."""

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        _need_tops(self, len(layer.top), 1)
        self.ratio = float(layer.dropout_param.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise self.fail(f"dropout_ratio {self.ratio} is not in [0, 1)")

    def forward(self, x: Tensor) -> tuple[Tensor]:
        if self.phase == "TEST":
            return (x,)
        return (F.dropout(x, self.ratio, training=True),)


@register("Eltwise")
class Eltwise(CaffeLayer):
    """SUM (with ``coeff``), PROD or MAX of the bottoms."""

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 2, exact=False)
        _need_tops(self, len(layer.top), 1)
        ep = layer.eltwise_param
        self.op = caffe_pb2.EltwiseParameter.EltwiseOp.Name(ep.operation)
        self.coeff = [float(c) for c in ep.coeff] or [1.0] * len(self.bottom_shapes)
        if len(self.coeff) != len(self.bottom_shapes):
            raise self.fail(f"{len(ep.coeff)} coeff values for {len(self.bottom_shapes)} bottoms")
        if ep.coeff and self.op != "SUM":
            raise self.fail("coeff is only allowed with operation SUM")

    def forward(self, *xs: Tensor) -> tuple[Tensor]:
        if self.op == "SUM":
            out = xs[0] if self.coeff[0] == 1.0 else xs[0] * self.coeff[0]
            for c, x in zip(self.coeff[1:], xs[1:]):
                out = out + x if c == 1.0 else torch.add(out, x, alpha=c)
            return (out,)
        out = xs[0]
        for x in xs[1:]:
            out = out * x if self.op == "PROD" else torch.maximum(out, x)
        return (out,)


# ----------------------------------------------------------------------------- shapes


@register("Concat")
class Concat(CaffeLayer):
    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1, exact=False)
        _need_tops(self, len(layer.top), 1)
        cp = layer.concat_param
        if cp.HasField("concat_dim") and not cp.HasField("axis"):
            axis = cp.concat_dim
        else:
            axis = cp.axis
        self.axis = _canonical_axis(self, axis, len(self.bottom_shapes[0]))

    def forward(self, *xs: Tensor) -> tuple[Tensor]:
        if len(xs) == 1:
            return (xs[0],)
        return (torch.cat(xs, self.axis),)


@register("Permute")
class Permute(CaffeLayer):
    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        _need_tops(self, len(layer.top), 1)
        n = len(self.bottom_shapes[0])
        order = list(layer.permute_param.order)
        if len(set(order)) != len(order) or any(not 0 <= o < n for o in order):
            raise self.fail(f"order {order} is not a permutation of {n} axes")
        self.order = order + [i for i in range(n) if i not in order]

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (x.permute(self.order),)


@register("Flatten")
class Flatten(CaffeLayer):
    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        _need_tops(self, len(layer.top), 1)
        n = len(self.bottom_shapes[0])
        fp = layer.flatten_param
        self.axis = _canonical_axis(self, fp.axis, n)
        self.end_axis = _canonical_axis(self, fp.end_axis, n, "end_axis")

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (x.flatten(self.axis, self.end_axis),)


@register("Reshape")
class Reshape(CaffeLayer):
    """Caffe's Reshape (``0`` copies a bottom dim, one ``-1`` is inferred, ``axis`` and
    ``num_axes`` select the replaced range); the output shape is recomputed for the batch
    actually given, with the shape inference's rule."""

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        _need_tops(self, len(layer.top), 1)
        self.layer = caffe_pb2.LayerParameter()
        self.layer.CopyFrom(layer)
        self._shapes: dict[tuple[int, ...], list[int]] = {tuple(self.bottom_shapes[0]): self.top_shapes[0]}

    def forward(self, x: Tensor) -> tuple[Tensor]:
        key = tuple(x.shape)
        out = self._shapes.get(key)
        if out is None:
            out = self._shapes[key] = infer_layer(self.layer, [list(key)], self.context)[0][0]
        return (x.reshape(out),)


@register("Softmax")
class Softmax(CaffeLayer):
    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        _need_tops(self, len(layer.top), 1)
        self.axis = _canonical_axis(self, layer.softmax_param.axis, len(self.bottom_shapes[0]))

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (torch.softmax(x, self.axis),)


@register("Split")
class Split(CaffeLayer):
    """Every top is the bottom (gradients add up through autograd, as Caffe's Split sums)."""

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 1)
        self.n_tops = len(layer.top)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return (x,) * self.n_tops


@register("Silence")
class Silence(CaffeLayer):
    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_tops(self, len(layer.top), 0)

    def forward(self, *xs: Tensor) -> tuple[()]:
        return ()


@register("EuclideanLoss")
class EuclideanLoss(CaffeLayer):
    """``sum((a - b)^2) / (2 N)``, a 0-axis top as Caffe's."""

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 2)
        _need_tops(self, len(layer.top), 1)
        a, b = self.bottom_shapes
        if math.prod(a[1:]) != math.prod(b[1:]) or a[0] != b[0]:
            raise self.fail(f"bottoms {a} and {b} differ in size")

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor]:
        d = a.reshape(a.shape[0], -1) - b.reshape(b.shape[0], -1)
        return (d.square().sum() / (2 * a.shape[0]),)


# ----------------------------------------------------------------------------- priors


def prior_boxes(
    p: caffe_pb2.PriorBoxParameter, layer_hw: tuple[int, int], image_hw: tuple[int, int]
) -> np.ndarray:
    """SSD's PriorBox output (1, 2, H*W*priors*4) float32 for a ``layer_hw`` feature map of
    an ``image_hw`` input: per cell (row-major) and per min size, the min-size box, the
    sqrt(min*max) box, then one box per aspect ratio other than 1 (each followed by its
    flip), as [xmin, ymin, xmax, ymax] normalised; sizes truncated to whole pixels as
    ``prior_box_layer.cpp`` reads them into ``int``; variances in the second channel."""
    ars = [1.0]
    for ar in p.aspect_ratio:
        if any(abs(ar - a) < 1e-6 for a in ars):
            continue
        ars.append(float(ar))
        if p.flip:
            ars.append(1.0 / float(np.float32(ar)))
    lh, lw = layer_hw
    if p.HasField("img_h") or p.HasField("img_w"):
        ih, iw = p.img_h, p.img_w
    elif p.HasField("img_size"):
        ih = iw = p.img_size
    else:
        ih, iw = image_hw
    if p.HasField("step_h") or p.HasField("step_w"):
        sh, sw = float(p.step_h), float(p.step_w)
    elif p.HasField("step"):
        sh = sw = float(p.step)
    else:
        sh, sw = float(np.float32(ih) / np.float32(lh)), float(np.float32(iw) / np.float32(lw))
    sizes: list[tuple[float, float]] = []  # (box width, box height) in cell order
    for s, min_raw in enumerate(p.min_size):
        mn = int(min_raw)
        sizes.append((mn, mn))
        if len(p.max_size):
            side = math.sqrt(mn * int(p.max_size[s]))
            sizes.append((side, side))
        for ar in ars[1:]:
            sizes.append((mn * math.sqrt(ar), mn / math.sqrt(ar)))
    wh = np.asarray(sizes, dtype=np.float32).astype(np.float64)  # Caffe keeps them as float
    cx = (np.arange(lw, dtype=np.float32) + np.float32(p.offset)) * np.float32(sw)
    cy = (np.arange(lh, dtype=np.float32) + np.float32(p.offset)) * np.float32(sh)
    cx = cx.astype(np.float64)[None, :, None]
    cy = cy.astype(np.float64)[:, None, None]
    bw, bh = wh[None, None, :, 0], wh[None, None, :, 1]
    shape = (lh, lw, len(sizes))
    boxes = np.stack(
        [
            np.broadcast_to((cx - bw / 2) / iw, shape),
            np.broadcast_to((cy - bh / 2) / ih, shape),
            np.broadcast_to((cx + bw / 2) / iw, shape),
            np.broadcast_to((cy + bh / 2) / ih, shape),
        ],
        axis=-1,
    ).astype(np.float32)
    if p.clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    var = list(p.variance) or [0.1]
    variances = np.broadcast_to(np.asarray(var * (4 // len(var)), dtype=np.float32), (*shape, 4))
    return np.stack([boxes.reshape(-1), np.ascontiguousarray(variances).reshape(-1)])[None]


@register("PriorBox")
class PriorBox(CaffeLayer):
    """Prior boxes from the shapes of ``bottom[0]`` (feature map) and ``bottom[1]`` (image)
    only; no gradient. Cached per shape and device."""

    def __init__(self, layer, bottom_shapes, phase):
        super().__init__(layer, bottom_shapes, phase)
        _need_bottoms(self, 2)
        _need_tops(self, len(layer.top), 1)
        p = layer.prior_box_param
        if not len(p.min_size):
            raise self.fail("needs min_size")
        if len(p.max_size) and len(p.max_size) != len(p.min_size):
            raise self.fail("needs as many max_size as min_size values")
        if any(mx <= mn for mn, mx in zip(p.min_size, p.max_size)):
            raise self.fail("max_size must be greater than min_size")
        if len(p.variance) not in (0, 1, 4):
            raise self.fail(f"needs 1 or 4 variance values, got {len(p.variance)}")
        if p.HasField("img_size") and (p.HasField("img_h") or p.HasField("img_w")):
            raise self.fail("give img_size or img_h/img_w, not both")
        if p.HasField("step") and (p.HasField("step_h") or p.HasField("step_w")):
            raise self.fail("give step or step_h/step_w, not both")
        self.param = caffe_pb2.PriorBoxParameter()
        self.param.CopyFrom(p)
        self._cache: dict[tuple, Tensor] = {}

    def forward(self, feature: Tensor, image: Tensor) -> tuple[Tensor]:
        key = (*feature.shape[2:4], *image.shape[2:4], feature.device)
        out = self._cache.get(key)
        if out is None:
            arr = prior_boxes(self.param, tuple(feature.shape[2:4]), tuple(image.shape[2:4]))
            out = self._cache[key] = torch.from_numpy(arr).to(feature.device)
        return (out,)
