"""``python -m model_libs train``: run a solver with Caffe or with the PyTorch engine.

::

    python -m model_libs train --solver JOB/solver.prototxt [--engine caffe|torch]
        [--device cpu|cuda] [--amp bf16] [--max-iter N] [--weights W.caffemodel | --resume [STATE]]
        [--gpus 0,1,...] [--nproc N] [--sync-bn] [--workers N] [--accum-batch N] [--log FILE]

Both engines read the same files and write the same log lines, snapshots and solver states.
Everything the solver names (nets, LMDBs, label maps), the weights and the snapshot folder is
checked before anything starts; a problem is one ``error:`` line, exit status 2, and nothing
is written.

Several GPUs (``--gpus 0,1``) or processes (``--nproc N``) with ``--engine torch`` start a
local ``torchrun`` job (one process per GPU, or N CPU processes with gloo); multi-machine
jobs run this command under ``torchrun`` directly. Each rank trains the train net's batch
with the solver's ``iter_size``: the global batch is batch x ranks x iter_size, which is the
solver's accumulated batch when the job was written for as many GPUs as ranks run it (the
recipe scripts write it so). ``--accum-batch N`` instead keeps a global batch of N on any
number of ranks (``iter_size = ceil(N / (batch x ranks))``, the official split).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from google.protobuf import text_format

from ..cli import PROG, make_parser, run
from ..errors import ModelLibsError
from .gpus import parse_gpus
from .solver_job import SolverJob, check_weights, load_solver_job, newest_snapshot, resolve

ENGINES = ("caffe", "torch")
TORCH_ONLY = ("amp", "sync_bn", "nproc", "accum_batch")
# Set in the processes this command starts through torchrun, so they do not launch again.
LAUNCHED = "MODEL_LIBS_TRAIN_LAUNCHED"


def build_parser(prog: str = f"{PROG} train") -> argparse.ArgumentParser:
    ap = make_parser(prog, "Train a Caffe solver with Caffe or PyTorch (same files, log and snapshots).")
    ap.add_argument("--solver", required=True, help="solver.prototxt (its nets, data and snapshot prefix)")
    add_engine_arguments(ap)
    ap.add_argument("--max-iter", type=int, default=None, help="stop at this iteration (default: max_iter)")
    ap.add_argument("--weights", default=None, help="initialise from a caffemodel (layers matched by name)")
    ap.add_argument(
        "--resume",
        nargs="?",
        const="newest",
        default=None,
        metavar="STATE",
        help="continue from a .solverstate (default: the newest complete snapshot of the solver)",
    )
    ap.add_argument("--gpus", default=None, help="GPU ids, e.g. 0,1 (default: none; with --device cuda: 0)")
    ap.add_argument("--log", default=None, help="log file (default: <snapshot_prefix>.log), appended to")
    ap.add_argument("--caffe", default=None, help="caffe binary (--engine caffe)")
    ap.add_argument("--verbose", action="store_true", help="print the raw log lines too")
    return ap


def add_engine_arguments(ap: argparse.ArgumentParser) -> None:
    """--engine and the PyTorch engine's options (shared with the recipe scripts)."""
    ap.add_argument("--engine", choices=ENGINES, default="caffe", help="caffe (default) or torch")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None, help="torch: cpu (default) or cuda")
    ap.add_argument("--amp", choices=("bf16",), default=None, help="torch: bfloat16 autocast")
    ap.add_argument("--nproc", type=int, default=None, help="torch: local processes (default: one per GPU)")
    ap.add_argument("--sync-bn", action="store_true", help="torch: BatchNorm statistics over all ranks")
    ap.add_argument("--workers", type=int, default=2, help="torch: data loader processes per rank")
    ap.add_argument(
        "--accum-batch", type=int, default=None, help="torch: keep this global batch on any number of ranks"
    )


def check_engine_arguments(args: argparse.Namespace) -> list[int]:
    """Refuse option mixes that cannot work; returns the GPU list."""
    gpus = parse_gpus(args.gpus) or []
    if args.engine == "caffe":
        given = [f"--{o.replace('_', '-')}" for o in TORCH_ONLY if getattr(args, o, None)]
        if given:
            raise ModelLibsError(f"{', '.join(given)}: only with --engine torch")
    if args.device == "cpu" and gpus:
        raise ModelLibsError(f"--device cpu and --gpus {args.gpus} exclude each other")
    if args.device == "cuda" and not gpus:
        gpus = [0]
    if args.nproc is not None and args.nproc < 1:
        raise ModelLibsError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc and gpus and args.nproc != len(gpus):
        raise ModelLibsError(f"--nproc {args.nproc} and {len(gpus)} GPUs: give one of them")
    if args.workers < 0:
        raise ModelLibsError(f"--workers must be >= 0, got {args.workers}")
    if args.accum_batch is not None and args.accum_batch < 1:
        raise ModelLibsError(f"--accum-batch must be >= 1, got {args.accum_batch}")
    return gpus


