"""Benchmark: images/s of the PyTorch AnnotatedData path vs. the project's Caffe data layer.

    python bench/bench_data.py [--records 48] [--batches 10] [--workers 0 1 2] [--no-caffe] [--json F]

Two transforms, each on an LMDB of JPEG records made in a temporary folder:

- ``ssd300``: DSOD300's training data layer (distortion, expansion up to 4x, SSD's seven
  batch samplers, random interpolation, mirror, 300 x 300) on VOC-sized images (500 x 375
  and 375 x 500) with 1-6 objects;
- ``light128``: the quickstart's (mirror, bilinear warp to 128 x 128, the trivial sampler) on
  the synthetic set's images (192-256 pixels a side).

For the PyTorch path: batches per second through ``make_loader`` with 0 (in process), 1, 2
... worker processes, the decoded-image cache on and off; for Caffe: an AnnotatedData-only
net's ``forward`` (its prefetch thread does the work). Prints images/s and torch/Caffe.
The first batch (worker start-up, cache fill) is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from model_libs.cli import make_parser, run
from model_libs.datasets.annotated_datum import Box, build_annotated_datum
from model_libs.datasets.lmdb_io import write_lmdb
from model_libs.datasets.synthetic import render_image
from model_libs.dsod.data_layer import MEAN_BGR, ssd_batch_sampler, train_transform
from model_libs.netspec import assign_proto, to_prototxt
from model_libs.proto import caffe_pb2


def make_lmdb(path: Path, n: int, voc_size: bool) -> Path:
    """n JPEG records of synthetic scenes, resized to VOC's 500 x 375 / 375 x 500 if asked."""
    records = []
    for i in range(n):
        img, objs = render_image(0, i)
        h0, w0 = img.shape[:2]
        if voc_size:
            w, h = (500, 375) if i % 4 else (375, 500)
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        boxes = [
            Box(1 + k % 5, (o.xmin - 1) / w0, (o.ymin - 1) / h0, o.xmax / w0, o.ymax / h0)
            for k, o in enumerate(objs)
        ]
        records.append((f"{i:08d}", build_annotated_datum(buf.tobytes(), boxes).SerializeToString()))
    write_lmdb(path, records)
    return path


def data_layer(
    name: str, source: Path, batch: int, transform: dict, samplers: list[dict]
) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter(name=name, type="AnnotatedData", top=["data", "label"])
    layer.include.add(phase=caffe_pb2.TRAIN)
    layer.data_param.source = str(source)
    layer.data_param.batch_size = batch
    layer.data_param.backend = caffe_pb2.DataParameter.LMDB
    assign_proto(layer, "transform_param", transform)
    assign_proto(layer.annotated_data_param, "batch_sampler", samplers)
    return layer


def light_transform(size: int) -> dict:
    rp = {"resize_mode": caffe_pb2.ResizeParameter.WARP, "height": size, "width": size, "interp_mode": [1]}
    return {"mirror": True, "mean_value": list(MEAN_BGR), "resize_param": rp}


def torch_rate(layer, workers: int, batches: int, cache: bool) -> float:
    from model_libs.pytorch.data import make_loader

    loader = make_loader(
        layer, seed=0, num_workers=workers, num_batches=batches + 1, cache_bytes=(512 << 20) * cache
    )
    it = iter(loader)
    n0 = next(it)[0].shape[0]  # start-up
    t0 = time.perf_counter()
    n = sum(data.shape[0] for data, _ in it)
    assert n == batches * n0
    return n / (time.perf_counter() - t0)


def caffe_rate(layer, batches: int, tmp: Path) -> float | None:
    """Caffe's rate, measured in a child process: forking DataLoader workers from a process
    where Caffe's prefetch threads run could deadlock them."""
    net_param = caffe_pb2.NetParameter(name="bench_data")
    net_param.layer.add().CopyFrom(layer)
    path = tmp / f"{layer.name}.prototxt"
    path.write_text(to_prototxt(net_param) + "\n")
    res = subprocess.run(
        [sys.executable, __file__, "--caffe-net", str(path), "--batches", str(batches)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        print(f"(Caffe not measured: {res.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    return float(res.stdout.strip().splitlines()[-1])


def _caffe_child(path: str, batches: int) -> int:
    from model_libs.caffe_env import import_caffe

    caffe = import_caffe()
    caffe.set_mode_cpu()
    net = caffe.Net(path, caffe.TRAIN)
    net.forward()  # start-up
    t0 = time.perf_counter()
    for _ in range(batches):
        net.forward()
    print(batches * net.blobs["data"].data.shape[0] / (time.perf_counter() - t0))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser("bench_data.py", __doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=48)
    ap.add_argument("--batches", type=int, default=10, help="timed batches of 8 per measurement")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-caffe", action="store_true")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    ap.add_argument("--caffe-net", help=argparse.SUPPRESS)  # internal: the Caffe measurement
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(argv, build_parser, _bench)


def _bench(args: argparse.Namespace) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    if args.caffe_net:
        return _caffe_child(args.caffe_net, args.batches)
    results: dict = {"cpus": os.cpu_count(), "records": args.records, "batch": 8, "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        voc = make_lmdb(tmp / "voc_lmdb", args.records, True)
        synth = make_lmdb(tmp / "synth_lmdb", args.records, False)
        configs = [
            ("ssd300", data_layer("ssd300", voc, 8, train_transform(300, 300), ssd_batch_sampler())),
            ("light128", data_layer("light128", synth, 8, light_transform(128), [{}])),
        ]
        print(f"{'transform':<10}{'engine':<26}{'images/s':>10}{'torch/caffe':>13}")
        for name, layer in configs:
            ref = None if args.no_caffe else caffe_rate(layer, args.batches, tmp)
            if ref is not None:
                print(f"{name:<10}{'caffe (prefetch thread)':<26}{ref:>10.1f}{'1.00':>13}")
                results["rows"].append({"transform": name, "engine": "caffe", "images_per_s": round(ref, 1)})
            for workers in args.workers:
                for cache in (True, False):
                    rate = torch_rate(layer, workers, args.batches, cache)
                    plural = "s" if workers != 1 else ""
                    label = f"torch, {workers} worker{plural}, cache {'on' if cache else 'off'}"
                    ratio = f"{rate / ref:.2f}" if ref else "-"
                    print(f"{name:<10}{label:<26}{rate:>10.1f}{ratio:>13}")
                    results["rows"].append(
                        {
                            "transform": name,
                            "engine": "torch",
                            "workers": workers,
                            "cache": cache,
                            "images_per_s": round(rate, 1),
                            "ratio_to_caffe": round(rate / ref, 2) if ref else None,
                        }
                    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
