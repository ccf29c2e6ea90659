"""Caffe's SGD solver in PyTorch: learning-rate policies, the update rule, solver states.

What SSD Caffe does (``src/caffe/solvers/sgd_solver.cpp``, ``src/caffe/solver.cpp``) and
this module reproduces:

- The learnable blobs are every stored blob of every layer, in net order - BatchNorm's
  statistics included: their history exists and is saved, but BatchNorm masks them with
  ``lr_mult: 0``, so their update is zero. A blob with ``lr_mult: 0`` gets no gradient
  (Caffe does not back-propagate into it), which matters for ``clip_gradients``.
- ``ApplyUpdate``: the rate of the current iteration (``GetLearningRate``, which also
  advances ``current_step`` for ``multistep``), then ``ClipGradients`` (global L2 norm of
  all diffs), and per blob: divide the accumulated diff by ``iter_size``, add
  ``weight_decay * decay_mult * w`` (L2) or ``* sign(w)`` (L1), ``history = local_rate *
  diff + momentum * history`` with ``local_rate = rate * lr_mult``, ``w -= history``.
  Unlike ``torch.optim.SGD`` the rate sits inside the momentum history.
- ``SolverState`` (binary protobuf): ``iter``, ``learned_net`` (the caffemodel's file
  name), one ``history`` blob per learnable blob, ``current_step`` - read and written in
  Caffe's own format, so Caffe resumes a torch snapshot and this solver a Caffe one.

Rates are computed in double and rounded to float32, as Caffe keeps them in ``Dtype``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from google.protobuf.message import DecodeError

from ..engines.caffemodel import blob_array, make_blob
from ..errors import ModelLibsError
from ..inputs import read_bytes
from ..proto import caffe_pb2

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_solver(param: caffe_pb2.SolverParameter, name: str = "solver") -> None:
    """Refuse what this solver does not implement, naming the setting (before any training)."""
    legacy = caffe_pb2.SolverParameter.SolverType.Name(param.solver_type)
    kind = param.type if param.HasField("type") else legacy
    if kind.upper() != "SGD":
        raise ModelLibsError(f"{name}: solver type {kind!r} is not supported by the torch engine (only SGD)")
    if param.lr_policy not in LR_POLICIES:
        raise ModelLibsError(
            f"{name}: lr_policy {param.lr_policy!r} is unknown (use one of {', '.join(LR_POLICIES)})"
        )
    if param.lr_policy == "step" and param.stepsize <= 0:
        raise ModelLibsError(f"{name}: lr_policy 'step' needs a positive stepsize")
    if param.regularization_type not in ("L1", "L2"):
        raise ModelLibsError(
            f"{name}: regularization_type {param.regularization_type!r} is unknown (L1 or L2)"
        )
    if param.iter_size < 1:
        raise ModelLibsError(f"{name}: iter_size must be >= 1, got {param.iter_size}")
    if param.max_iter < 0:
        raise ModelLibsError(f"{name}: max_iter must be >= 0, got {param.max_iter}")
    if param.lr_policy == "poly" and param.max_iter <= 0:
        raise ModelLibsError(f"{name}: lr_policy 'poly' needs a positive max_iter")
    if param.average_loss < 1:
        raise ModelLibsError(f"{name}: average_loss must be >= 1, got {param.average_loss}")
    if param.snapshot_format != caffe_pb2.SolverParameter.BINARYPROTO:
        raise ModelLibsError(f"{name}: snapshot_format HDF5 is not supported by the torch engine")
    if param.snapshot and not param.snapshot_prefix:
        raise ModelLibsError(f"{name}: snapshot is set but snapshot_prefix is not")


def learning_rate(param: caffe_pb2.SolverParameter, it: int, current_step: int) -> tuple[float, int]:
    """Caffe's ``GetLearningRate`` at iteration ``it``: ``(rate, new current_step)``.

    ``multistep`` advances ``current_step`` by at most one per call, as Caffe does (so a
    resumed state carries it); ``step`` recomputes it from ``it``.
    """
    f32 = np.float32
    base, gamma, power = f32(param.base_lr), f32(param.gamma), f32(param.power)
    policy = param.lr_policy
    # Caffe's expressions: pow(float, int) promotes to double; the inv/poly/sigmoid
    # formulas are float throughout.
    if policy == "fixed":
        rate = float(base)
    elif policy == "step":
        current_step = it // param.stepsize
        rate = float(base) * float(gamma) ** current_step
    elif policy == "exp":
        rate = float(base) * float(gamma) ** it
    elif policy == "inv":
        rate = base * np.power(f32(1) + gamma * f32(it), -power)
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
        rate = float(base) * float(gamma) ** current_step
    elif policy == "poly":
        rate = base * np.power(f32(1) - f32(it) / f32(param.max_iter), power)
    elif policy == "sigmoid":
        rate = base * (f32(1) / (f32(1) + np.exp(-gamma * (f32(it) - f32(param.stepsize)))))
    else:
        raise ModelLibsError(f"unknown lr_policy {policy!r}")
    return float(np.float32(rate)), current_step


@dataclass
class SolverBlob:
    """One of Caffe's learnable blobs: the tensor and its ``param { }`` multipliers."""

    name: str  # "<layer>/<index>", for messages
    tensor: torch.Tensor  # an nn.Parameter, or a buffer (BatchNorm statistics)
    lr_mult: float
    decay_mult: float

    @property
    def has_grad(self) -> bool:
        """Caffe computes this blob's diff (``lr_mult != 0``, and it is a parameter)."""
        return self.lr_mult != 0 and isinstance(self.tensor, torch.nn.Parameter)


