"""``python -m model_libs.recipes.plot LOG [--out PNG]``: a Caffe log as a table and a plot."""

from __future__ import annotations

import argparse
import sys

from ..errors import ModelLibsError
from .caffelog import log_table, parse_log, plot_log


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m model_libs.recipes.plot",
        description="Parse a Caffe training log: table and PNG plot.",
    )
    ap.add_argument("log")
    ap.add_argument("--out", default=None, help="PNG to write (loss, learning rate, test mAP)")
    args = ap.parse_args(argv)
    try:
        log = parse_log(args.log)
        print(log_table(log))
        if args.out:
            print(f"wrote {plot_log(log, args.out, title=args.log)}")
    except ModelLibsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
