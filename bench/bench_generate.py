#!/usr/bin/env python3
"""Benchmark: generating every DSOD variant's train/test/deploy nets and solver.

Prints, per model, the time to build the four protos and to render them as text, and the
total for all five models (goal: well under a second). One command:
    python bench/bench_generate.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_libs.dsod import MODELS, recipe
from model_libs.dsod.nets import render_nets


def main(repeats: int = 5) -> None:
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


if __name__ == "__main__":
    main()
