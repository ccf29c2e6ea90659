"""Command line of the official recipes: the arguments and steps that ``job``, ``score`` and
the example scripts under ``examples/`` share.

- :func:`add_recipe_arguments` / :func:`recipe_from_args`: which model on which dataset,
  where the job lives, its input size and GPUs;
- :func:`write_job_from_args`: write the nets, solver and job script (``job`` command,
  ``--dry-run`` of the scripts);
- :func:`main`: an example script's entry point: writes the job, then trains with Caffe
  unless ``--dry-run``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli import make_parser, run
from ..dsod.models import DATASETS, MODELS, recipe
from ..dsod.nets import job_files
from ..dsod.recipe import Recipe
from ..errors import ModelLibsError
from .gpus import resolve_gpus
from .job import Job, caffe_command, check_inputs, job_lock, prune_snapshots, write_job
from .snapshots import Snapshot, newest_complete_snapshot
from .train import run_caffe


def add_recipe_arguments(
    ap: argparse.ArgumentParser,
    dataset: str | None,
    models: Sequence[str],
    *,
    gpus_default: str | None = None,
    gpus_help: str = "GPU ids, e.g. 0,1,2,3 (default: all visible GPUs; CPU if none; 'cpu' forces CPU)",
    out_help: str = "the job's folder: prototxts, job script, log and snapshots",
) -> None:
    """--model, --dataset (when the caller does not fix it), --out, --data-root, --size, --gpus."""
    choices = f"one of {', '.join(models)} " if len(models) > 1 else ""
    ap.add_argument("--model", default=models[0], help=f"{choices}(default {models[0]})")
    if dataset is None:
        ap.add_argument(
            "--dataset", default=DATASETS[0], help=f"one of {', '.join(DATASETS)} (default {DATASETS[0]})"
        )
    ap.add_argument("--out", default=None, help=f"{out_help} (default: jobs/<model>_<dataset>)")
    ap.add_argument(
        "--data-root",
        default="data",
        help="folder holding <dataset>/lmdb/*_lmdb and the test name/size list (default: data)",
    )
    ap.add_argument(
        "--size",
        type=int,
        default=None,
        help="square input size (default: the model's own, e.g. 300); priors scale with it",
    )
    ap.add_argument("--gpus", default=gpus_default, help=gpus_help)


def recipe_from_args(
    args: argparse.Namespace, dataset: str | None, models: Sequence[str]
) -> tuple[Recipe, Path, list[int]]:
    """The recipe the arguments name, its job folder (absolute) and its GPU list."""
    dataset = dataset or args.dataset
    if args.model not in models:
        raise ModelLibsError(f"unknown model {args.model!r} for {dataset}; choose one of {', '.join(models)}")
    gpus = resolve_gpus(args.gpus)
    out = Path(args.out or f"jobs/{args.model}_{dataset}").resolve()
    r = recipe(args.model, dataset, data_root=args.data_root, out_dir=out, size=args.size)
    return r, out, gpus


def add_job_arguments(ap: argparse.ArgumentParser) -> None:
    """What the written job starts from: --resume, --weights, --caffe."""
    ap.add_argument("--resume", action="store_true", help="continue from the newest solverstate")
    ap.add_argument("--weights", default=None, help="initialise from a caffemodel (fine-tuning)")
    ap.add_argument(
        "--caffe", default=None, help="caffe binary (default: the toolkit's Caffe or $CAFFE_ROOT)"
    )


def write_job_from_args(
    args: argparse.Namespace, r: Recipe, out: Path, gpus: list[int], caffe_bin: str = "caffe"
) -> tuple[Job, Path | None]:
    """Write the job's files; returns the job and the solverstate it resumes from (if any)."""
    if args.resume and args.weights:
        raise ModelLibsError("--resume and --weights exclude each other")
    snapshot = None
    if args.resume:
        snapshot = resume_snapshot(job_files(r, out)["snapshot_prefix"]).state
    job = write_job(r, out, gpus, caffe_bin=caffe_bin, snapshot=snapshot, weights=args.weights)
    where = f"GPUs {','.join(map(str, gpus))}" if gpus else "CPU"
    written = ", ".join(job.files[k].name for k in ("train", "test", "deploy", "solver", "job"))
    print(f"{r.model_name}: wrote {written} in {job.out_dir} ({where})")
    return job, snapshot


def resume_snapshot(prefix: Path, **kwargs) -> Snapshot:
    """The newest complete snapshot of ``prefix`` for ``--resume`` (says which on stderr, and
    which damaged newer ones it passed over); an error when there is none. ``kwargs`` go to
    :func:`.snapshots.newest_complete_snapshot` (another trainer's state format)."""
    choice = newest_complete_snapshot(prefix, **kwargs)
    if choice.snapshot is None:
        why = f" (skipped: {'; '.join(r for _, r in choice.skipped)})" if choice.skipped else ""
        raise ModelLibsError(f"{prefix.parent}: --resume: no complete snapshot of {prefix.name}{why}")
    print(f"resuming from {choice.describe()}", file=sys.stderr)
    return choice.snapshot


