"""``python -m model_libs weights init|show|check``: caffemodel files without Caffe.

- ``weights init --deploy D --out W [--seed S] [--legacy]``: an untrained caffemodel whose
  blobs follow the deploy net's fillers;
- ``weights show W [--limit N]``: one row per blob (shape, count, min/max/mean/std), totals;
- ``weights check --deploy D W``: layers missing/extra and blob shape mismatches; exit
  status 1 when the caffemodel does not fit the net.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..cli import COUNT, NONNEGATIVE, PROG, SEED, make_parser, run
from ..fsutil import Output
from ..summary import load_net
from .caffemodel import caffemodel_bytes, check, is_caffemodel, read_caffemodel, weight_table
from .init import init_weights


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser(f"{PROG} weights", "Create, list and check caffemodel files.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init", help="write an untrained caffemodel from the deploy net's fillers")
    p.add_argument("--deploy", required=True, help="deploy prototxt")
    p.add_argument("--out", required=True, help="caffemodel to write")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--legacy", action="store_true", help="store blob shapes in the legacy 4-D form")
    p.add_argument(
        "--randomize", action="store_true", help="perturb BatchNorm statistics and scales (for engine tests)"
    )
    p = sub.add_parser("show", help="list the blobs of a caffemodel")
    p.add_argument("weights")
    p.add_argument("--limit", type=NONNEGATIVE, default=None, help="print at most this many blob rows")
    p = sub.add_parser("check", help="check a caffemodel against a deploy prototxt")
    p.add_argument("--deploy", required=True)
    p.add_argument("weights")
    p.add_argument("--limit", type=COUNT, default=10, help="problems listed per kind")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m model_libs weights``."""
    return run(argv, build_parser, _weights)


def _weights(args: argparse.Namespace) -> int:
    if args.cmd == "init":
        with Output(args.out, what="caffemodel", inputs=[args.deploy], recognise=is_caffemodel) as out:
            net = init_weights(
                load_net(args.deploy), seed=args.seed, randomize=args.randomize, legacy=args.legacy
            )
            path = out.write_bytes(caffemodel_bytes(net))
        n = sum(len(b.data) for layer in net.layer for b in layer.blobs)
        print(f"wrote {path}: {n:,} values, seed {args.seed}")
        return 0
    if args.cmd == "show":
        print(weight_table(read_caffemodel(args.weights), limit=args.limit))
        return 0
    report = check(load_net(args.deploy), read_caffemodel(args.weights))
    print(report.text(limit=args.limit))
    return 0 if report.ok else 1
