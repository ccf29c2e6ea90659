"""``python -m model_libs inspect LMDB``: count, validate every record, draw a few."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

from ..cli import COUNT, NONNEGATIVE, PROG, emit_error, make_parser, run
from ..errors import ModelLibsError


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser(
        f"{PROG} inspect",
        "Check an LMDB of AnnotatedDatum records: every image decodes, every box "
        "is valid; optionally draw the first N records with their boxes to PNG.",
    )
    ap.add_argument("lmdb", help="LMDB folder")
    ap.add_argument("--labelmap", help="LabelMap prototxt: check labels, name the boxes")
    ap.add_argument("--limit", type=COUNT, default=None, help="check only the first N records")
    ap.add_argument("--draw", type=NONNEGATIVE, default=0, metavar="N", help="draw the first N records")
    ap.add_argument("--out", help="folder for the drawn PNGs (with --draw)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when every record is valid, 1 otherwise."""
    return run(argv, build_parser, _inspect)


def _inspect(args: argparse.Namespace) -> int:
    if args.draw and not args.out:
        raise ModelLibsError("--draw needs --out DIR for the PNGs")
    if args.out and not args.draw:
        raise ModelLibsError("--out is only used with --draw N (how many records to draw)")
    from ..fsutil import Output, is_png
    from .inspect import draw_records, labels_of, validate_lmdb

    with contextlib.ExitStack() as stack:
        if args.draw:  # checked and locked before the records are read
            stack.enter_context(
                Output(
                    args.out,
                    kind="folder",
                    what="drawing",
                    inputs=[args.lmdb, args.labelmap],
                    recognise=is_png,
                )
            )
        rep = validate_lmdb(args.lmdb, args.labelmap, args.limit)
        print(rep.summary(labels_of(args.labelmap)))
        if args.draw:
            paths = draw_records(args.lmdb, args.out, args.draw, args.labelmap)
            print(f"drew {len(paths)} records to {args.out}")
    if rep.records == 0:
        emit_error(f"{args.lmdb}: the LMDB holds no records")
    return 0 if rep.ok else 1