def build_parser(prog: str, dataset: str, models: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of an official recipe script (write the job, then train)."""
    ap = make_parser(prog, f"Write (and run) the official DSOD job on {dataset}.")
    add_recipe_arguments(ap, dataset, models)
    ap.add_argument("--dry-run", action="store_true", help="write every file, launch nothing")
    add_job_arguments(ap)
    from .cli_train import add_engine_arguments

    add_engine_arguments(ap)
    ap.add_argument(
        "--prune-snapshots", action="store_true", help="before training, delete all snapshots but the newest"
    )
    ap.add_argument("--verbose", action="store_true", help="also print the raw log lines")
    return ap


def main(argv: Sequence[str] | None, dataset: str, models: Sequence[str], prog: str | None = None) -> int:
    """Entry point of an example recipe script; returns the exit status."""
    return run(
        argv,
        lambda: build_parser(prog or Path(sys.argv[0]).name, dataset, models),
        lambda args: _train(args, dataset, models),
    )


def _train(args: argparse.Namespace, dataset: str, models: Sequence[str]) -> int:
    from .cli_train import check_engine_arguments

    r, out, gpus = recipe_from_args(args, dataset, models)
    check_engine_arguments(args)
    with job_lock(out):  # one writer per job folder: a second run gets a clear error
        if args.engine == "torch":
            return _train_torch(args, r, out, gpus)
        return _train_locked(args, r, out, gpus)


def _train_locked(args: argparse.Namespace, r: Recipe, out: Path, gpus: list[int]) -> int:
    caffe_bin = None
    if not args.dry_run:
        if args.resume and args.weights:
            raise ModelLibsError("--resume and --weights exclude each other")
        check_inputs(r, ("train_data", "test_data", "label_map_file"))
        caffe_bin = find_caffe_binary(args.caffe, gpus)
    job, snapshot = write_job_from_args(args, r, out, gpus, caffe_bin or "caffe")
    if args.prune_snapshots:
        for f in prune_snapshots(job.snapshot_prefix, keep=1):
            print(f"removed old snapshot {f.name}")
    if args.dry_run:
        return 0
    cmd = caffe_command(caffe_bin, job.files["solver"], gpus, snapshot=snapshot, weights=args.weights)
    print("running: " + " ".join(cmd), file=sys.stderr)
    run_caffe(cmd, job.files["log"], r.max_iter, echo=args.verbose)
    return 0


def _train_torch(args: argparse.Namespace, r: Recipe, out: Path, gpus: list[int]) -> int:
    """The job written for ``gpus``, trained by the PyTorch engine (one process per GPU)."""
    from . import cli_train

    if not args.dry_run:
        check_inputs(r, ("train_data", "test_data", "label_map_file"))
    job, snapshot = write_job_from_args(args, r, out, gpus)
    if args.prune_snapshots:
        for f in prune_snapshots(job.snapshot_prefix, keep=1):
            print(f"removed old snapshot {f.name}")
    if args.dry_run:
        return 0
    argv = ["--solver", str(job.files["solver"]), "--engine", "torch", "--log", str(job.files["log"])]
    argv += ["--workers", str(args.workers)]
    if gpus:
        argv += ["--gpus", ",".join(map(str, gpus))]
    elif args.device:
        argv += ["--device", args.device]
    for flag, value in (
        ("--resume", snapshot),
        ("--weights", args.weights),
        ("--amp", args.amp),
        ("--nproc", args.nproc),
        ("--accum-batch", args.accum_batch),
    ):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--sync-bn"] * args.sync_bn + ["--verbose"] * args.verbose
    return cli_train.train(cli_train.build_parser().parse_args(argv), argv)


def find_caffe_binary(explicit: str | None, gpus: list[int]) -> str:
    """The caffe binary to run; refuses a GPU list on a CPU-only Caffe before anything starts."""
    if explicit:
        p = Path(explicit)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise ModelLibsError(f"--caffe {explicit}: not an executable file")
        return str(p)
    from ..caffe_env import caffe_binary, find_caffe

    inst = find_caffe()
    binary = caffe_binary()
    if gpus and inst is not None and inst.gpu is False:
        raise ModelLibsError(
            f"--gpus {','.join(map(str, gpus))} asks for GPUs, but the Caffe in use ({inst.root}) is "
            "CPU-only; pass --gpus cpu, or point CAFFE_ROOT at your own GPU build of SSD Caffe"
        )
    return str(binary)


__all__ = [
    "MODELS",
    "add_job_arguments",
    "add_recipe_arguments",
    "build_parser",
    "check_inputs",
    "find_caffe_binary",
    "main",
    "recipe_from_args",
    "resume_snapshot",
    "write_job_from_args",
]
