"""``python -m model_libs synthetic --out DIR``: make the built-in shapes dataset."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from ..cli import COUNT, PROG, SEED, make_parser, run


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser(
        f"{PROG} synthetic",
        "Generate the deterministic synthetic detection set (VOC layout) and, "
        "unless --no-lmdb, its train/test LMDBs, test_name_size.txt and label map.",
    )
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    ap.add_argument("--train", type=COUNT, default=400, help="training images (default 400)")
    ap.add_argument("--test", type=COUNT, default=100, help="test images (default 100)")
    ap.add_argument("--no-lmdb", action="store_true", help="only the VOC-layout files")
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Generate; prints what was written."""
    return run(argv, build_parser, _generate)


def _generate(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.no_lmdb:
        from .synthetic import make_synthetic

        s = make_synthetic(args.out, args.seed, args.train, args.test, force=args.force)
        print(
            f"{s.root}: {s.n_train} train + {s.n_test} test images, {s.n_objects} objects "
            f"in {time.perf_counter() - t0:.1f}s (VOC layout under {s.root / s.dataset})"
        )
        print(f"label map: {s.labelmap}")
        return 0
    from .synthetic import build_synthetic_lmdbs

    b = build_synthetic_lmdbs(args.out, args.seed, args.train, args.test, force=args.force)
    s = b.source
    print(
        f"{s.root}: {s.n_train} train + {s.n_test} test images, {s.n_objects} objects "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    print(f"train LMDB: {b.train_lmdb}\ntest LMDB:  {b.test_lmdb}")
    print(f"name/size:  {b.name_size}\nlabel map:  {b.labelmap}")
    return 0
