"""Train a Caffe solver with the PyTorch engine: Caffe's ``Solve`` loop, line for line.

``Trainer(job, options).solve()`` does what ``caffe train --solver`` does with the same
files (``src/caffe/solver.cpp``): test every ``test_interval`` iterations (and at 0 with
``test_initialization``), ``iter_size`` forward/backward passes per iteration, the loss
smoothed over ``average_loss`` iterations and printed every ``display``, the SGD update
(:mod:`.solver`), snapshots every ``snapshot`` iterations and after training, then one
more forward pass and test when they fall due, and ``Optimization Done.``

The log is Caffe's: the same messages in glog's line layout, so
:mod:`model_libs.recipes.caffelog` (progress, plots) reads a torch log as a Caffe one.
Snapshots are ``<prefix>_iter_N.caffemodel`` and ``.solverstate`` in Caffe's formats,
written atomically; Caffe resumes them and this trainer resumes Caffe's.

In a ``torchrun`` job (:mod:`.distributed`) every rank trains on its own share of the
data; only rank 0 logs, tests and snapshots.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engines.caffemodel import write_caffemodel
from ..errors import ModelLibsError
from ..evaluation.caffe_ap import solver_map
from ..fsutil import atomic_write_bytes
from ..proto import caffe_pb2
from ..recipes.solver_job import SolverJob, check_weights, resolve
from .distributed import DistContext, sync_batchnorm, wrap
from .net import CaffeNet
from .solver import CaffeSGD, check_solver, net_blobs, read_solverstate
from .weights import load_caffemodel, to_caffemodel

Batch = dict[str, torch.Tensor]
AMP = ("bf16",)


@dataclass
class TrainOptions:
    """What ``python -m model_libs train --engine torch`` adds to the solver."""

    device: str = "cpu"
    amp: str | None = None  # None or "bf16"
    weights: str | None = None  # initial caffemodel (name-matched, like caffe train --weights)
    resume: str | None = None  # a .solverstate to continue from
    sync_bn: bool = False
    workers: int = 2  # DataLoader worker processes per rank
    accum_batch: int | None = None  # keep this global batch by choosing iter_size per rank
    channels_last: bool = True  # NHWC activations (measured faster on CPU and GPU)


class CaffeLog:
    """Caffe's log messages in glog's layout (``I1125 10:00:00.000000 1234 solver.cpp] ...``)."""

    def __init__(self, sinks: list[Callable[[str], None]], enabled: bool = True) -> None:
        self.sinks = sinks
        self.enabled = enabled

    def __call__(self, msg: str, where: str = "solver.cpp") -> None:
        if not self.enabled:
            return
        now = datetime.datetime.now()
        line = f"I{now:%m%d %H:%M:%S.%f} {os.getpid():5d} {where}] {msg}\n"
        for sink in self.sinks:
            sink(line)


def g(x: float) -> str:
    """A float as glog prints it (C++ ostream default: 6 significant digits)."""
    return f"{x:.6g}"


def output_blobs(net: caffe_pb2.NetParameter) -> list[str]:
    """Caffe's net outputs: blobs no later layer consumes, in Caffe's (sorted) order."""
    available: set[str] = set(net.input)
    for layer in net.layer:
        available -= set(layer.bottom)
        available |= set(layer.top)
    return sorted(available)


def data_batch_size(net: caffe_pb2.NetParameter) -> int:
    """The batch size of the net's data layer (the per-rank batch)."""
    for layer in net.layer:
        if layer.type in ("AnnotatedData", "Data"):
            return int(layer.data_param.batch_size)
        if layer.type == "Input" and layer.input_param.shape:
            return int(layer.input_param.shape[0].dim[0])
    if net.input_shape:
        return int(net.input_shape[0].dim[0])
    raise ModelLibsError(f"net {net.name!r}: no data layer gives a batch size")


class _SmoothedLoss:
    """Caffe's ``UpdateSmoothedLoss``: a running mean over the last ``average_loss`` values."""

    def __init__(self, average_loss: int, start_iter: int) -> None:
        self.n, self.start = average_loss, start_iter
        self.losses: list[np.float32] = []
        self.value = np.float32(0)

    def update(self, loss: float, it: int) -> float:
        loss32 = np.float32(loss)
        if len(self.losses) < self.n:
            self.losses.append(loss32)
            size = len(self.losses)
            self.value = np.float32((self.value * np.float32(size - 1) + loss32) / np.float32(size))
        else:
            idx = (it - self.start) % self.n
            self.value = np.float32(self.value + (loss32 - self.losses[idx]) / np.float32(self.n))
            self.losses[idx] = loss32
        return float(self.value)


