"""``python -m model_libs score``: score a snapshot as the official DSOD scoring scripts do.

Caffe runs the test net once over the test set (``max_iter: 0`` with test initialisation):
DetectionEvaluate gives the solver's mAP; DetectionOutput's VOC result files give the
toolkit's per-class AP (see :mod:`model_libs.recipes.score`). Without ``--weights`` the
newest snapshot of the job in ``--out`` is scored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..cli import PROG, make_parser, run
from ..dsod.models import MODELS
from ..dsod.nets import job_files
from ..errors import ModelLibsError
from .cli import add_recipe_arguments, find_caffe_binary, recipe_from_args
from .snapshots import newest_complete_snapshot


def build_parser(
    prog: str = f"{PROG} score", dataset: str | None = None, models: Sequence[str] = MODELS
) -> argparse.ArgumentParser:
    where = f"the {dataset} test set" if dataset else "its dataset's test set"
    ap = make_parser(prog, f"Score a DSOD snapshot on {where} (Caffe's mAP and per-class AP).")
    add_recipe_arguments(
        ap,
        dataset,
        models,
        gpus_default="cpu",
        gpus_help="GPU ids for scoring (default: cpu)",
        out_help="the training job's folder; scoring files go to <out>/score",
    )
    ap.add_argument(
        "--weights", default=None, help="caffemodel to score (default: the job's newest snapshot in --out)"
    )
    ap.add_argument(
        "--caffe", default=None, help="caffe binary (default: the toolkit's Caffe or $CAFFE_ROOT)"
    )
    ap.add_argument("--verbose", action="store_true", help="also print Caffe's raw log lines")
    return ap


def score_args(args: argparse.Namespace, dataset: str | None = None, models: Sequence[str] = MODELS) -> int:
    """Score what the arguments name; prints the table, the result folder and ``mAP <value>``."""
    r, out, gpus = recipe_from_args(args, dataset, models)
    weights = args.weights
    if weights is None:
        choice = newest_complete_snapshot(job_files(r, out)["snapshot_prefix"], state_check=None)
        if choice.snapshot is None:
            raise ModelLibsError(f"{out}: no complete snapshot of {r.model_name}; give --weights")
        print(f"scoring {choice.describe()}", file=sys.stderr)
        weights = choice.snapshot.model
    from .score import score

    result = score(r, weights, out / "score", find_caffe_binary(args.caffe, gpus), gpus, echo=args.verbose)
    print(result.table())
    print(f"VOC-format results: {result.result_dir}")
    print(f"mAP {result.caffe_map:.4f}")
    return 0


def main(
    argv: Sequence[str] | None = None,
    dataset: str | None = None,
    models: Sequence[str] = MODELS,
    prog: str = f"{PROG} score",
) -> int:
    """Entry point of ``python -m model_libs score`` and of the example scoring scripts."""
    return run(argv, lambda: build_parser(prog, dataset, models), lambda a: score_args(a, dataset, models))