def net_blobs(net: torch.nn.Module) -> list[SolverBlob]:
    """Caffe's ``learnable_params()`` of a :class:`~model_libs.pytorch.net.CaffeNet`: every
    stored blob, layers in net order (``net.named_blobs()``).

    BatchNorm statistics (buffers) get ``lr_mult`` 0 whatever the prototxt says, as upstream
    SSD Caffe's BatchNorm masks them (the project's Caffe carries that mask as a patch); they
    keep their place in the list, as Caffe keeps their (zero) history. ``lr_mult: 0``
    parameters stop asking for gradients: Caffe does not compute their diff."""
    blobs = []
    for layer, i, t, lr_mult, decay_mult in net.named_blobs():
        learned = isinstance(t, torch.nn.Parameter)
        blob = SolverBlob(f"{layer}/{i}", t, float(lr_mult) if learned else 0.0, float(decay_mult))
        if learned and blob.lr_mult == 0:
            t.requires_grad_(False)
        blobs.append(blob)
    return blobs


class CaffeSGD:
    """SGD with Caffe's update rule over ``blobs`` (see the module doc).

    ``iter`` counts applied updates; ``current_step`` is the multistep/step position.
    Gradients are read from ``tensor.grad`` (summed over ``iter_size`` backward passes,
    as Caffe accumulates diffs); :meth:`zero_grad` clears them (``ClearParamDiffs``).
    """

    def __init__(self, param: caffe_pb2.SolverParameter, blobs: Iterable[SolverBlob]) -> None:
        check_solver(param)
        self.param = param
        self.blobs = list(blobs)
        self.iter = 0
        self.current_step = 0
        self.history = [torch.zeros_like(b.tensor, dtype=torch.float32) for b in self.blobs]
        # Blobs without a diff and without decay only decay their history; skip them while
        # it is known to be zero (no device sync per blob).
        self._history_zero = [True] * len(self.blobs)
        self.momentum = float(np.float32(param.momentum))
        self.weight_decay = float(np.float32(param.weight_decay))
        self.clip = float(np.float32(param.clip_gradients))

    def zero_grad(self) -> None:
        for b in self.blobs:
            if b.tensor.grad is not None:
                b.tensor.grad = None

    def rate(self) -> float:
        """The learning rate of the current iteration (advances ``current_step`` like Caffe)."""
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        return rate

    def _diffs(self) -> list[torch.Tensor | None]:
        return [b.tensor.grad if b.has_grad else None for b in self.blobs]

    def _clip(self, diffs: list[torch.Tensor | None]) -> float | None:
        """``ClipGradients``: scale every diff when their global L2 norm exceeds the limit."""
        if self.clip < 0:
            return None
        present = [d for d in diffs if d is not None]
        if not present:
            return None
        norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(present))))
        if norm > self.clip:
            torch._foreach_mul_(present, self.clip / norm)
            return norm
        return None

    @torch.no_grad()
    def apply_update(self) -> float:
        """Caffe's ``ApplyUpdate`` at ``self.iter``; returns the rate used. Does not
        advance ``iter`` (the caller does, after logging and snapshot checks).

        Blobs with the same multipliers are updated together (``torch._foreach_*``: the
        same element-wise operations, one launch per group instead of per blob)."""
        f32 = np.float32
        rate = self.rate()
        diffs = self._diffs()
        self._clip(diffs)
        iter_size = self.param.iter_size
        local: dict[tuple[float, float], tuple[float, float]] = {}
        groups: dict[tuple[float, float], tuple[list, list, list]] = {}
        for i, (b, diff, hist) in enumerate(zip(self.blobs, diffs, self.history)):
            key = (b.lr_mult, b.decay_mult)
            if key not in local:
                local[key] = (
                    float(f32(f32(rate) * f32(b.lr_mult))),
                    float(f32(f32(self.weight_decay) * f32(b.decay_mult))),
                )
            local_rate, local_decay = local[key]
            if local_rate == 0 or (diff is None and local_decay == 0):
                # Nothing reaches the history: history = momentum * history, w -= history.
                if not self._history_zero[i]:
                    hist.mul_(self.momentum)
                    b.tensor.sub_(hist)
                continue
            ws, ds, hs = groups.setdefault(key, ([], [], []))
            ws.append(b.tensor)
            ds.append(torch.zeros_like(b.tensor) if diff is None else diff)
            hs.append(hist)
            self._history_zero[i] = False
        for key, (ws, ds, hs) in groups.items():
            local_rate, local_decay = local[key]
            if iter_size != 1:
                torch._foreach_mul_(ds, float(f32(1.0 / iter_size)))
            if local_decay:
                decay = torch._foreach_sign(ws) if self.param.regularization_type == "L1" else ws
                torch._foreach_add_(ds, decay, alpha=local_decay)
            torch._foreach_mul_(hs, self.momentum)
            torch._foreach_add_(hs, ds, alpha=local_rate)
            torch._foreach_sub_(ws, hs)
        return rate

    # ------------------------------------------------------------------ solver state

    def state_proto(self, learned_net: str) -> caffe_pb2.SolverState:
        """This solver's state as Caffe's ``SolverState`` message."""
        state = caffe_pb2.SolverState(iter=self.iter, learned_net=learned_net, current_step=self.current_step)
        for h in self.history:
            state.history.append(make_blob(h.detach().cpu().numpy()))
        return state

    def load_state_proto(self, state: caffe_pb2.SolverState, name: str = "solverstate") -> None:
        """Restore ``iter``, ``current_step`` and the history blobs (the weights are the
        caller's: they live in ``state.learned_net``)."""
        if len(state.history) != len(self.history):
            raise ModelLibsError(
                f"{name}: holds {len(state.history)} history blobs but the train net has "
                f"{len(self.history)} learnable blobs (a state of another net?)"
            )
        arrays = []
        for i, (proto, b) in enumerate(zip(state.history, self.blobs)):
            a = blob_array(proto, f"{name}: history blob {i}")
            if a.size != b.tensor.numel():
                raise ModelLibsError(
                    f"{name}: history blob {i} has {a.size} values but blob {b.name} has "
                    f"{b.tensor.numel()} (a state of another net?)"
                )
            arrays.append(a)
        for h, a in zip(self.history, arrays):
            h.copy_(torch.from_numpy(a.reshape(h.shape)))
        self._history_zero = [not bool(a.any()) for a in arrays]
        self.iter = state.iter
        self.current_step = state.current_step


def read_solverstate(path: str | Path) -> caffe_pb2.SolverState:
    """Parse a binary ``.solverstate``; a missing or corrupt file is a :class:`ModelLibsError`."""
    p = Path(path)
    data = read_bytes(p, "solverstate")
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(data)
    except DecodeError as exc:
        raise ModelLibsError(f"{p}: not a binary solverstate: {exc}") from None
    if not data or not state.HasField("iter"):
        raise ModelLibsError(f"{p}: not a solverstate (no iteration)")
    return state
