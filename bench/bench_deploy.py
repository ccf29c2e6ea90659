"""Benchmark the inference engines on a DSOD deploy net, side by side, in one run.

    python bench/bench_deploy.py [--model DSOD300] [--batches 1 8] [--seconds 8] [--json OUT]

For each engine (OpenCV DNN; Caffe when pycaffe is importable; the PyTorch engine when
torch is) and batch size: images/s,
achieved GFLOP/s (FLOPs per image from ``model_libs.summary.summarize(...).flops``,
multiply-add = 2) and the ratio to the machine's peak FP32 rate. Random weights (seeded);
each configuration gets one warm-up pass, then timed passes until ``--seconds`` have
elapsed (at least 2). Rates use the median pass time; the best pass is shown too. On a
shared VM the figures move between runs (a 1.7x spread was seen here): compare engines
within one run.

Peak FP32 = cores x GHz x FLOPs/cycle/core, with cores = logical CPUs usable by this
process, GHz = the largest "cpu MHz" in /proc/cpuinfo (nominal clock; turbo ignored), and
FLOPs/cycle/core from the ISA flags: avx512f -> 32, avx2 + fma -> 16, avx -> 8 (sse -> 4);
i.e. one SIMD FMA per cycle of the widest vector (2 FLOPs x lanes). This matches AMD Zen 4
(two 256-bit FMA pipes; AVX-512 double-pumped = 32); CPUs with two 512-bit FMA units
(Intel Xeon Gold/Platinum) peak at 64, so the ratio would be halved there.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from model_libs.cli import make_parser, run
from model_libs.dsod import deploy_net, recipe
from model_libs.engines.caffe_engine import caffe_available
from model_libs.engines.caffemodel import caffemodel_bytes
from model_libs.engines.init import init_weights
from model_libs.engines.torch_engine import torch_available
from model_libs.summary import summarize


def cpu_peak() -> dict:
    """Peak FP32 GFLOP/s estimate from /proc/cpuinfo (see module docs for the formula)."""
    flags: set[str] = set()
    mhz = 0.0
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "flags" and not flags:
                flags = set(value.split())
            elif key == "cpu MHz":
                mhz = max(mhz, float(value))
            elif key == "model name":
                model = value.strip()
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if "avx512f" in flags:
        per_cycle, isa = 32, "avx512f"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 16, "avx2+fma"
    elif "avx" in flags:
        per_cycle, isa = 8, "avx"
    else:
        per_cycle, isa = 4, "sse"
    ghz = mhz / 1000
    return {
        "cpu": model,
        "cores": cores,
        "ghz": ghz,
        "isa": isa,
        "flops_per_cycle": per_cycle,
        "peak_gflops": cores * ghz * per_cycle,
    }


def time_engine(engine, batch: int, seconds: float, shape: list[int]) -> dict:
    x = np.random.default_rng(0).normal(0, 60, (batch, *shape[1:])).astype(np.float32)
    engine.forward(x)  # warm-up (allocation, kernel selection)
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < 2 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        engine.forward(x)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "passes": len(times),
        "seconds_per_pass": med,
        "best_seconds_per_pass": min(times),
        "images_per_s": batch / med,
    }


def build_parser():
    ap = make_parser("bench_deploy.py", __doc__.split("\n\n")[0])
    ap.add_argument("--model", default="DSOD300")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per configuration")
    ap.add_argument("--engines", nargs="+", default=["opencv", "caffe", "torch"])
    ap.add_argument("--json", help="also write the results as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(argv, build_parser, _bench)


def _bench(args) -> int:

    import cv2

    deploy = deploy_net(recipe(args.model))
    weights = caffemodel_bytes(init_weights(deploy, seed=0, randomize=True))
    s = summarize(deploy)
    flops = s.flops  # per image (the deploy net has batch 1)
    peak = cpu_peak()
    print(
        f"model {args.model} deploy, input {'x'.join(map(str, s.blob_shapes['data']))}, "
        f"{flops / 1e9:.2f} GFLOPs/image (multiply-add = 2)"
    )
    print(
        f"CPU: {peak['cpu']}, {peak['cores']} cores x {peak['ghz']:.3f} GHz x "
        f"{peak['flops_per_cycle']} FP32 FLOPs/cycle ({peak['isa']}) "
        f"= peak {peak['peak_gflops']:.1f} GFLOP/s"
    )
    print(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads")

    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        wpath = Path(tmp, "w.caffemodel")
        wpath.write_bytes(weights)
        for name in args.engines:
            if name == "caffe" and not caffe_available():
                print("caffe: not importable here; skipped (build the project's Caffe to compare)")
                results.append({"engine": "caffe", "available": False})
                continue
            if name == "torch" and not torch_available():
                print("torch: PyTorch is not installed here; skipped")
                results.append({"engine": "torch", "available": False})
                continue
            if name == "opencv":
                from model_libs.engines.opencv_engine import OpenCVEngine as Eng
            elif name == "torch":
                from model_libs.engines.torch_engine import TorchEngine as Eng
            else:
                from model_libs.engines.caffe_engine import CaffeEngine as Eng
            t0 = time.perf_counter()
            engine = Eng(deploy, wpath)
            load_s = time.perf_counter() - t0
            for b in args.batches:
                r = time_engine(engine, b, args.seconds, s.blob_shapes["data"])
                gflops = r["images_per_s"] * flops / 1e9
                results.append(
                    {
                        "engine": name,
                        "available": True,
                        "batch": b,
                        "load_s": load_s,
                        **r,
                        "gflops": gflops,
                        "peak_ratio": gflops / peak["peak_gflops"],
                    }
                )

    rows = [("engine", "batch", "passes", "ms/pass", "best ms", "images/s", "GFLOP/s", "of peak")]
    for r in results:
        if r["available"]:
            rows.append(
                (
                    r["engine"],
                    str(r["batch"]),
                    str(r["passes"]),
                    f"{r['seconds_per_pass'] * 1e3:.0f}",
                    f"{r['best_seconds_per_pass'] * 1e3:.0f}",
                    f"{r['images_per_s']:.2f}",
                    f"{r['gflops']:.1f}",
                    f"{100 * r['peak_ratio']:.1f}%",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    ok = [r for r in results if r["available"]]
    by = {(r["engine"], r["batch"]): r["images_per_s"] for r in ok}
    for b in args.batches:
        if ("opencv", b) in by and ("caffe", b) in by:
            print(f"batch {b}: OpenCV / Caffe = {by[('opencv', b)] / by[('caffe', b)]:.2f}x")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": args.model,
                    "gflops_per_image": flops / 1e9,
                    "cpu": peak,
                    "opencv": cv2.__version__,
                    "results": results,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
