"""``python -m model_libs convert {voc,coco} ...``: thin argparse over the converters."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..cli import COUNT, PROG, SEED, make_parser, run
from ..errors import ModelLibsError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output LMDB folder")
    p.add_argument("--labelmap", help="LabelMap prototxt (default: the dataset's own)")
    p.add_argument("--name-size", help="also write 'name height width' per image here")
    p.add_argument("--shuffle", action="store_true", help="shuffle the image list (seeded)")
    p.add_argument("--seed", type=SEED, default=0, help="shuffle seed (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing --out/--name-size")
    p.add_argument("--workers", type=COUNT, default=None, help="decode threads (default: CPUs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser(f"{PROG} convert", "Convert a detection dataset to an SSD Caffe LMDB of AnnotatedDatum.")
    sub = ap.add_subparsers(dest="dataset", required=True)
    voc = sub.add_parser("voc", help="PASCAL VOC (VOCdevkit layout)")
    voc.add_argument("--root", required=True, help="VOCdevkit folder (holds VOC2007/, ...)")
    voc.add_argument(
        "--sets", required=True, help="comma list of DATASET:SPLIT, e.g. VOC2007:trainval,VOC2012:trainval"
    )
    voc.add_argument(
        "--allow-unannotated",
        action="store_true",
        help="images without an XML become records without boxes (VOC12 test)",
    )
    _common(voc)
    coco = sub.add_parser("coco", help="COCO instances / image_info JSON")
    coco.add_argument("--annotations", required=True, help="instances_*.json")
    coco.add_argument("--images", required=True, help="folder holding the JSON's file_names")
    coco.add_argument(
        "--key-prefix",
        default=None,
        help="folder name used in record keys (default: the --images folder name)",
    )
    coco.add_argument(
        "--skip-crowd",
        action="store_true",
        help="drop iscrowd boxes (default: keep them flagged difficult, as upstream)",
    )
    _common(coco)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; prints one summary line."""
    return run(argv, build_parser, _convert)


def _convert(args: argparse.Namespace) -> int:
    progress = None if not args.no_progress else False
    if args.workers is not None and args.workers < 1:
        raise ModelLibsError(f"--workers must be at least 1 (got {args.workers})")
    if args.dataset == "voc":
        from .voc import convert_voc

        stats = convert_voc(
            args.root,
            args.sets,
            args.out,
            labelmap=args.labelmap,
            name_size=args.name_size,
            shuffle=args.shuffle,
            seed=args.seed,
            force=args.force,
            allow_unannotated=args.allow_unannotated,
            progress=progress,
            workers=args.workers,
        )
    else:
        from .coco import convert_coco

        stats = convert_coco(
            args.annotations,
            args.images,
            args.out,
            labelmap=args.labelmap,
            name_size=args.name_size,
            key_prefix=args.key_prefix,
            skip_crowd=args.skip_crowd,
            shuffle=args.shuffle,
            seed=args.seed,
            force=args.force,
            progress=progress,
            workers=args.workers,
        )
    print(stats.summary())
    if stats.name_size:
        print(f"{stats.name_size}: {stats.images} lines (name height width)")
    sys.stdout.flush()
    return 0
