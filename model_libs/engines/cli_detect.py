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
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli import COUNT, PROBABILITY, PROG, bounded, make_parser, run
from ..fsutil import Output, is_json_file, is_png, shown
from .detector import DSOD_MEAN_BGR, Detector, list_images, read_image
from .draw import draw


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser(f"{PROG} detect", "Detect objects with a DSOD deploy net (no Caffe needed).")
    ap.add_argument("--deploy", required=True, help="deploy prototxt")
    ap.add_argument("--weights", required=True, help="caffemodel")
    ap.add_argument("--engine", choices=["auto", "opencv", "caffe", "torch"], default="auto")
    ap.add_argument("--labelmap", help="LabelMap prototxt for class names")
    ap.add_argument("--threshold", type=PROBABILITY, default=0.5, help="minimum score (default 0.5)")
    ap.add_argument(
        "--batch",
        type=COUNT,
        default=1,
        help="images per forward pass (default 1; larger is not faster on CPU)",
    )
    ap.add_argument(
        "--mean", type=bounded(float), nargs=3, default=list(DSOD_MEAN_BGR), metavar=("B", "G", "R")
    )
    ap.add_argument("--scale", type=bounded(float, 0, lo_open=True), default=1.0)
    ap.add_argument("--draw", metavar="DIR", help="write images with boxes as DIR/<stem>.png")
    ap.add_argument("--json", metavar="OUT", help="write all detections as JSON")
    ap.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m model_libs detect``."""
    return run(argv, build_parser, _detect)


def _draw_names(paths: Sequence[Path]) -> list[str]:
    """``<stem>.png`` per image, numbered where two folders hold the same file name."""
    used: set[str] = set()
    names = []
    for path in paths:
        stem, k = path.stem, 1
        while stem in used:
            k += 1
            stem = f"{path.stem}_{k}"
        used.add(stem)
        names.append(f"{stem}.png")
    return names


def _detect(args: argparse.Namespace) -> int:
    paths = list_images(args.images)
    inputs = [args.deploy, args.weights, args.labelmap, *paths]
    with contextlib.ExitStack() as stack:
        # Outputs are checked (and locked) before the net is loaded or an image is read.
        json_out = draw_out = None
        if args.json:
            json_out = stack.enter_context(
                Output(args.json, what="detections JSON", inputs=inputs, recognise=is_json_file)
            )
        names = _draw_names(paths)
        if args.draw:
            draw_out = stack.enter_context(
                Output(args.draw, kind="folder", what="drawing", inputs=inputs, recognise=is_png)
            )
            for name in names:
                draw_out.check_file(name)
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
        records = []
        for start in range(0, len(paths), args.batch):
            chunk = paths[start : start + args.batch]
            images = [read_image(p) for p in chunk]
            for i, (path, image, dets) in enumerate(zip(chunk, images, det.detect(images))):
                for d in dets:
                    print(
                        f"{shown(path)}\t{d.label}\t{d.name}\t{d.score:.4f}\t"
                        + "\t".join(f"{v:.1f}" for v in d.box)
                    )
                records.append(
                    {
                        "image": shown(path),
                        "width": image.shape[1],
                        "height": image.shape[0],
                        "detections": [d.to_dict() for d in dets],
                    }
                )
                if draw_out is not None:
                    import cv2

                    _, png = cv2.imencode(".png", draw(image, dets))
                    draw_out.write_bytes(png.tobytes(), names[start + i])
        if json_out is not None:
            doc = {"engine": det.engine_name, "threshold": args.threshold, "images": records}
            json_out.write_text(json.dumps(doc, indent=1) + "\n")
    n = sum(len(r["detections"]) for r in records)
    print(f"{n} detections in {len(records)} images", file=sys.stderr)
    return 0
