#!/usr/bin/env python3
"""Benchmark: generating every DSOD variant's train/test/deploy nets and solver.

Prints, per model, the time to build the four protos and to render them as text, and the
total for all five models (goal: well under a second). One command:
    python bench/bench_generate.py
"""

import sys
import time

from model_libs.cli import make_parser, run
from model_libs.dsod import MODELS, recipe
from model_libs.dsod.nets import render_nets


def build_parser():
    ap = make_parser("bench_generate.py", __doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs per model; the best counts (default 5)")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(argv, build_parser, lambda args: _bench(args.repeats))


def _bench(repeats: int) -> int:
    rows, total = [], 0.0
    for model in MODELS:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            texts = render_nets(recipe(model), "/tmp/bench_out", gpus=list(range(8)))
            best = min(best, time.perf_counter() - t0)
        total += best
        rows.append((model, best, sum(len(t) for t in texts.values())))
    print(f"{'model':<18}{'train+test+deploy+solver':>26}{'prototxt bytes':>16}")
    for model, t, size in rows:
        print(f"{model:<18}{t * 1000:>23.1f} ms{size:>16,}")
    print(
        f"{'all five models':<18}{total * 1000:>23.1f} ms  (best of {repeats}; goal < 1000 ms, "
        f"ratio to goal {total:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
