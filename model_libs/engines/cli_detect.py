"""``python -m model_libs detect``: run a DSOD deploy net on images.

::

    python -m model_libs detect --deploy D --weights W [--engine auto|opencv|caffe|torch]
        [--labelmap F] [--threshold T] [--batch N] [--draw DIR] [--json OUT] IMAGE_OR_DIR...

Prints one line per detection (``image label name score xmin ymin xmax ymax``, pixels),
optionally draws boxes with labels and scores into ``DIR/<image stem>.png`` and writes all
detections as JSON (``{"engine": ..., "images": [{"image", "width", "height",
"detections": [{"label", "name", "score", "box"}]}]}``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli import PROG, make_parser, run
from ..fsutil import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from .detector import DSOD_MEAN_BGR, Detector, list_images, read_image
from .draw import draw


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser(f"{PROG} detect", "Detect objects with a DSOD deploy net (no Caffe needed).")
    ap.add_argument("--deploy", required=True, help="deploy prototxt")
    ap.add_argument("--weights", required=True, help="caffemodel")
    ap.add_argument("--engine", choices=["auto", "opencv", "caffe", "torch"], default="auto")
    ap.add_argument("--labelmap", help="LabelMap prototxt for class names")
    ap.add_argument("--threshold", type=float, default=0.5, help="minimum score (default 0.5)")
    ap.add_argument(
        "--batch",
        type=int,
        default=1,
        help="images per forward pass (default 1; larger is not faster on CPU)",
    )
    ap.add_argument("--mean", type=float, nargs=3, default=list(DSOD_MEAN_BGR), metavar=("B", "G", "R"))
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--draw", metavar="DIR", help="write images with boxes as DIR/<stem>.png")
    ap.add_argument("--json", metavar="OUT", help="write all detections as JSON")
    ap.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m model_libs detect``."""
    return run(argv, build_parser, _detect)


def _detect(args: argparse.Namespace) -> int:
    paths = list_images(args.images)
    det = Detector(
        args.deploy,
        args.weights,
        engine=args.engine,
        labelmap=args.labelmap,
        mean=args.mean,
        scale=args.scale,
        batch_size=args.batch,
        threshold=args.threshold,
    )
    print(f"engine: {det.engine_name} ({det.engine_reason})", file=sys.stderr)
    draw_dir = ensure_writable_dir(args.draw) if args.draw else None
    records = []
    used: set[str] = set()
    for start in range(0, len(paths), args.batch):
        chunk = paths[start : start + args.batch]
        images = [read_image(p) for p in chunk]
        for path, image, dets in zip(chunk, images, det.detect(images)):
            for d in dets:
                print(f"{path}\t{d.label}\t{d.name}\t{d.score:.4f}\t" + "\t".join(f"{v:.1f}" for v in d.box))
            records.append(
                {
                    "image": str(path),
                    "width": image.shape[1],
                    "height": image.shape[0],
                    "detections": [d.to_dict() for d in dets],
                }
            )
            if draw_dir is not None:
                import cv2

                _, png = cv2.imencode(".png", draw(image, dets))
                stem, k = Path(path).stem, 1
                while stem in used:  # same file name in two folders
                    k += 1
                    stem = f"{Path(path).stem}_{k}"
                used.add(stem)
                atomic_write_bytes(draw_dir / f"{stem}.png", png.tobytes())
    if args.json:
        atomic_write_text(
            args.json,
            json.dumps({"engine": det.engine_name, "threshold": args.threshold, "images": records}, indent=1)
            + "\n",
        )
    n = sum(len(r["detections"]) for r in records)
    print(f"{n} detections in {len(records)} images", file=sys.stderr)
    return 0
