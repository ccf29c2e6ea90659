"""COCO evaluation: the wrapper's numbers are pycocotools' numbers; bad input is named."""

from __future__ import annotations

import contextlib
import io
import json
import random

import numpy as np
import pytest

from model_libs.errors import ModelLibsError
from model_libs.evaluation.coco import STAT_NAMES, evaluate_coco


def dataset(n_images=20, seed=0):
    rng = random.Random(seed)
    images = [{"id": i + 1, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in range(n_images)]
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 7, "name": "bird"}]
    anns = []
    for im in images:
        for _ in range(rng.randint(1, 4)):
            w, h = rng.uniform(8, 300), rng.uniform(8, 300)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": rng.choice([1, 2, 7]),
                    "bbox": [rng.uniform(0, 300), rng.uniform(0, 150), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return {"images": images, "categories": cats, "annotations": anns}


def test_perfect_detections_score_one(tmp_path):
    gt = dataset()
    res = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
    ]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    ev = evaluate_coco(tmp_path / "gt.json", tmp_path / "res.json")
    assert list(ev.stats) == list(STAT_NAMES)
    assert ev.stats["AP"] == pytest.approx(1.0)
    assert ev.stats["AP50"] == pytest.approx(1.0)
    assert ev.stats["AP75"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in ev.ap.values())
    assert "Average Precision" in ev.summary


def test_no_detections_score_zero():
    ev = evaluate_coco(dataset(), [])
    assert ev.stats["AP"] <= 0  # pycocotools reports 0 (or -1 for empty ranges)
    assert ev.stats["AP50"] in (0.0, -1.0)


def test_agrees_with_pycocotools_directly():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = dataset(40, seed=3)
    rng = np.random.default_rng(3)
    res = []
    for a in gt["annotations"]:
        for _ in range(int(rng.integers(0, 3))):
            x, y, w, h = a["bbox"]
            res.append(
                {
                    "image_id": a["image_id"],
                    "category_id": a["category_id"],
                    "bbox": [
                        x + rng.normal(0, 8),
                        y + rng.normal(0, 8),
                        w * rng.uniform(0.7, 1.3),
                        h * rng.uniform(0.7, 1.3),
                    ],
                    "score": float(rng.random()),
                }
            )
    for _ in range(60):
        res.append(
            {
                "image_id": int(rng.integers(1, 41)),
                "category_id": int(rng.choice([1, 2, 7])),
                "bbox": [float(v) for v in rng.uniform(0, 200, 4) + [0, 0, 5, 5]],
                "score": float(rng.random()),
            }
        )
    ev = evaluate_coco(gt, res)
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = json.loads(json.dumps(gt))
        cg.createIndex()
        cd = cg.loadRes(json.loads(json.dumps(res)))
        e = COCOeval(cg, cd, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    assert [ev.stats[n] for n in STAT_NAMES] == pytest.approx(list(e.stats), abs=1e-12)
    assert 0.05 < ev.stats["AP"] < 0.95
    # Per-class AP averages to the overall AP when every class has ground truth.
    assert np.mean(list(ev.ap.values())) == pytest.approx(ev.stats["AP"], abs=1e-9)


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5},
            r"entry 1: image_id 999 is not in the annotations",
        ),
        (
            {"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.5},
            r"entry 1: category_id 3 is not in the annotations",
        ),
        ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 5], "score": 0.5}, r"entry 1: bbox"),
        (
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": float("nan")},
            r"entry 1: score is nan",
        ),
    ],
)
def test_bad_results_name_file_and_entry(tmp_path, entry, message):
    good = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}
    (tmp_path / "gt.json").write_text(json.dumps(dataset()))
    (tmp_path / "res.json").write_text(json.dumps([good, entry]))
    with pytest.raises(ModelLibsError, match="res.json: " + message):
        evaluate_coco(tmp_path / "gt.json", tmp_path / "res.json")


def test_malformed_json_names_line(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps(dataset()))
    (tmp_path / "res.json").write_text('[\n{"image_id": 1,\n oops}\n]')
    with pytest.raises(ModelLibsError, match=r"res\.json:3: invalid JSON"):
        evaluate_coco(tmp_path / "gt.json", tmp_path / "res.json")
