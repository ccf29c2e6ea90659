"""A training job as its solver prototxt describes it: the solver, its nets and their inputs.

``load_solver_job(path)`` reads the solver and every file it names (train and test nets, the
data layers' LMDBs, label maps and name/size lists) and refuses, with one
:class:`~model_libs.errors.ModelLibsError` naming the file, anything that is missing or
malformed - before either engine starts and before anything is written. It needs neither
Caffe nor PyTorch. File names inside a solver are read as Caffe reads them (relative to the
working directory); a relative name that is not found there is looked up beside the solver.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from ..engines.caffemodel import check, load_weights
from ..errors import ModelLibsError
from ..inputs import read_text
from ..proto import caffe_pb2
from ..summary import load_net
from .snapshots import newest_complete_snapshot

DATA_LAYERS = ("AnnotatedData", "Data")


@dataclass
class SolverJob:
    """A solver and the nets it trains and tests (file names resolved)."""

    solver_file: Path
    param: caffe_pb2.SolverParameter
    train_net_file: Path | None
    train_net: caffe_pb2.NetParameter
    test_net_files: list[Path | None] = field(default_factory=list)
    test_nets: list[caffe_pb2.NetParameter] = field(default_factory=list)

    @property
    def snapshot_prefix(self) -> Path | None:
        return Path(self.param.snapshot_prefix) if self.param.snapshot_prefix else None

    @property
    def max_iter(self) -> int:
        return self.param.max_iter

    def default_log(self) -> Path:
        """``<snapshot_prefix>.log`` (the recipes' layout), else ``train.log`` beside the solver."""
        prefix = self.snapshot_prefix
        if prefix is not None:
            return prefix.with_name(prefix.name + ".log")
        return self.solver_file.parent / "train.log"


def read_solver_file(path: str | os.PathLike) -> caffe_pb2.SolverParameter:
    """Parse a solver prototxt; unreadable or malformed files are a :class:`ModelLibsError`."""
    p = Path(path)
    text = read_text(p, "solver")
    param = caffe_pb2.SolverParameter()
    try:
        text_format.Parse(text, param)
    except text_format.ParseError as exc:
        raise ModelLibsError(f"{p}: not a valid solver prototxt: {exc}") from None
    return param


def resolve(name: str, solver_file: Path) -> Path:
    """A file name from a solver or net: as given (Caffe's view), else beside the solver."""
    p = Path(name)
    if p.exists() or p.is_absolute():
        return p
    beside = solver_file.parent / p
    return beside if beside.exists() else p


def _net(name: str, solver_file: Path, what: str) -> tuple[Path, caffe_pb2.NetParameter]:
    p = resolve(name, solver_file)
    if not p.is_file():
        raise ModelLibsError(f"{solver_file}: {what} {name} not found")
    return p, load_net(p)


def load_solver_job(path: str | os.PathLike, max_iter: int | None = None) -> SolverJob:
    """Read the solver and its nets; check every input file they name (see module doc)."""
    solver_file = Path(path)
    param = read_solver_file(solver_file)
    if max_iter is not None:
        if max_iter < 0:
            raise ModelLibsError(f"--max-iter must be >= 0, got {max_iter}")
        param.max_iter = max_iter
    sources = [f for f in ("net", "net_param", "train_net", "train_net_param") if param.HasField(f)]
    if len(sources) != 1:
        raise ModelLibsError(
            f"{solver_file}: needs exactly one train net (net, net_param, train_net or "
            f"train_net_param), found {len(sources) or 'none'}"
        )
    if param.HasField("train_net_param") or param.HasField("net_param"):
        inline = param.train_net_param if param.HasField("train_net_param") else param.net_param
        train_file, train = None, inline
    else:
        train_file, train = _net(param.train_net or param.net, solver_file, "train net")
    test_files: list[Path | None] = []
    tests: list[caffe_pb2.NetParameter] = []
    for name in param.test_net:
        f, n = _net(name, solver_file, "test net")
        test_files.append(f)
        tests.append(n)
    for n in param.test_net_param:
        test_files.append(None)
        tests.append(n)
    # A generic net (net / net_param) is also tested once per remaining test_iter entry.
    generic = len(param.test_iter) - len(tests)
    if (param.HasField("net") or param.HasField("net_param")) and generic > 0:
        test_files += [train_file] * generic
        tests += [train] * generic
    if len(param.test_iter) != len(tests):
        raise ModelLibsError(
            f"{solver_file}: {len(param.test_iter)} test_iter values for {len(tests)} test nets"
        )
    if tests and param.test_interval <= 0:
        raise ModelLibsError(f"{solver_file}: test nets are given but test_interval is not positive")
    job = SolverJob(solver_file, param, train_file, train, test_files, tests)
    check_net_inputs(job)
    return job


def _phase_layers(net: caffe_pb2.NetParameter, phase: int) -> list[caffe_pb2.LayerParameter]:
    from ..summary import included

    return [x for x in net.layer if included(x, phase)]


def check_net_inputs(job: SolverJob) -> None:
    """Every LMDB, label map and name/size list the nets read must exist."""
    nets = [("train net", job.train_net_file, job.train_net, caffe_pb2.TRAIN)]
    nets += [("test net", f, n, caffe_pb2.TEST) for f, n in zip(job.test_net_files, job.test_nets)]
    for what, file, net, phase in nets:
        where = str(file) if file else f"{job.solver_file} ({what})"
        for layer in _phase_layers(net, phase):
            ctx = f"{where}: layer {layer.name!r}"
            needed: list[tuple[str, str]] = []
            if layer.type in DATA_LAYERS:
                needed.append(("LMDB", layer.data_param.source))
                if layer.annotated_data_param.label_map_file:
                    needed.append(("label map", layer.annotated_data_param.label_map_file))
            if layer.type == "DetectionEvaluate" and layer.detection_evaluate_param.name_size_file:
                needed.append(("name/size list", layer.detection_evaluate_param.name_size_file))
            for kind, name in needed:
                if not name:
                    raise ModelLibsError(f"{ctx}: no {kind} is given")
                if not resolve(name, job.solver_file).exists():
                    raise ModelLibsError(f"{ctx}: {kind} {name} not found")


def check_weights(job: SolverJob, weights: str | os.PathLike) -> None:
    """``--weights`` as ``caffe train --weights`` uses it: layers are matched by name and may
    be missing; a matched layer with other blob shapes, or a file that matches no layer of
    the train net at all, is an error."""
    name = str(weights)
    model = load_weights(weights)
    report = check(job.train_net, model)
    problems = report.type_mismatch + report.count_mismatch + report.shape_mismatch
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        listed = "; ".join(problems[:3]) + more
        raise ModelLibsError(f"{name}: does not fit the train net {job.train_net.name!r}: {listed}")
    if report.matched == 0:
        raise ModelLibsError(
            f"{name}: no layer matches the train net {job.train_net.name!r} by name "
            "(a caffemodel of another net?)"
        )


def newest_snapshot(job: SolverJob) -> tuple[int, Path, Path]:
    """(iteration, solverstate, caffemodel) of the newest complete snapshot of the job
    (:func:`.snapshots.newest_complete_snapshot`: damaged newer ones are passed over)."""
    prefix = job.snapshot_prefix
    if prefix is None:
        raise ModelLibsError(f"{job.solver_file}: --resume needs a snapshot_prefix in the solver")
    choice = newest_complete_snapshot(resolve(str(prefix), job.solver_file))
    snap = choice.snapshot
    if snap is None or snap.state is None or snap.model is None:
        raise ModelLibsError(f"--resume: no complete snapshot with prefix {prefix} ({choice.describe()})")
    if choice.skipped:
        print(f"resuming from {choice.describe()}", file=sys.stderr)
    return snap.iteration, snap.state, snap.model
