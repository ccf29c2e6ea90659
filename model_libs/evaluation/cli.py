"""``python -m model_libs eval``: score detections (VOC / COCO mAP) and compare runs.

eval voc (--root VOCDEVKIT --set VOC2007:test | --lmdb LMDB --labelmap FILE)
         --results DIR|FILE.json
         [--metric 11point|area] [--labelmap FILE] [--prefix comp4_det_test_]
         [--json OUT] [--plots DIR]
eval coco --annotations JSON --results JSON [--json OUT]
eval compare A.json B.json [--names A B] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli import PROG, bounded, make_parser, run
from ..errors import ModelLibsError
from ..fsutil import Output, is_png
from .report import is_report, report_json


def _parser() -> argparse.ArgumentParser:
    ap = make_parser(f"{PROG} eval", "Score saved detections and compare runs.")
    sub = ap.add_subparsers(dest="what", required=True)

    v = sub.add_parser("voc", help="VOC AP per class and mAP (devkit semantics)")
    v.add_argument("--root", help="VOCdevkit folder (holding VOC2007/)")
    v.add_argument("--set", dest="image_set", help="YEAR:SET, e.g. VOC2007:test")
    v.add_argument(
        "--lmdb", help="ground truth from an annotated LMDB instead of --root/--set (needs --labelmap)"
    )
    v.add_argument(
        "--results", required=True, help="folder of <prefix><class>.txt files, or a JSON list of detections"
    )
    v.add_argument(
        "--metric",
        choices=("11point", "area"),
        default="11point",
        help="11point (VOC2007, default) or area (VOC2010+)",
    )
    v.add_argument("--labelmap", help="LabelMap prototxt: the classes to evaluate")
    v.add_argument("--prefix", default="comp4_det_test_", help="result file name prefix")
    v.add_argument(
        "--iou", type=bounded(float, 0, 1, lo_open=True), default=0.5, help="overlap threshold (default 0.5)"
    )
    v.add_argument("--json", help="write {mAP, ap, ...} to this file")
    v.add_argument("--plots", help="write precision-recall PNGs into this folder")

    c = sub.add_parser("coco", help="COCO AP@[.5:.95], AP50, AP75, S/M/L via pycocotools")
    c.add_argument("--annotations", required=True, help="COCO instances JSON")
    c.add_argument("--results", required=True, help="COCO results JSON")
    c.add_argument("--json", help="write {mAP, ap, stats, ...} to this file")

    m = sub.add_parser("compare", help="per-class AP delta between two --json reports")
    m.add_argument("a", help="baseline report JSON")
    m.add_argument("b", help="new report JSON")
    m.add_argument("--names", nargs=2, metavar=("A", "B"), help="column titles")
    m.add_argument("--json", help="write the comparison to this file")
    return ap


def _voc(args: argparse.Namespace) -> int:
    from ..datasets.voc import parse_sets

    if args.lmdb:
        if args.root or args.image_set:
            raise ModelLibsError("give either --lmdb or --root/--set, not both")
        if not args.labelmap:
            raise ModelLibsError("--lmdb needs --labelmap (to name the LMDB's labels)")
    elif not (args.root and args.image_set):
        raise ModelLibsError("give --root and --set (e.g. --set VOC2007:test), or --lmdb")
    else:
        sets = parse_sets(args.image_set, option="--set")
        if len(sets) != 1:
            raise ModelLibsError(f"--set {args.image_set!r}: give one YEAR:SET, e.g. VOC2007:test")
    if not 0 < args.iou <= 1:
        raise ModelLibsError(f"--iou {args.iou}: must be in (0, 1]")
    inputs = [args.root, args.lmdb, args.labelmap, args.results]
    with contextlib.ExitStack() as stack:  # outputs checked and locked before any work
        json_out = stack.enter_context(_json_output(args.json, inputs)) if args.json else None
        plots = (
            stack.enter_context(
                Output(args.plots, kind="folder", what="plot", inputs=inputs, recognise=is_png)
            )
            if args.plots
            else None
        )
        return _voc_scored(args, None if args.lmdb else sets, json_out, plots)


def _json_output(path: str, inputs: list) -> Output:
    return Output(path, what="report", inputs=inputs, recognise=is_report)


def _voc_scored(
    args: argparse.Namespace, sets: list | None, json_out: Output | None, plots: Output | None
) -> int:
    from ..datasets.labelmap import foreground_names, label_to_name, load_labelmap
    from .report import format_table, plot_pr_curves, voc_report
    from .results import read_json_detections, read_result_dir
    from .voc import evaluate_voc, load_voc_ground_truth

    labelmap = load_labelmap(args.labelmap) if args.labelmap else None
    classes = foreground_names(labelmap) if labelmap is not None else None
    results = Path(args.results)
    if results.is_file() and results.suffix.lower() == ".json":
        dets = read_json_detections(results)
        if classes is not None:
            unknown = sorted(set(dets) - set(classes))
            if unknown:
                raise ModelLibsError(f"{results}: class {unknown[0]!r} is not in the label map")
    else:
        dets = read_result_dir(results, classes, args.prefix)
    for d in dets.values():
        if (warning := d.inverted_report()) is not None:
            print(f"warning: {warning}", file=sys.stderr)
    if args.lmdb:
        from .lmdb_gt import load_lmdb_ground_truth

        gt = load_lmdb_ground_truth(args.lmdb, label_to_name(labelmap))
        set_name = str(args.lmdb)
    else:
        gt = load_voc_ground_truth(args.root, *sets[0])
        set_name = args.image_set
    ev = evaluate_voc(
        dets, gt, classes=classes, metric=args.metric, iou_threshold=args.iou, set_name=set_name
    )
    rep = voc_report(ev, set=set_name, results=str(results))
    print(
        format_table(
            rep, title=f"VOC {set_name}  metric={args.metric}  IoU>={args.iou:g}  ({len(gt)} images)"
        ),
        end="",
    )
    if json_out is not None:
        json_out.write_text(report_json(rep))
    if plots is not None:
        plot_pr_curves(ev, plots.path)
    return 0


def _coco(args: argparse.Namespace) -> int:
    from .coco import evaluate_coco
    from .report import coco_report, format_table

    with contextlib.ExitStack() as stack:
        out = (
            stack.enter_context(_json_output(args.json, [args.annotations, args.results]))
            if args.json
            else None
        )
        ev = evaluate_coco(args.annotations, args.results)
        rep = coco_report(ev, annotations=args.annotations, results=args.results)
        print(format_table(rep, title="COCO bbox  AP@[.5:.95] per class"), end="")
        if out is not None:
            out.write_text(report_json(rep))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .report import compare_reports, format_comparison, load_report

    with contextlib.ExitStack() as stack:
        out = stack.enter_context(_json_output(args.json, [args.a, args.b])) if args.json else None
        a, b = load_report(args.a), load_report(args.b)
        names = args.names or [Path(args.a).stem, Path(args.b).stem]
        cmp = compare_reports(a, b)
        print(format_comparison(cmp, *names), end="")
        if out is not None:
            out.write_text(report_json({"a": args.a, "b": args.b, **cmp}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m model_libs eval``."""
    return run(argv, _parser, lambda args: {"voc": _voc, "coco": _coco, "compare": _compare}[args.what](args))