def _check_snapshot_folder(job: SolverJob) -> None:
    """Caffe's ``CheckSnapshotWritePermissions``, before anything runs."""
    prefix = job.snapshot_prefix
    if prefix is None:
        if job.param.snapshot or job.param.snapshot_after_train:
            raise ModelLibsError(f"{job.solver_file}: snapshots are asked for but snapshot_prefix is not set")
        return
    folder = resolve(str(prefix), job.solver_file).parent
    if not folder.is_dir():
        raise ModelLibsError(f"{job.solver_file}: snapshot folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ModelLibsError(f"{job.solver_file}: snapshot folder {folder} is not writable")


def prepare(args: argparse.Namespace) -> tuple[SolverJob, list[int], str | None]:
    """Every check that needs no engine: (job, GPUs, solverstate to resume from)."""
    gpus = check_engine_arguments(args)
    if args.resume and args.weights:
        raise ModelLibsError("--resume and --weights exclude each other")
    job = load_solver_job(args.solver, max_iter=args.max_iter)
    _check_snapshot_folder(job)
    if args.weights:
        check_weights(job, args.weights)
    state = None
    if args.resume == "newest":
        _, state_path, _ = newest_snapshot(job)
        state = str(state_path)
    elif args.resume:
        p = resolve(args.resume, job.solver_file)
        if not p.is_file():
            raise ModelLibsError(f"--resume: {args.resume}: no such solverstate")
        state = str(p)
    return job, gpus, state


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(argv, build_parser, lambda args: train(args, argv))


def train(args: argparse.Namespace, argv: list[str]) -> int:
    """Check everything, then train with the engine asked for."""
    job, gpus, state = prepare(args)
    log_file = Path(args.log) if args.log else job.default_log()
    with _job_lock(job):
        if args.engine == "caffe":
            return train_caffe(job, args, gpus, state, log_file)
        return train_torch(job, args, gpus, state, log_file, argv)


def _job_lock(job: SolverJob):
    """One training per snapshot folder (:func:`.job.job_lock`): taken by the process that
    starts training -- not by the ranks it or torchrun start, which run under it."""
    from .job import job_lock

    rank = os.environ.get("RANK", "0")
    if job.snapshot_prefix is None or os.environ.get(LAUNCHED) or rank not in ("", "0"):
        return contextlib.nullcontext()
    return job_lock(resolve(str(job.snapshot_prefix), job.solver_file).parent)


# ----------------------------------------------------------------------------- caffe


def train_caffe(
    job: SolverJob, args: argparse.Namespace, gpus: list[int], state: str | None, log_file: Path
) -> int:
    """``caffe train`` on the solver, with progress; ``--max-iter`` through a temporary
    copy of the solver (removed afterwards)."""
    from .cli import find_caffe_binary
    from .job import caffe_command
    from .train import run_caffe

    caffe_bin = find_caffe_binary(args.caffe, gpus)
    with tempfile.TemporaryDirectory(prefix="model_libs_solver_") as tmp:
        solver = job.solver_file
        if args.max_iter is not None:
            param = type(job.param)()
            param.CopyFrom(job.param)
            _absolute_paths(param, job)
            solver = Path(tmp) / "solver.prototxt"
            solver.write_text(text_format.MessageToString(param))
        cmd = caffe_command(caffe_bin, solver, gpus, snapshot=state, weights=args.weights)
        print("running: " + " ".join(cmd), file=sys.stderr)
        run_caffe(cmd, log_file, job.max_iter, echo=args.verbose)
    return 0


def _absolute_paths(param, job: SolverJob) -> None:
    """Net files named by a copied solver must still be found from its new folder."""
    if param.train_net and job.train_net_file is not None:
        param.train_net = str(job.train_net_file.resolve())
    if param.net and job.train_net_file is not None:
        param.net = str(job.train_net_file.resolve())
    for i, f in enumerate(job.test_net_files[: len(param.test_net)]):
        if f is not None:
            param.test_net[i] = str(f.resolve())


# ----------------------------------------------------------------------------- torch


def train_torch(
    job: SolverJob,
    args: argparse.Namespace,
    gpus: list[int],
    state: str | None,
    log_file: Path,
    argv: list[str],
) -> int:
    """Train in this process (or as one rank of a torchrun job), or launch a local job."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ModelLibsError(
            "--engine torch needs PyTorch: pip install 'model_libs[torch]' (torch==2.13.0)"
        ) from None
    from ..pytorch.distributed import DistContext, launch_local

    ctx = DistContext.from_env()
    device = "cuda" if gpus else (args.device or "cpu")
    nproc = args.nproc or max(len(gpus), 1)
    if nproc > 1 and not ctx.distributed and not os.environ.get(LAUNCHED):
        ctx.device(device)  # no CUDA: the error comes now, not from every rank
        env = {LAUNCHED: "1"}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        rest = _without(argv, "--gpus", "--nproc", "--device")
        return launch_local(nproc, ["train", *rest, "--device", device], env)
    return run_torch(job, args, device, state, log_file, ctx)


def _without(argv: list[str], *flags: str) -> list[str]:
    """``argv`` less the given flags and their values (``--flag v`` or ``--flag=v``)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in flags:
            skip = True
            continue
        if any(a.startswith(f + "=") for f in flags):
            continue
        out.append(a)
    return out


def run_torch(
    job: SolverJob, args: argparse.Namespace, device: str, state: str | None, log_file: Path, ctx
) -> int:
    """One rank: build the trainer, then train, logging to ``log_file`` (rank 0)."""
    from ..pytorch.trainer import TrainOptions
    from .train import Progress, run_torch_job

    opts = TrainOptions(
        device=device,
        amp=args.amp,
        weights=args.weights,
        resume=state,
        sync_bn=args.sync_bn,
        workers=args.workers,
        accum_batch=args.accum_batch,
    )
    progress = Progress(job.max_iter, echo=args.verbose) if ctx.is_root else None
    run_torch_job(job, opts, log_file, progress, ctx)
    return 0
