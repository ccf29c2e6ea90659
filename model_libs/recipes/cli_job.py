"""``python -m model_libs job``: write an official DSOD job without running it.

The train/test/deploy/solver prototxts and the job script of ``--model`` on ``--dataset``,
as the official scripts write them (the example recipe scripts' ``--dry-run`` is this
command). Nothing is launched; run the job script, or ``python -m model_libs train``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..cli import PROG, make_parser, run
from ..dsod.models import MODELS
from .cli import add_job_arguments, add_recipe_arguments, recipe_from_args, write_job_from_args


def build_parser(prog: str = f"{PROG} job", dataset: str | None = None, models: Sequence[str] = MODELS):
    ap = make_parser(prog, "Write an official DSOD job: train/test/deploy/solver prototxts and job script.")
    add_recipe_arguments(ap, dataset, models)
    add_job_arguments(ap)
    return ap


def write(args: argparse.Namespace, dataset: str | None = None, models: Sequence[str] = MODELS) -> int:
    r, out, gpus = recipe_from_args(args, dataset, models)
    write_job_from_args(args, r, out, gpus, caffe_bin=args.caffe or "caffe")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m model_libs job``."""
    return run(argv, build_parser, write)
