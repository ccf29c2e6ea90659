"""The SSD multibox head with BatchNorm, as DSOD uses it, and the prior-box settings.

For every prediction source the head adds an L2 Normalize layer (learned per-channel
scale), a 3x3 location and a 3x3 confidence predictor (each Conv -> BN -> Scale, no ReLU),
their Permute/Flatten reshaping, and a PriorBox layer; the three kinds are concatenated
into ``mbox_loc``, ``mbox_conf`` and ``mbox_priorbox``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ModelLibsError
from ..netspec import L, NetSpec, Top


def conv_bn_layer(
    net: NetSpec,
    from_layer: str,
    out_layer: str,
    num_output: int,
    kernel_size: int,
    pad: int,
    stride: int = 1,
    use_relu: bool = False,
    lr_mult: float = 1,
    eps: float = 0.001,
    moving_average_fraction: float = 0.999,
) -> None:
    """Conv (no bias, gaussian 0.01) -> BN (in place) -> Scale (in place) [-> ReLU].

    Names: ``out_layer``, ``out_layer_bn``, ``out_layer_scale`` (``out_layer_relu``).
    """
    net[out_layer] = L.Convolution(
        net[from_layer],
        num_output=num_output,
        kernel_size=kernel_size,
        pad=pad,
        stride=stride,
        param=[dict(lr_mult=lr_mult, decay_mult=1)],
        weight_filler=dict(type="gaussian", std=0.01),
        bias_term=False,
    )
    net[f"{out_layer}_bn"] = L.BatchNorm(
        net[out_layer],
        in_place=True,
        param=[dict(lr_mult=0, decay_mult=0) for _ in range(3)],
        eps=eps,
        moving_average_fraction=moving_average_fraction,
    )
    net[f"{out_layer}_scale"] = L.Scale(
        net[f"{out_layer}_bn"],
        in_place=True,
        bias_term=True,
        param=[dict(lr_mult=lr_mult, decay_mult=0), dict(lr_mult=lr_mult, decay_mult=0)],
        filler=dict(type="constant", value=1.0),
        bias_filler=dict(type="constant", value=0.0),
    )
    if use_relu:
        net[f"{out_layer}_relu"] = L.ReLU(net[out_layer], in_place=True)


def ssd_prior_sizes(
    min_dim: int, n_sources: int, min_ratio: int, max_ratio: int, first_ratios: tuple[int, int]
) -> tuple[list[float], list[float]]:
    """SSD's prior scales: ``n_sources - 1`` sizes evenly spaced (in whole percent of
    ``min_dim``) from ``min_ratio`` to ``max_ratio``, plus a smaller first pair.

    ``first_ratios`` are the first source's (min, max) in percent; e.g. VOC at 300 gives
    min [30, 60, 111, 162, 213, 264] and max [60, 111, 162, 213, 264, 315].
    """
    step = int(math.floor((max_ratio - min_ratio) / (n_sources - 2)))
    mins, maxs = [], []
    for ratio in range(min_ratio, max_ratio + 1, step):
        mins.append(min_dim * ratio / 100.0)
        maxs.append(min_dim * (ratio + step) / 100.0)
    mins = [min_dim * first_ratios[0] / 100.0] + mins
    maxs = [min_dim * first_ratios[1] / 100.0] + maxs
    if len(mins) != n_sources:
        raise ModelLibsError(
            f"prior ratios {min_ratio}..{max_ratio} give {len(mins)} sizes for {n_sources} sources"
        )
    return mins, maxs


@dataclass
class PriorConfig:
    """Prior boxes of every source (SSD semantics)."""

    min_sizes: list[float]
    max_sizes: list[float]
    aspect_ratios: list[list[float]]
    steps: list[float]
    variance: list[float] = field(default_factory=lambda: [0.1, 0.1, 0.2, 0.2])
    flip: bool = True
    clip: bool = False
    offset: float = 0.5

    def priors_per_location(self, i: int) -> int:
        """Boxes per feature-map cell at source ``i``: 1 + (max?1:0) + ars * (2 if flip)."""
        n = (2 if self.max_sizes else 1) + len(self.aspect_ratios[i])
        if self.flip:
            n += len(self.aspect_ratios[i])
        return n


def multibox_head(
    net: NetSpec,
    data_layer: str,
    sources: list[str],
    num_classes: int,
    priors: PriorConfig,
    normalizations: list[float] | None = None,
    share_location: bool = True,
    lr_mult: float = 1,
    kernel_size: int = 3,
    pad: int = 1,
) -> list[Top]:
    """Add the BN multibox head on ``sources``; returns [mbox_loc, mbox_conf, mbox_priorbox]."""
    n = len(sources)
    for what, values in (
        ("min_sizes", priors.min_sizes),
        ("aspect_ratios", priors.aspect_ratios),
        ("steps", priors.steps),
    ):
        if len(values) != n:
            raise ModelLibsError(f"{what} has {len(values)} entries for {n} prediction sources")
    if priors.max_sizes and len(priors.max_sizes) != n:
        raise ModelLibsError(f"max_sizes has {len(priors.max_sizes)} entries for {n} sources")
    if normalizations and len(normalizations) != n:
        raise ModelLibsError(f"normalizations has {len(normalizations)} entries for {n} sources")
    if data_layer not in net:
        raise ModelLibsError(f"no data top {data_layer!r} in the net")

    locs, confs, boxes = [], [], []
    for i, src in enumerate(sources):
        if src not in net:
            raise ModelLibsError(f"prediction source {src!r} is not a top of the net")
        if normalizations and normalizations[i] != -1:
            net[f"{src}_norm"] = L.Normalize(
                net[src],
                scale_filler=dict(type="constant", value=normalizations[i]),
                across_spatial=False,
                channel_shared=False,
            )
            src = f"{src}_norm"
        per_loc = priors.priors_per_location(i)

        for kind, nout, bucket in (
            ("loc", per_loc * 4 * (1 if share_location else num_classes), locs),
            ("conf", per_loc * num_classes, confs),
        ):
            name = f"{src}_mbox_{kind}"
            conv_bn_layer(net, src, name, nout, kernel_size, pad, lr_mult=lr_mult)
            net[f"{name}_perm"] = L.Permute(net[name], order=[0, 2, 3, 1])
            net[f"{name}_flat"] = L.Flatten(net[f"{name}_perm"], axis=1)
            bucket.append(net[f"{name}_flat"])

        name = f"{src}_mbox_priorbox"
        net[name] = L.PriorBox(
            net[src],
            net[data_layer],
            min_size=[priors.min_sizes[i]],
            clip=priors.clip,
            variance=priors.variance,
            offset=priors.offset,
        )
        if priors.max_sizes:
            net.update(name, {"max_size": [priors.max_sizes[i]]})
        if priors.aspect_ratios[i]:
            net.update(name, {"aspect_ratio": list(priors.aspect_ratios[i]), "flip": priors.flip})
        if priors.steps[i]:
            net.update(name, {"step": priors.steps[i]})
        boxes.append(net[name])

    net.mbox_loc = L.Concat(*locs, axis=1)
    net.mbox_conf = L.Concat(*confs, axis=1)
    net.mbox_priorbox = L.Concat(*boxes, axis=2)
    return [net.mbox_loc, net.mbox_conf, net.mbox_priorbox]
