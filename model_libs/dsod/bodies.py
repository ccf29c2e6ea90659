"""DSOD backbones with the dense prediction structure, parametrised.

``dsod_body`` builds DSOD300/DSOD512 and the smaller published variants from a
:class:`Backbone` description; ``grp_dsod320_body`` builds the GRP-DSOD320 recurrent
feature pyramid. Each assigns its prediction sources (``First``, ``Second``...) to the
NetSpec, exactly where the official generator does, so layer names match the release.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelLibsError
from ..netspec import L, NetSpec, P
from .blocks import (
    bn_relu_conv,
    conv_bn_relu,
    deconv_bn_relu,
    dense_block,
    learning_half,
    max_pool,
    stem,
    transition,
)


@dataclass(frozen=True)
class Backbone:
    """A DSOD backbone in the paper's notation DS/<stem>-<bottleneck>-<growth>-<compression>.

    stem: output channels of the three stem convolutions (the first is the paper's "A").
    growth: channels each dense layer adds (paper "C").
    bottleneck_width: bottleneck channels = width * growth (paper "B" = width * C).
    blocks: dense layers in each of the four dense blocks.
    compression: transition output = int(channels * compression) (paper "D").
    second_channels: channels of the last transition and of the re-used ``First`` branch
        that together form the second prediction source.
    extra_channels: learned channels of each down-sampling block after ``Second``.
    sources: names of the prediction sources, ``len(extra_channels) + 2`` of them.
    """

    stem: tuple[int, int, int] = (64, 64, 128)
    growth: int = 48
    bottleneck_width: float = 4
    blocks: tuple[int, int, int, int] = (6, 8, 8, 8)
    compression: float = 1.0
    second_channels: int = 256
    extra_channels: tuple[int, ...] = (256, 128, 128, 128)
    sources: tuple[str, ...] = ("First", "Second", "Third", "Fourth", "Fifth", "Sixth")

    def __post_init__(self):
        if len(self.sources) != len(self.extra_channels) + 2:
            raise ModelLibsError(
                f"backbone has {len(self.sources)} source names for "
                f"{len(self.extra_channels) + 2} prediction sources"
            )
        if len(self.blocks) != 4 or min(self.blocks) < 1:
            raise ModelLibsError(f"backbone needs four non-empty dense blocks, got {self.blocks}")

    @property
    def notation(self) -> str:
        """The paper's DS/A-B-C-D name of this backbone."""
        return (
            f"DS/{self.stem[0]}-{int(self.bottleneck_width * self.growth)}-{self.growth}-{self.compression:g}"
        )


def dsod_body(net: NetSpec, from_layer: str, bb: Backbone = Backbone()) -> list[str]:
    """Add a DSOD backbone + dense prediction structure on ``net[from_layer]``.

    Returns the names of the prediction sources, in order (high to low resolution).
    """
    if from_layer not in net:
        raise ModelLibsError(f"no top named {from_layer!r} in the net to build DSOD on")
    g, w = bb.growth, bb.bottleneck_width
    channels = bb.stem[2]

    x = max_pool(stem(net[from_layer], bb.stem))
    x = dense_block(x, bb.blocks[0], g, w)
    channels = int((channels + bb.blocks[0] * g) * bb.compression)
    x = transition(x, channels, pool=True)
    x = dense_block(x, bb.blocks[1], g, w)
    channels = int((channels + bb.blocks[1] * g) * bb.compression)
    net[bb.sources[0]] = transition(x, channels, pool=False)

    x = dense_block(max_pool(net[bb.sources[0]]), bb.blocks[2], g, w)
    channels = int((channels + bb.blocks[2] * g) * bb.compression)
    x = transition(x, channels, pool=False)
    x = dense_block(x, bb.blocks[3], g, w)
    x = transition(x, bb.second_channels, pool=False)
    reused = bn_relu_conv(max_pool(net[bb.sources[0]]), ks=1, nout=bb.second_channels, stride=1, pad=0)
    net[bb.sources[1]] = L.Concat(x, reused, axis=1)

    for name, prev, nout in zip(bb.sources[2:], bb.sources[1:], bb.extra_channels):
        net[name] = learning_half(net[prev], nout)
    return list(bb.sources)


GRP_SOURCES = ("Recurrent1", "Recurrent2", "Recurrent3", "Recurrent4", "Recurrent5", "Recurrent6")


def grp_dsod320_body(
    net: NetSpec, from_layer: str, growth: int = 48, bottleneck_width: float = 4
) -> list[str]:
    """GRP-DSOD320: DSOD with post-activation units and a recurrent feature pyramid.

    Each ``RecurrentK`` concatenates scale K with the bilinearly up-sampled scale K+1
    (fixed deconvolution), so every prediction source also sees the coarser context.
    Returns the six recurrent source names.
    """
    if from_layer not in net:
        raise ModelLibsError(f"no top named {from_layer!r} in the net to build GRP-DSOD on")
    g, w, unit = growth, bottleneck_width, conv_bn_relu
    channels = 128

    stem_out = stem(net[from_layer], (64, 64, 128), unit=unit)  # 160x160
    s0 = dense_block(max_pool(stem_out), 6, g, w, unit)  # 80x80
    channels += 6 * g
    s0 = transition(s0, channels, pool=False, unit=unit)
    s1 = dense_block(max_pool(s0), 8, g, w, unit)  # 40x40
    channels += 8 * g
    s1 = transition(s1, channels, pool=False, unit=unit)
    from_stem = unit(max_pool(stem_out, 4), ks=1, nout=128, stride=1, pad=0)
    from_s0 = unit(max_pool(s0), ks=1, nout=128, stride=1, pad=0)
    net.First = L.Concat(s1, from_stem, from_s0, axis=1)

    s2 = dense_block(max_pool(s1), 8, g, w, unit)  # 20x20
    channels += 8 * g
    s2 = transition(s2, channels, pool=False, unit=unit)
    s2 = dense_block(s2, 8, g, w, unit)
    s2 = transition(s2, 171, pool=False, unit=unit)
    reused = unit(max_pool(net.First), ks=1, nout=171, stride=1, pad=0)
    net.Second = L.Concat(s2, reused, axis=1)
    net.Third = learning_half(net.Second, 86, unit=unit)  # 10x10
    net.Fourth = learning_half(net.Third, 86, unit=unit)  # 5x5
    net.Fifth = learning_half(net.Fourth, 86, unit=unit)  # 3x3
    net.Sixth = learning_half(net.Fifth, 128, unit=unit)  # 2x2

    # Recurrent pyramid: (coarser source, kernel, channels, same-scale source).
    pyramid = (
        ("Second", 2, 128, "First"),
        ("Third", 2, 171, "Second"),
        ("Fourth", 2, 86, "Third"),
        ("Fifth", 1, 86, "Fourth"),
        ("Sixth", 1, 86, "Fifth"),
    )
    for name, (coarse, ks, nout, same) in zip(GRP_SOURCES, pyramid):
        up = deconv_bn_relu(net[coarse], ks=ks, nout=nout, stride=2)
        net[name] = L.Concat(up, net[same], axis=1)
    net[GRP_SOURCES[-1]] = net.Sixth
    return list(GRP_SOURCES)


def source_channels(body, resize: tuple[int, int]) -> dict[str, int]:
    """Channels of each prediction source ``body`` builds, by shape inference on a bare net.

    This is where GRP-DSOD's gate widths come from: the release lists them by hand
    (1184, 513, 258, 258, 258, 256), but they are simply what the body's sources carry.
    """
    from ..summary import summarize  # shape inference; imported here to keep bodies light

    net = NetSpec()
    net.data = L.Input(shape=dict(dim=[1, 3, resize[0], resize[1]]))
    names = body(net, "data")
    shapes = summarize(net.to_proto()).blob_shapes
    return {name: shapes[name][1] for name in names}


def gated_module(net: NetSpec, sources: list[str], channels: list[int]) -> list[str]:
    """GRP-DSOD's gates on each source: channel attention, then a global gate, residual.

    For source S: global average pool -> fc (C/16) -> ReLU, then
    channel level: fc (C) -> sigmoid scales S per channel -> ReLU  (``S_att``);
    global level: fc (1) -> sigmoid scales ``S_att``; ``S_gate`` = S + that.
    The Scale layers take their multipliers from a second bottom and store no blob.
    Returns the gated source names (``S_gate``).
    """
    gated = []
    for src, c in zip(sources, channels):
        pool, fc, relu = f"{src}_pool", f"{src}_fc", f"{src}_relu"
        net[pool] = L.Pooling(net[src], pool=P.Pooling.AVE, global_pooling=True)
        net[fc] = L.InnerProduct(net[pool], num_output=int(c / 16.0))
        net[relu] = L.ReLU(net[fc], in_place=True)

        channel_gate = L.Sigmoid(L.InnerProduct(net[relu], num_output=int(c)), in_place=True)
        scaled = L.Scale(net[src], channel_gate, axis=0, bias_term=False, bias_filler=dict(value=0))
        net[f"{src}_att"] = L.ReLU(scaled, in_place=True)

        global_gate = L.Sigmoid(L.InnerProduct(net[relu], num_output=1), in_place=True)
        global_gate = L.Reshape(global_gate, reshape_param=dict(shape=dict(dim=[-1])))
        scaled = L.Scale(net[f"{src}_att"], global_gate, axis=0, bias_term=False, bias_filler=dict(value=0))
        net[f"{src}_gate"] = L.Eltwise(net[src], scaled)
        gated.append(f"{src}_gate")
    return gated