class Trainer:
    """One rank of a training job (see the module doc).

    ``train_batches``/``test_batches`` replace the data layers' LMDB readers (tests,
    benchmarks): iterators of ``{input name: tensor}`` dicts.
    """

    def __init__(
        self,
        job: SolverJob,
        options: TrainOptions | None = None,
        log: CaffeLog | None = None,
        ctx: DistContext | None = None,
        train_batches: Iterator[Batch] | None = None,
        test_batches: list[Iterator[Batch]] | None = None,
    ) -> None:
        self.job = job
        self.opts = opts = options or TrainOptions()
        self.ctx = ctx = ctx or DistContext.from_env()
        self.log = log or CaffeLog([], enabled=False)
        if not ctx.is_root:
            self.log.enabled = False
        self.param = param = caffe_pb2.SolverParameter()
        param.CopyFrom(job.param)
        check_solver(param, str(job.solver_file))
        if opts.amp not in (None, *AMP):
            raise ModelLibsError(f"--amp {opts.amp}: use one of {', '.join(AMP)}")
        self.device = ctx.device(opts.device)
        if self.device.type == "cuda":
            # Fixed input sizes: let cuDNN pick its fastest algorithms. FP32 stays FP32 (no
            # TF32 rounding of convolution inputs, as Caffe's cuDNN path); --amp bf16 is the
            # fast path.
            torch.backends.cudnn.benchmark = True
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        ctx.init(self.device)

        self.batch = data_batch_size(job.train_net)
        if opts.accum_batch:
            # The official split: per-rank batch from the net, iter_size makes up the batch.
            param.iter_size = max(1, math.ceil(opts.accum_batch / (self.batch * ctx.world)))
        seed = param.random_seed if param.random_seed >= 0 else random.SystemRandom().randrange(2**31)
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2**32)

        self.net = CaffeNet(job.train_net, "TRAIN", seed=self.seed)
        if opts.weights:
            check_weights(job, opts.weights)
            load_caffemodel(self.net, opts.weights, strict=False)
        self.test_nets = [CaffeNet(n, "TEST", seed=self.seed) for n in job.test_nets] if ctx.is_root else []
        if opts.sync_bn and ctx.distributed:
            sync_batchnorm(self.net)
        for net in (self.net, *self.test_nets):
            net.to(self.device)
            if opts.channels_last:
                net.set_channels_last(True)
            net.bf16 = opts.amp == "bf16"
        for net in self.test_nets:
            net.share_blobs(self.net)  # Caffe's ShareTrainedLayersWith, once: same tensors
        self.solver = CaffeSGD(param, net_blobs(self.net))
        self.resumed_from: str | None = None
        if opts.resume:
            self.restore(opts.resume)
        self.model = wrap(self.net, ctx, self.device)

        self.train_outputs = sorted(set(output_blobs(self.net.net_param)) | {t for t, _ in self.net.losses})
        self.train_batches = train_batches if train_batches is not None else self._reader(job.train_net, True)
        if test_batches is not None:
            self.test_batches = test_batches
        else:
            self.test_batches = [self._reader(n, False) for n in job.test_nets] if ctx.is_root else []

    # ------------------------------------------------------------------ data

    def _reader(self, net: caffe_pb2.NetParameter, train: bool) -> Iterator[Batch]:
        """The net's AnnotatedData layer (:func:`.data.batches`): this rank's share of the
        LMDB when training, the whole LMDB in order when testing. A resumed job continues
        with the batches that follow its iteration (Caffe would restart the LMDB: the same
        records, but the seeded augmentation draws would repeat)."""
        from .data import batches

        rank, world = (self.ctx.rank, self.ctx.world) if train else (0, 1)
        return batches(
            net,
            "TRAIN" if train else "TEST",
            seed=self.seed,
            rank=rank,
            world=world,
            workers=self.opts.workers,
            base=self.job.solver_file.parent,
            start=self.iter * self.param.iter_size if train else 0,
        )

    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    # ------------------------------------------------------------------ state

    @property
    def iter(self) -> int:
        return self.solver.iter

    def restore(self, state_file: str | os.PathLike) -> None:
        """Caffe's ``Restore``: weights from the state's ``learned_net``, then iteration,
        ``current_step`` and the momentum history."""
        state = read_solverstate(state_file)
        model = Path(state.learned_net)
        if not model.exists():  # a moved job: the caffemodel beside its solverstate
            model = Path(state_file).parent / model.name
        if not model.exists():
            raise ModelLibsError(f"{state_file}: its caffemodel {state.learned_net} is not found")
        self.log(f"Restoring previous solver status from {state_file}")
        load_caffemodel(self.net, model, strict=True)
        self.solver.load_state_proto(state, str(state_file))
        self.log("SGDSolver: restoring history", "sgd_solver.cpp")
        self.resumed_from = str(state_file)

    def snapshot(self) -> tuple[Path, Path] | None:
        """``<prefix>_iter_N.caffemodel`` + ``.solverstate`` (rank 0; each file atomically)."""
        if not self.ctx.is_root:
            return None
        prefix = self.param.snapshot_prefix
        if not prefix:
            raise ModelLibsError(f"{self.job.solver_file}: snapshot_prefix is not set")
        model = f"{prefix}_iter_{self.iter}.caffemodel"
        self.log(f"Snapshotting to binary proto file {model}")
        write_caffemodel(model, to_caffemodel(self.net))
        state = f"{prefix}_iter_{self.iter}.solverstate"
        self.log(f"Snapshotting solver state to binary proto file {state}", "sgd_solver.cpp")
        atomic_write_bytes(state, self.solver.state_proto(model).SerializeToString())
        return Path(model), Path(state)

    # ------------------------------------------------------------------ training

    def describe(self) -> str:
        w, b, i = self.ctx.world, self.batch, self.param.iter_size
        return f"global batch {b} x {w} rank{'s' if w > 1 else ''} x iter_size {i} = {b * w * i}"

    def forward_backward(self, sync: bool = True) -> torch.Tensor:
        """One pass over the next batch; gradients accumulate. Returns the loss (a tensor)."""
        batch = self._to_device(next(self.train_batches))
        no_sync = getattr(self.model, "no_sync", None)
        ctx = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
        with ctx:
            tops = self.model(batch, outputs=self.train_outputs)
            loss = self.net.loss(tops)
            loss.backward()
        self._last_tops = tops
        return loss.detach()

    def step(self, iters: int) -> None:
        """Caffe's ``Step``: ``iters`` iterations (tests, display, update, snapshots)."""
        p = self.param
        start = self.iter
        stop = start + iters
        self._smooth = _SmoothedLoss(p.average_loss, start)
        tick, tick_iter = time.monotonic(), start
        while self.iter < stop:
            self.solver.zero_grad()
            due = p.test_interval and self.iter % p.test_interval == 0
            if due and (self.iter > 0 or p.test_initialization):
                self.test_all()
            display = p.display and self.iter % p.display == 0
            total = torch.zeros((), device=self.device)
            for i in range(p.iter_size):
                total += self.forward_backward(sync=i == p.iter_size - 1)
            loss = float(total) / p.iter_size
            smoothed = self._smooth.update(loss, self.iter)
            if display:
                now = time.monotonic()
                n = self.iter - tick_iter
                speed = f" ({n / (now - tick):.4g} iter/s, {now - tick:.4g}s/{n} iters)" if n else ""
                tick, tick_iter = now, self.iter
                self.log(f"Iteration {self.iter}{speed}, loss = {g(smoothed)}")
                self._log_outputs("Train", self.net, self._last_tops, self.train_outputs)
            before = self.solver.current_step
            rate = self.solver.apply_update()
            if p.lr_policy == "multistep" and self.solver.current_step != before:
                status = f"MultiStep Status: Iteration {self.iter}, step = {self.solver.current_step}"
                self.log(status, "sgd_solver.cpp")
            if display:
                self.log(f"Iteration {self.iter}, lr = {g(rate)}", "sgd_solver.cpp")
            self.solver.iter += 1
            if p.snapshot and self.iter % p.snapshot == 0:
                self.snapshot()

    def _log_outputs(self, kind: str, net: CaffeNet, tops: dict, names: list[str]) -> None:
        weights = dict(net.losses)
        k = 0
        for name in names:
            if name not in tops:
                continue
            for v in tops[name].detach().float().reshape(-1).cpu().tolist():
                w = weights.get(name, 0.0)
                extra = f" (* {g(w)} = {g(w * v)} loss)" if w else ""
                self.log(f"    {kind} net output #{k}: {name} = {g(v)}{extra}")
                k += 1

    def solve(self) -> None:
        """Caffe's ``Solve``: train to ``max_iter``, snapshot, final display and test."""
        p = self.param
        self.log(f"Solving {self.net.net_param.name}")
        self.log(f"Learning Rate Policy: {p.lr_policy}")
        self.log(self.describe())
        start = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if not self.ctx.is_root:
            return
        if p.display and self.iter % p.display == 0:
            # A forward pass only, to show the final loss (it updates BatchNorm statistics,
            # as Caffe's does, on the root rank only).
            with torch.no_grad():
                batch = self._to_device(next(self.train_batches))
                tops = self.net(batch, outputs=self.train_outputs)
                loss = float(self.net.loss(tops))
            if not hasattr(self, "_smooth"):
                self._smooth = _SmoothedLoss(p.average_loss, start)
            self.log(f"Iteration {self.iter}, loss = {g(self._smooth.update(loss, self.iter))}")
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        self.log("Optimization Done.")

    # ------------------------------------------------------------------ testing

    def test_all(self) -> list[dict[str, float]]:
        """Caffe's ``TestAll`` (rank 0): each test net's outputs, logged; returns them."""
        if not self.ctx.is_root:
            return []
        return [self.test(k) for k in range(len(self.test_nets))]

    @torch.no_grad()
    def test(self, k: int = 0) -> dict[str, float]:
        """Caffe's ``TestDetection`` (``eval_type: "detection"``: the mAP of each output's
        DetectionEvaluate rows, per ``ap_version``) or ``TestClassification`` (the mean of
        each output value over ``test_iter`` batches)."""
        p = self.param
        net = self.test_nets[k]
        names = output_blobs(net.net_param)
        self.log(f"Iteration {self.iter}, Testing net (#{k})")
        detection = p.eval_type == "detection"
        rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
        sums: dict[str, np.ndarray] = {}
        loss = 0.0
        for _ in range(p.test_iter[k]):
            batch = self._to_device(next(self.test_batches[k]))
            tops = net(batch, outputs=names)
            if p.test_compute_loss and net.losses:
                loss += float(net.loss(tops))
            for n in names:
                a = tops[n].detach().float().cpu().numpy()
                if detection:
                    if a.shape[-1] != 5:
                        raise ModelLibsError(
                            f"test net output {n!r} has shape {list(a.shape)}; detection testing needs "
                            "DetectionEvaluate rows of width 5"
                        )
                    rows[n].append(a.reshape(-1, 5))
                else:
                    sums[n] = sums.get(n, 0) + a.reshape(-1).astype(np.float32)
        if p.test_compute_loss:
            self.log(f"Test loss: {g(loss / p.test_iter[k])}")
        results: dict[str, float] = {}
        if detection:
            for j, n in enumerate(names):
                m = solver_map(np.concatenate(rows[n]), p.ap_version).mAP
                results[n] = m
                self.log(f"    Test net output #{j}: {n} = {g(m)}")
        else:
            weights = dict(net.losses)
            j = 0
            for n in names:
                for v in sums[n] / p.test_iter[k]:
                    w = weights.get(n, 0.0)
                    extra = f" (* {g(w)} = {g(w * v)} loss)" if w else ""
                    self.log(f"    Test net output #{j}: {n} = {g(float(v))}{extra}")
                    results[n if j == 0 else f"{n}#{j}"] = float(v)
                    j += 1
        return results


def check_resume_file(state: str | os.PathLike, solver_file: Path) -> Path:
    """A ``--resume`` path as given or beside the solver; must exist."""
    p = resolve(str(state), solver_file)
    if not p.is_file():
        raise ModelLibsError(f"--resume: {state}: no such solverstate")
    return p
