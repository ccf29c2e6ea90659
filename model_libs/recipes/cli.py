"""Command line shared by the official-recipe scripts under ``examples/``.

``main(argv, dataset, models)`` parses the arguments, writes the job's nets, solver and
script, and (unless ``--dry-run``) trains with Caffe, resuming when asked.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..dsod.models import recipe
from ..dsod.nets import job_files
from ..errors import ModelLibsError
from .gpus import resolve_gpus
from .job import caffe_command, list_snapshots, prune_snapshots, write_job
from .train import run_caffe


def build_parser(prog: str, dataset: str, models: tuple[str, ...]) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog, description=f"Write (and run) the official DSOD job on {dataset}."
    )
    ap.add_argument("--model", default=models[0], help=f"one of {', '.join(models)} (default {models[0]})")
    ap.add_argument(
        "--gpus",
        default=None,
        help="GPU ids, e.g. 0,1,2,3 (default: all visible GPUs; CPU if none; 'cpu' forces CPU)",
    )
    ap.add_argument(
        "--out",
        default=None,
        help="folder for train/test/deploy/solver prototxts, job script, log and snapshots "
        "(default: jobs/<model>_<dataset>)",
    )
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
    ap.add_argument("--dry-run", action="store_true", help="write every file, launch nothing")
    ap.add_argument("--resume", action="store_true", help="continue from the newest solverstate")
    ap.add_argument("--weights", default=None, help="initialise from a caffemodel (fine-tuning)")
    ap.add_argument(
        "--prune-snapshots", action="store_true", help="before training, delete all snapshots but the newest"
    )
    ap.add_argument(
        "--caffe", default=None, help="caffe binary (default: the toolkit's Caffe or $CAFFE_ROOT)"
    )
    ap.add_argument("--verbose", action="store_true", help="also print Caffe's raw log lines")
    return ap


def main(argv: list[str] | None, dataset: str, models: tuple[str, ...], prog: str | None = None) -> int:
    """Entry point of an example script; returns the exit status."""
    ap = build_parser(prog or Path(sys.argv[0]).name, dataset, models)
    args = ap.parse_args(argv)
    try:
        return _run(args, dataset, models)
    except ModelLibsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, dataset: str, models: tuple[str, ...]) -> int:
    if args.model not in models:
        raise ModelLibsError(f"unknown model {args.model!r} for {dataset}; choose one of {', '.join(models)}")
    gpus = resolve_gpus(args.gpus)
    out = Path(args.out or f"jobs/{args.model}_{dataset}")
    r = recipe(args.model, dataset, data_root=args.data_root, out_dir=out.resolve(), size=args.size)
    if args.resume and args.weights:
        raise ModelLibsError("--resume and --weights exclude each other")
    snapshot = None
    if args.resume:
        snaps = list_snapshots(job_files(r, out.resolve())["snapshot_prefix"])
        if not snaps:
            raise ModelLibsError(f"--resume: no solverstate for {r.model_name} in {out}")
        snapshot = snaps[-1][1]
    caffe_bin = None
    if not args.dry_run:
        _check_inputs(r)
        caffe_bin = _caffe(args.caffe, gpus)
    job = write_job(r, out, gpus, caffe_bin=caffe_bin or "caffe", snapshot=snapshot, weights=args.weights)
    where = f"GPUs {','.join(map(str, gpus))}" if gpus else "CPU"
    written = ", ".join(job.files[k].name for k in ("train", "test", "deploy", "solver", "job"))
    print(f"{r.model_name}: wrote {written} in {job.out_dir} ({where})")
    if args.prune_snapshots:
        for f in prune_snapshots(job.snapshot_prefix, keep=1):
            print(f"removed old snapshot {f.name}")
    if args.dry_run:
        return 0
    cmd = caffe_command(caffe_bin, job.files["solver"], gpus, snapshot=snapshot, weights=args.weights)
    print("running: " + " ".join(cmd), file=sys.stderr)
    run_caffe(cmd, job.files["log"], r.max_iter, echo=args.verbose)
    return 0


def _check_inputs(r) -> None:
    for what, path in (
        ("training LMDB", r.train_data),
        ("test LMDB", r.test_data),
        ("label map", r.label_map_file),
    ):
        if not Path(path).exists():
            raise ModelLibsError(f"{what} not found: {path}")


def _caffe(explicit: str | None, gpus: list[int]) -> str:
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


def score_main(argv: list[str] | None, dataset: str, models: tuple[str, ...], prog: str | None = None) -> int:
    """Entry point of the scoring scripts: score a snapshot on the test LMDB."""
    ap = argparse.ArgumentParser(
        prog=prog or Path(sys.argv[0]).name, description=f"Score a DSOD snapshot on the {dataset} test set."
    )
    ap.add_argument("--model", default=models[0], help=f"one of {', '.join(models)}")
    ap.add_argument(
        "--weights",
        default=None,
        help="caffemodel to score (default: the newest snapshot of the job in --out)",
    )
    ap.add_argument("--out", default=None, help="the training job's folder (default: jobs/<model>_<dataset>)")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--gpus", default="cpu", help="GPU ids for scoring (default: cpu)")
    ap.add_argument("--caffe", default=None)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.model not in models:
            raise ModelLibsError(f"unknown model {args.model!r}; choose one of {', '.join(models)}")
        gpus = resolve_gpus(args.gpus)
        out = Path(args.out or f"jobs/{args.model}_{dataset}").resolve()
        r = recipe(args.model, dataset, data_root=args.data_root, out_dir=out, size=args.size)
        weights = args.weights
        if weights is None:
            snaps = [s for s in list_snapshots(job_files(r, out)["snapshot_prefix"]) if s[2]]
            if not snaps:
                raise ModelLibsError(f"no snapshot of {r.model_name} in {out}; give --weights")
            weights = snaps[-1][2]
        from .score import score

        result = score(r, weights, out / "score", _caffe(args.caffe, gpus), gpus, echo=args.verbose)
    except ModelLibsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.table())
    print(f"VOC-format results: {result.result_dir}")
    print(f"mAP {result.caffe_map:.4f}")
    return 0
