"""Evaluation: VOC AP (devkit semantics), COCO AP (pycocotools), Caffe's solver AP, reports.

Modules, one job each:

* :mod:`.results`  — read/write VOC ``comp4`` result files and JSON detections
* :mod:`.voc`      — VOC ground truth (XML) and AP per class / mAP (11point and area)
* :mod:`.coco`     — COCO bbox AP through pycocotools, with input checks
* :mod:`.caffe_ap` — Caffe's DetectionEvaluate + ComputeAP + solver mAP semantics
* :mod:`.lmdb_gt`  — ground truth from an annotated LMDB (AnnotatedDatum records)
* :mod:`.report`   — text/JSON tables, precision–recall PNGs, run comparison
* :mod:`.cli`      — ``python -m model_libs eval {voc,coco,compare}``

Importing this package is cheap; submodules load numpy/pycocotools/matplotlib on use.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "ClassDetections": "results",
    "read_result_file": "results",
    "read_result_dir": "results",
    "read_json_detections": "results",
    "write_result_files": "results",
    "evaluate_voc": "voc",
    "load_voc_ground_truth": "voc",
    "VocEvaluation": "voc",
    "ClassResult": "voc",
    "evaluate_coco": "coco",
    "CocoEvaluation": "coco",
    "compute_ap": "caffe_ap",
    "solver_map": "caffe_ap",
    "detection_evaluate": "caffe_ap",
    "load_lmdb_ground_truth": "lmdb_gt",
    "voc_report": "report",
    "coco_report": "report",
    "format_table": "report",
    "write_json": "report",
    "load_report": "report",
    "compare_reports": "report",
    "format_comparison": "report",
    "plot_pr_curves": "report",
}

__all__ = [
    "ClassDetections",
    "ClassResult",
    "CocoEvaluation",
    "VocEvaluation",
    "coco_report",
    "compare_reports",
    "compute_ap",
    "detection_evaluate",
    "evaluate_coco",
    "evaluate_voc",
    "format_comparison",
    "format_table",
    "load_report",
    "load_lmdb_ground_truth",
    "load_voc_ground_truth",
    "plot_pr_curves",
    "read_json_detections",
    "read_result_dir",
    "read_result_file",
    "solver_map",
    "voc_report",
    "write_json",
    "write_result_files",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
