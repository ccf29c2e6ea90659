"""``python -m model_libs layout [DATASET] [--data-root R] [--make SPLITS --source DIR]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..cli import PROG, make_parser, run
from ..errors import ModelLibsError
from .layout import LAYOUTS, layout, make, markdown_table


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser(
        f"{PROG} layout",
        "The official datasets' LMDBs, name/size lists and label maps (the table the recipes "
        "read); with --make, convert a VOCdevkit or COCO folder into them.",
    )
    ap.add_argument(
        "dataset", nargs="?", help=f"one of {', '.join(LAYOUTS)} (default: print the whole table)"
    )
    ap.add_argument("--data-root", default="data", help="folder holding <folder>/lmdb/... (default: data)")
    ap.add_argument("--make", default=None, help="comma list of splits to convert, e.g. train,test")
    ap.add_argument("--source", default=None, help="with --make: the VOCdevkit or COCO folder")
    ap.add_argument("--seed", type=int, default=0, help="shuffle seed of the training LMDB (default 0)")
    ap.add_argument("--force", action="store_true", help="replace existing LMDBs and lists")
    ap.add_argument("--skip-crowd", action="store_true", help="COCO: drop iscrowd boxes")
    ap.add_argument("--workers", type=int, default=None, help="decode threads (default: CPUs)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, build_parser, _layout)


def _layout(args: argparse.Namespace) -> int:
    if args.dataset is None:
        if args.make:
            raise ModelLibsError("--make needs a dataset")
        print(markdown_table(), end="")
        return 0
    lay = layout(args.dataset)
    if args.make is None:
        for name, s in lay.splits.items():
            print(f"{name}_lmdb: {lay.lmdb_path(name, args.data_root)}")
            ns = lay.name_size_path(name, args.data_root)
            if ns is not None:
                print(f"{name}_name_size: {ns}  ({s.images:,} images officially)")
        print(f"labelmap: {lay.labelmap_path}")
        return 0
    if not args.source:
        raise ModelLibsError("--make needs --source (the VOCdevkit or COCO folder)")
    if not Path(args.source).is_dir():
        raise ModelLibsError(f"{args.source}: no such folder (--source)")
    if args.workers is not None and args.workers < 1:
        raise ModelLibsError(f"--workers must be at least 1 (got {args.workers})")
    splits = [x.strip() for x in args.make.split(",") if x.strip()]
    for name in splits:
        lay.split(name)  # an unknown name fails before anything is converted
    make(
        lay,
        splits,
        args.source,
        args.data_root,
        seed=args.seed,
        force=args.force,
        skip_crowd=args.skip_crowd,
        workers=args.workers,
    )
    return 0
