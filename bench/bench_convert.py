"""Benchmark: images/s converting the synthetic set vs. the raw read+write ceiling.

    python bench/bench_convert.py [--train 400] [--test 100] [--repeat 3] [--workers N]

1. Generates the synthetic set (VOC layout) in a temporary folder.
2. Converter: ``convert_voc`` over all of its images (read JPEG + XML, parse and check the
   XML, decode the JPEG to verify it and its size, build and serialize the AnnotatedDatum,
   write the LMDB), best of ``--repeat`` runs.
3. Ceiling: the same files read as raw bytes (JPEG + XML) and written to an LMDB under the
   same keys, no parsing or decoding -- the I/O cost any converter must pay.
Prints both rates and converter/ceiling. Files are in the page cache for both (warm runs).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from model_libs.cli import make_parser, run
from model_libs.datasets.lmdb_io import write_lmdb
from model_libs.datasets.pipeline import default_workers
from model_libs.datasets.synthetic import make_synthetic
from model_libs.datasets.voc import convert_voc, list_split


def raw_copy(root: Path, items: list[tuple[str, str]], out: Path) -> float:
    """Seconds to read every image + XML as bytes and put them in a fresh LMDB."""
    t0 = time.perf_counter()

    def records():
        for i, (img, xml) in enumerate(items):
            data = (root / img).read_bytes() + (root / xml).read_bytes()
            yield f"{i:08d}_{img}", data

    write_lmdb(out, records(), force=True)
    return time.perf_counter() - t0


def build_parser():
    ap = make_parser("bench_convert.py", __doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="converter threads (default: CPUs)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(argv, build_parser, _bench)


def _bench(args) -> int:
    workers = args.workers or default_workers()

    with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        s = make_synthetic(tmp / "synth", args.seed, args.train, args.test)
        gen_s = time.perf_counter() - t0
        sets = f"{s.train_sets},{s.test_sets}"
        items = list_split(s.root, s.dataset, "trainval") + list_split(s.root, s.dataset, "test")
        n = len(items)
        nbytes = sum((s.root / a).stat().st_size + (s.root / b).stat().st_size for a, b in items)
        raw_copy(s.root, items, tmp / "warm")  # warm the page cache

        conv, conv1, raw = [], [], []
        for _ in range(args.repeat):
            st = convert_voc(
                s.root, sets, tmp / "conv", labelmap=s.labelmap, force=True, progress=False, workers=workers
            )
            conv.append(st.seconds)
            st1 = convert_voc(
                s.root, sets, tmp / "conv1", labelmap=s.labelmap, force=True, progress=False, workers=1
            )
            conv1.append(st1.seconds)
            raw.append(raw_copy(s.root, items, tmp / "raw"))

    res = {
        "images": n,
        "bytes": nbytes,
        "generate_s": round(gen_s, 3),
        "workers": workers,
        "cpus": os.cpu_count(),
        "convert_images_per_s": round(n / min(conv), 1),
        "convert_1thread_images_per_s": round(n / min(conv1), 1),
        "raw_read_write_images_per_s": round(n / min(raw), 1),
    }
    res["ratio_convert_to_raw"] = round(res["convert_images_per_s"] / res["raw_read_write_images_per_s"], 3)
    print(f"synthetic set: {n} images, {nbytes / 1e6:.1f} MB, generated in {gen_s:.2f}s")
    print(f"convert ({workers} threads):  {res['convert_images_per_s']:8.1f} images/s")
    print(f"convert (1 thread):   {res['convert_1thread_images_per_s']:8.1f} images/s")
    print(f"raw read+write:       {res['raw_read_write_images_per_s']:8.1f} images/s (ceiling)")
    print(f"ratio convert/raw:    {res['ratio_convert_to_raw']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
