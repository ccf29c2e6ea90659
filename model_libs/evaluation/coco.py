"""COCO box AP through pycocotools (the reference implementation), with input checks.

:func:`evaluate_coco` validates the results JSON first — so a bad entry is reported as
``file: entry N: ...`` instead of a bare assertion deep inside pycocotools — then runs
``COCOeval(iouType="bbox")`` and returns the 12 standard stats by name plus per-class
AP@[.5:.95] computed from ``eval["precision"]`` the way the COCO leaderboard does.

Results format (pycocotools ``loadRes``): a JSON list of
``{"image_id": int, "category_id": int, "bbox": [x, y, width, height], "score": float}``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLibsError

STAT_NAMES: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


@dataclass
class CocoEvaluation:
    """The 12 COCO stats (``stats["AP"]`` is AP@[.5:.95]) and per-class AP@[.5:.95].

    A class with no ground truth in the evaluated images has AP ``None``; ``summary`` is the
    text pycocotools printed.
    """

    stats: dict[str, float]
    ap: dict[str, float | None]
    ap50: dict[str, float | None]
    summary: str

    @property
    def mAP(self) -> float:
        return self.stats["AP"]


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLibsError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ModelLibsError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def check_results(results: Any, image_ids: set, category_ids: set, source: str) -> None:
    """Raise :class:`ModelLibsError` naming the first bad entry of a COCO results list."""
    if not isinstance(results, list):
        raise ModelLibsError(f"{source}: expected a JSON list of detections")
    for i, d in enumerate(results):
        where = f"{source}: entry {i}"
        if not isinstance(d, dict):
            raise ModelLibsError(f"{where}: expected an object")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in d]
        if missing:
            raise ModelLibsError(f"{where}: missing {', '.join(missing)}")
        bbox = d["bbox"]
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
        ):
            raise ModelLibsError(f"{where}: bbox must be 4 finite numbers [x, y, width, height]")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ModelLibsError(
                f"{where}: bbox {bbox} has a negative width or height (COCO boxes are [x, y, width, height])"
            )
        s = d["score"]
        if not isinstance(s, (int, float)) or not math.isfinite(s):
            raise ModelLibsError(f"{where}: score is {s!r}; scores must be finite numbers")
        if d["image_id"] not in image_ids:
            raise ModelLibsError(f"{where}: image_id {d['image_id']!r} is not in the annotations")
        if d["category_id"] not in category_ids:
            raise ModelLibsError(f"{where}: category_id {d['category_id']!r} is not in the annotations")


def evaluate_coco(
    annotations: str | os.PathLike | dict,
    results: str | os.PathLike | list,
    image_ids: list[int] | None = None,
) -> CocoEvaluation:
    """COCO bbox evaluation of ``results`` against ``annotations`` (paths or loaded JSON).

    ``image_ids`` restricts the evaluation to those images (default: all annotated images).
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:  # pragma: no cover - declared dependency
        raise ModelLibsError("COCO evaluation needs pycocotools (pip install pycocotools)") from None
    ann_src = str(annotations) if not isinstance(annotations, dict) else "<annotations>"
    res_src = str(results) if not isinstance(results, list) else "<results>"
    gt_json = annotations if isinstance(annotations, dict) else _load_json(Path(annotations), "annotations")
    res_json = results if isinstance(results, list) else _load_json(Path(results), "results")
    if not isinstance(gt_json, dict) or "images" not in gt_json or "categories" not in gt_json:
        raise ModelLibsError(f"{ann_src}: not a COCO annotation file (needs images, categories)")
    gt_json = copy.deepcopy(gt_json)
    res_json = copy.deepcopy(res_json)
    gt_json.setdefault("annotations", [])
    for i, a in enumerate(gt_json["annotations"]):
        if not isinstance(a, dict) or "bbox" not in a or "image_id" not in a:
            raise ModelLibsError(f"{ann_src}: annotations[{i}] needs image_id and bbox")
        # Box-only datasets often omit these; COCO's own defaults are box area, not crowd.
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
        a.setdefault("id", i + 1)
    img_set = {im["id"] for im in gt_json["images"]}
    cat_set = {c["id"] for c in gt_json["categories"]}
    check_results(res_json, img_set, cat_set, res_src)

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_gt = COCO()
        coco_gt.dataset = gt_json
        coco_gt.createIndex()
        if res_json:
            coco_dt = coco_gt.loadRes(res_json)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": gt_json["images"],
                "categories": gt_json["categories"],
                "annotations": [],
            }
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {n: float(v) for n, v in zip(STAT_NAMES, ev.stats, strict=True)}
    # precision: [T iou thresholds, R recall points, K classes, A areas, M max dets]
    prec = ev.eval["precision"]
    ap: dict[str, float | None] = {}
    ap50: dict[str, float | None] = {}
    for k, cat_id in enumerate(ev.params.catIds):
        name = coco_gt.cats[cat_id]["name"]
        p = prec[:, :, k, 0, -1]
        ap[name] = float(np.mean(p[p > -1])) if (p > -1).any() else None
        p50 = prec[0, :, k, 0, -1]
        ap50[name] = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else None
    return CocoEvaluation(stats, ap, ap50, out.getvalue())
