"""A Caffe net (``NetParameter``) as one PyTorch module, with Caffe's phase rules.

::

    net = CaffeNet(train_net(recipe("DSOD300")), phase="TRAIN")
    tops = net({"data": x, "label": y})        # every top by name
    loss = net.loss(tops)                       # sum of loss_weight * top over net.losses
    for layer, i, t, lr_mult, decay_mult in net.named_blobs(): ...

Layers whose include/exclude rules admit the phase are kept, in prototxt order; data layers
(AnnotatedData, Data, ..., Input and ``input:``) become named inputs. Blobs are named by
their Caffe layer (state dict key ``layers.<layer>.blob<i>``) and start from the layers'
fillers (:mod:`model_libs.engines.init`; BatchNorm statistics at zero, as Caffe starts them).

Execution fuses BatchNorm followed by an in-place per-channel Scale (and an in-place ReLU)
on the same blob into a single ``F.batch_norm`` call, each layer keeping its own blobs.
``channels_last`` runs 4-D activations in NHWC memory order; ``bf16`` runs under bfloat16
autocast with BatchNorm kept in float32.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import importlib.util
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engines.init import init_arrays
from ..errors import ModelLibsError
from ..proto import caffe_pb2
from ..summary import included, load_net, summarize
from .layers import LAYERS, BatchNorm, CaffeLayer, ReLU, Scale, layer_context

DATA_TYPES = frozenset(
    {"AnnotatedData", "Data", "ImageData", "DummyData", "MemoryData", "HDF5Data", "WindowData", "Input"}
)

if importlib.util.find_spec("model_libs.pytorch.ssd_layers") is not None:
    importlib.import_module("model_libs.pytorch.ssd_layers")  # registers the SSD layers


_ALLOCATOR_TUNED: bool | None = None


def tune_cpu_allocator() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the system.

    Activations of a DSOD net at batch 4 are tens of MB each; glibc serves blocks above its
    mmap threshold (at most 32 MB by default) with a fresh ``mmap`` every time, so every
    such tensor is paid for again in page faults: measured on 2 cores, a ReLU over a
    37 MB tensor took 72 ms that way and 24 ms with freed memory reused. Raising the mmap
    and trim thresholds is process-wide and only changes when memory goes back to the OS.
    Done once; ``MODEL_LIBS_TUNE_MALLOC=0`` leaves the allocator alone. Returns whether the
    thresholds were set (False off glibc)."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is None:
        _ALLOCATOR_TUNED = False
        if os.environ.get("MODEL_LIBS_TUNE_MALLOC", "1") != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameters
                _ALLOCATOR_TUNED = bool(
                    libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30)
                )
            except (OSError, AttributeError):  # not glibc
                pass
    return _ALLOCATOR_TUNED


def module_key(layer_name: str) -> str:
    """The ``nn.ModuleDict`` key of a layer: its name (a '.' would split state-dict keys)."""
    return layer_name.replace(".", "\u2024")


class _Step:
    """One layer run: bottoms in, tops out, through ``blobs`` (a name -> tensor dict)."""

    __slots__ = ("bottoms", "fn", "tops")

    def __init__(self, fn, bottoms: Sequence[str], tops: Sequence[str]) -> None:
        self.fn, self.bottoms, self.tops = fn, tuple(bottoms), tuple(tops)

    def __call__(self, blobs: dict[str, Tensor]) -> None:
        outs = self.fn(*[blobs[b] for b in self.bottoms])
        for t, o in zip(self.tops, outs):
            blobs[t] = o


class _BatchNormScale:
    """BatchNorm + in-place Scale (+ in-place ReLU) in one ``F.batch_norm`` call."""

    __slots__ = ("bn", "relu", "scale")

    def __init__(self, bn: BatchNorm, scale: Scale, relu: ReLU | None) -> None:
        self.bn, self.scale, self.relu = bn, scale, relu

    def __call__(self, x: Tensor) -> tuple[Tensor]:
        s = self.scale
        y = self.bn.normalize(x, s.blob0, s.blob1 if s.has_bias else None)
        if self.relu is not None:
            slope = self.relu.negative_slope
            y = F.leaky_relu_(y, slope) if slope else F.relu_(y)
        return (y,)


class CaffeNet(nn.Module):
    """The layers of a Caffe net in one phase, run and trained with Caffe's semantics.

    ``net``: a NetParameter or a prototxt path. ``phase``: ``TRAIN`` or ``TEST`` (with
    ``level``/``stages`` as Caffe's NetState). ``seed``: the fillers' seed. ``fuse``: fuse
    BatchNorm + Scale (+ ReLU) in execution (results are the same; off for debugging).
    """

    def __init__(
        self,
        net: caffe_pb2.NetParameter | str | Path,
        phase: str = "TRAIN",
        seed: int = 0,
        level: int = 0,
        stages: Sequence[str] = (),
        fuse: bool = True,
    ) -> None:
        super().__init__()
        if phase not in ("TRAIN", "TEST"):
            raise ModelLibsError(f"phase must be TRAIN or TEST, got {phase!r}")
        source = net if isinstance(net, caffe_pb2.NetParameter) else load_net(net)
        self.phase = phase
        self.channels_last = False
        self.bf16 = False
        phase_id = caffe_pb2.Phase.Value(phase)
        kept = [x for x in source.layer if included(x, phase_id, level, frozenset(stages))]
        if len(source.layers):
            raise ModelLibsError(f"net {source.name!r}: V1 'layers' are not supported; upgrade the prototxt")
        # The phase's net as Caffe builds it (rules kept, as Caffe's snapshots keep them).
        self.net_param = caffe_pb2.NetParameter()
        self.net_param.CopyFrom(source)
        del self.net_param.layer[:]
        self.net_param.layer.extend(kept)
        shapes = summarize(self._shape_net(), phase).blob_shapes

        self.input_names: list[str] = list(source.input)
        self.layers = nn.ModuleDict()
        self.losses: list[tuple[str, float]] = []
        self._order: list[tuple[CaffeLayer, caffe_pb2.LayerParameter]] = []
        param_names: dict[str, str] = {}
        for layer in kept:
            ctx = layer_context(layer)
            if layer.type in DATA_TYPES:
                self.input_names += [t for t in layer.top if t not in self.input_names]
                continue
            builder = LAYERS.get(layer.type)
            if builder is None:
                raise ModelLibsError(
                    f"{ctx}: layer type {layer.type!r} is not supported by the PyTorch engine "
                    f"(supported: {', '.join(sorted(LAYERS))})"
                )
            for p in layer.param:
                if p.name:
                    if p.name in param_names:
                        raise ModelLibsError(
                            f"{ctx}: shares parameter {p.name!r} with layer {param_names[p.name]!r}; "
                            "shared parameters are not supported"
                        )
                    param_names[p.name] = layer.name
            key = module_key(layer.name)
            if key in self.layers:
                raise ModelLibsError(f"{ctx}: a second layer of this name")
            module = builder(layer, [shapes[b] for b in layer.bottom], phase)
            self.layers[key] = module
            self._order.append((module, layer))
            weights = list(layer.loss_weight)
            if not weights and layer.type.endswith("Loss"):
                weights = [1.0]
            self.losses += [(t, float(w)) for t, w in zip(layer.top, weights) if w]
        self.input_shapes = {n: shapes[n] for n in self.input_names}
        self.blob_shapes = shapes
        self._fill(seed)
        for module, _ in self._order:
            for i in range(module.n_blobs):
                t = module.blob(i)
                if isinstance(t, nn.Parameter) and module.lr_mult(i) == 0:
                    # Caffe computes no gradient for a blob with lr_mult 0 (the
                    # Deconvolution upsampling kernels of GRP-DSOD): neither do we.
                    t.requires_grad_(False)
        self.fused = fuse
        self._steps = self._plan(fuse)

    # ------------------------------------------------------------------ construction

    def _fill(self, seed: int) -> None:
        arrays = init_arrays(self._shape_net(), seed, phase=self.phase, caffe_statistics=True)
        with torch.no_grad():
            for module, _ in self._order:
                for i, a in enumerate(arrays.get(module.caffe_name, [])):
                    module.blob(i).copy_(torch.from_numpy(a))

    def _shape_net(self) -> caffe_pb2.NetParameter:
        net = caffe_pb2.NetParameter()
        net.CopyFrom(self.net_param)
        for x in net.layer:
            x.ClearField("include")
            x.ClearField("exclude")
        return net

    def _plan(self, fuse: bool) -> list[_Step]:
        steps: list[_Step] = []
        order = self._order
        i = 0
        while i < len(order):
            module, layer = order[i]
            if fuse and isinstance(module, BatchNorm) and i + 1 < len(order):
                scale, sl = order[i + 1]
                top = layer.top[0]
                if (
                    isinstance(scale, Scale)
                    and scale.per_channel
                    and list(sl.bottom) == [top]
                    and list(sl.top) == [top]
                ):
                    relu = None
                    if i + 2 < len(order):
                        r, rl = order[i + 2]
                        if isinstance(r, ReLU) and list(rl.bottom) == [top] and list(rl.top) == [top]:
                            relu = r
                    steps.append(_Step(_BatchNormScale(module, scale, relu), layer.bottom, [top]))
                    i += 3 if relu is not None else 2
                    continue
            steps.append(_Step(module, layer.bottom, layer.top))
            i += 1
        return steps

    # ------------------------------------------------------------------ running

    def set_channels_last(self, enabled: bool = True) -> CaffeNet:
        """Run 4-D activations and convolution weights in channels-last (NHWC) order."""
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def forward(self, inputs: dict[str, Tensor], outputs: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Run the net on ``inputs`` (one tensor per input name); every top by name, or only
        ``outputs``: then intermediate blobs are freed as soon as no later layer reads them,
        and in the TEST phase layers that none of ``outputs`` depends on are not run (in
        TRAIN every layer runs, as in Caffe: BatchNorm layers update their statistics)."""
        if _ALLOCATOR_TUNED is None:
            tune_cpu_allocator()
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ModelLibsError(f"net {self.net_param.name!r}: missing input(s) {', '.join(missing)}")
        blobs: dict[str, Tensor] = {}
        for n in self.input_names:
            x = inputs[n]
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            blobs[n] = x
        steps: list[tuple[_Step, tuple[str, ...]]] = [(s, ()) for s in self._steps]
        if outputs is not None:
            unknown = [o for o in outputs if o not in self.blob_shapes]
            if unknown:
                raise ModelLibsError(f"net {self.net_param.name!r} has no blob(s) {', '.join(unknown)}")
            steps = self._output_plan(tuple(outputs))
        device = next(iter(blobs.values())).device.type if blobs else "cpu"
        ctx = torch.autocast(device, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            for step, release in steps:
                step(blobs)
                for name in release:
                    blobs.pop(name, None)
        if outputs is not None:
            return {o: blobs[o] for o in outputs}
        return blobs

    def _output_plan(self, outputs: tuple[str, ...]) -> list[tuple[_Step, tuple[str, ...]]]:
        """(step, blobs to free after it) for the steps that ``outputs`` need (all in TRAIN)."""
        cache = self.__dict__.setdefault("_plan_cache", {})
        plan = cache.get(outputs)
        if plan is None:
            keep = [True] * len(self._steps)
            if self.phase == "TEST":
                needed = set(outputs)
                for k in range(len(self._steps) - 1, -1, -1):
                    step = self._steps[k]
                    keep[k] = any(t in needed for t in step.tops)
                    if keep[k]:
                        needed.update(step.bottoms)
            kept = [s for s, k in zip(self._steps, keep) if k]
            last: dict[str, int] = {}
            for k, step in enumerate(kept):
                for name in (*step.bottoms, *step.tops):
                    last[name] = k
            release: list[list[str]] = [[] for _ in kept]
            for name, k in last.items():
                if name not in outputs:
                    release[k].append(name)
            plan = cache[outputs] = [(s, tuple(r)) for s, r in zip(kept, release)]
        return plan

    def loss(self, tops: dict[str, Tensor]) -> Tensor:
        """The net's objective: ``sum(loss_weight * top.sum())`` over :attr:`losses`."""
        if not self.losses:
            raise ModelLibsError(f"net {self.net_param.name!r} has no loss in phase {self.phase}")
        total = None
        for name, w in self.losses:
            term = tops[name].float().sum() * w
            total = term if total is None else total + term
        return total

    # ------------------------------------------------------------------ blobs

    def layer(self, name: str) -> CaffeLayer:
        """The module of Caffe layer ``name``."""
        try:
            return self.layers[module_key(name)]
        except KeyError:
            raise ModelLibsError(f"net {self.net_param.name!r} has no layer {name!r}") from None

    def named_blobs(self) -> Iterator[tuple[str, int, Tensor, float, float]]:
        """(layer, index, tensor, lr_mult, decay_mult) for every stored blob, in Caffe's order
        (the order of Caffe's learnable parameters and of its solverstate history).

        Learned blobs are ``nn.Parameter`` (``requires_grad`` False where ``lr_mult`` is 0,
        as Caffe computes no gradient there); BatchNorm's statistics are buffers (no
        gradient) whose multipliers are reported as the prototxt sets them (DSOD: 0)."""
        for module, _ in self._order:
            for i in range(module.n_blobs):
                yield module.caffe_name, i, module.blob(i), module.lr_mult(i), module.decay_mult(i)

    def share_blobs(self, other: CaffeNet) -> None:
        """Use ``other``'s blob tensors for the layers of the same name (Caffe's
        ``ShareTrainedLayersWith``: a TEST net sharing a TRAIN net's weights)."""
        for module, layer in self._order:
            try:
                src = other.layer(layer.name)
            except ModelLibsError:
                continue
            if src.n_blobs != module.n_blobs:
                raise ModelLibsError(f"{layer_context(layer)}: {src.n_blobs} vs {module.n_blobs} blobs")
            for i in range(module.n_blobs):
                a, b = module.blob(i), src.blob(i)
                if a.shape != b.shape:
                    raise ModelLibsError(
                        f"{layer_context(layer)} blob {i}: shape {list(a.shape)} vs {list(b.shape)}"
                    )
                if isinstance(b, nn.Parameter):
                    module.register_parameter(f"blob{i}", b)
                else:
                    module.register_buffer(f"blob{i}", b)
