"""``python -m model_libs plot LOG [--out PNG]``: a Caffe training log as a table and a plot."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

from ..cli import PROG, make_parser, run
from ..fsutil import Output, is_png
from .caffelog import log_table, parse_log, plot_log


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser(f"{PROG} plot", "Parse a Caffe training log: table and PNG plot.")
    ap.add_argument("log", help="Caffe training log (the job's <model_name>.log)")
    ap.add_argument("--out", default=None, help="PNG to write (loss, learning rate, test mAP)")
    return ap


def _plot(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        if args.out:  # checked and locked before the log is read
            stack.enter_context(Output(args.out, what="plot", inputs=[args.log], recognise=is_png))
        log = parse_log(args.log)
        print(log_table(log))
        if args.out:
            print(f"wrote {plot_log(log, args.out, title=args.log, inputs=[args.log])}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m model_libs plot``."""
    return run(argv, build_parser, _plot)
