"""Building blocks of DSOD nets, layer for layer as the official DSOD generator emits them.

Layer and top names are not set here: like the official code, the blocks leave them to
NetSpec's automatic naming (``BatchNorm12``, ``Convolution40``...), which the released
caffemodels rely on. Only the tops a recipe assigns to the NetSpec get explicit names.

Two unit orders exist in the family:
- DSOD (pre-activation, DenseNet style): BatchNorm -> Scale -> ReLU -> Convolution;
- GRP-DSOD: Convolution -> BatchNorm(eps 1e-4) -> Scale -> ReLU, all in place.
"""

from __future__ import annotations

from ..netspec import L, P, Top

# BatchNorm statistics are updated by the layer itself, never by the solver.
FROZEN = [dict(lr_mult=0, decay_mult=0)] * 3


def _bn_scale(bottom: Top, in_place: bool, eps: float | None = None) -> Top:
    kwargs = {"param": [dict(p) for p in FROZEN]}
    if eps is not None:
        kwargs["batch_norm_param"] = dict(eps=eps)
    bn = L.BatchNorm(bottom, in_place=in_place, **kwargs)
    return L.Scale(bn, bias_term=True, in_place=True, filler=dict(value=1), bias_filler=dict(value=0))


def _conv(bottom: Top, ks: int, nout: int, stride: int, pad: int, dilation: int = 1) -> Top:
    kwargs = {}
    if dilation != 1:
        kwargs["dilation"] = dilation
    return L.Convolution(
        bottom,
        kernel_size=ks,
        stride=stride,
        num_output=nout,
        pad=pad,
        bias_term=False,
        weight_filler=dict(type="xavier"),
        bias_filler=dict(type="constant"),
        **kwargs,
    )


def bn_relu_conv(
    bottom: Top, ks: int, nout: int, stride: int, pad: int, dropout: float = 0, relu_in_place: bool = True
) -> Top:
    """Pre-activation unit: BN (own top) -> Scale -> ReLU -> Conv [-> Dropout].

    ``relu_in_place=False`` gives the ReLU its own top, as the official transition layers do.
    """
    x = _bn_scale(bottom, in_place=False)
    x = L.ReLU(x, in_place=relu_in_place)
    x = _conv(x, ks, nout, stride, pad)
    if dropout > 0:
        x = L.Dropout(x, dropout_ratio=dropout)
    return x


def conv_bn_relu(
    bottom: Top, ks: int, nout: int, stride: int, pad: int, dilation: int = 1, bn_eps: float = 1e-4
) -> Top:
    """Post-activation unit of GRP-DSOD: Conv -> BN -> Scale -> ReLU, all in place."""
    x = _conv(bottom, ks, nout, stride, pad, dilation)
    x = _bn_scale(x, in_place=True, eps=bn_eps)
    return L.ReLU(x, in_place=True)


def deconv_bn_relu(bottom: Top, ks: int, nout: int, stride: int, bn_eps: float = 1e-4) -> Top:
    """Fixed bilinear up-sampling (lr 0) -> BN -> Scale -> ReLU (GRP-DSOD recurrent path)."""
    x = L.Deconvolution(
        bottom,
        convolution_param=dict(
            num_output=nout,
            kernel_size=ks,
            stride=stride,
            bias_term=False,
            weight_filler=dict(type="bilinear"),
        ),
        param=[dict(lr_mult=0, decay_mult=0)],
    )
    x = _bn_scale(x, in_place=True, eps=bn_eps)
    return L.ReLU(x, in_place=True)


def dense_layer(bottom: Top, growth: int, bottleneck_width: float, unit=bn_relu_conv) -> Top:
    """One dense layer with bottleneck: 1x1 (width*growth) -> 3x3 (growth), concatenated."""
    x = unit(bottom, ks=1, nout=int(bottleneck_width * growth), stride=1, pad=0)
    x = unit(x, ks=3, nout=growth, stride=1, pad=1)
    return L.Concat(bottom, x, axis=1)


def dense_block(bottom: Top, n_layers: int, growth: int, bottleneck_width: float, unit=bn_relu_conv) -> Top:
    """``n_layers`` dense layers; the output has ``n_layers * growth`` more channels."""
    x = bottom
    for _ in range(n_layers):
        x = dense_layer(x, growth, bottleneck_width, unit)
    return x


def transition(bottom: Top, nout: int, pool: bool, unit=bn_relu_conv) -> Top:
    """1x1 conv transition, followed by 2x2 max pooling only when ``pool``.

    DSOD drops the pooling of the last transitions so that the high-resolution features
    reach the prediction layers ("transition w/o pooling").
    """
    if unit is bn_relu_conv:
        x = bn_relu_conv(bottom, ks=1, nout=nout, stride=1, pad=0, relu_in_place=False)
    else:
        x = unit(bottom, ks=1, nout=nout, stride=1, pad=0)
    if pool:
        x = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    return x


def max_pool(bottom: Top, size: int = 2) -> Top:
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=size, stride=size)


def learning_half(bottom: Top, nout: int, unit=bn_relu_conv, bottleneck_width: float = 1) -> Top:
    """Down-sampling block of the dense prediction structure.

    Half of the output is learned (1x1 -> 3x3 stride 2), half is the previous scale
    re-used (2x2 max pool -> 1x1); the two are concatenated, pooled branch first.
    """
    learned = unit(bottom, ks=1, nout=int(bottleneck_width * nout), stride=1, pad=0)
    learned = unit(learned, ks=3, nout=nout, stride=2, pad=1)
    reused = unit(max_pool(bottom), ks=1, nout=nout, stride=1, pad=0)
    return L.Concat(reused, learned, axis=1)


def stem(bottom: Top, channels: tuple[int, int, int], unit=bn_relu_conv) -> Top:
    """The DSOD stem: 3x3/2, 3x3, 3x3 convolutions (no pooling; the caller pools)."""
    c1, c2, c3 = channels
    if unit is bn_relu_conv:
        # The official stem is Conv -> BN -> Scale -> ReLU (BN with its own top).
        x = bottom
        for c, s in ((c1, 2), (c2, 1), (c3, 1)):
            x = _conv(x, 3, c, s, 1)
            x = _bn_scale(x, in_place=False)
            x = L.ReLU(x, in_place=True)
        return x
    x = conv_bn_relu(bottom, 3, c1, 2, 1)
    x = conv_bn_relu(x, 3, c2, 1, 1)
    return conv_bn_relu(x, 3, c3, 1, 1)
