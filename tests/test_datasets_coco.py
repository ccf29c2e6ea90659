"""COCO converter: round trip against a hand-made instances JSON, crowd handling, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_libs.datasets.annotated_datum import datum_boxes, decode_image, parse_annotated_datum
from model_libs.datasets.coco import convert_coco
from model_libs.datasets.labelmap import coco_labelmap, name_to_label
from model_libs.datasets.lmdb_io import iter_records
from model_libs.errors import ModelLibsError


def make_coco(tmp: Path) -> tuple[Path, Path, dict]:
    images = tmp / "val2014"
    images.mkdir(parents=True)
    rng = np.random.default_rng(1)
    doc = {
        "images": [
            {"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 80, "height": 60},
            {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "width": 50, "height": 40},
            {"id": 9, "file_name": "COCO_val2014_000000000009.jpg", "width": 30, "height": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 18, "bbox": [1.5, 2.25, 30.0, 20.5], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 50, 40], "iscrowd": 1},
            {"id": 3, "image_id": 42, "category_id": 90, "bbox": [40.1, 10, 39.9, 50], "iscrowd": 0},
            {"id": 4, "image_id": 42, "category_id": 18, "bbox": [5, 5, 10, 10], "iscrowd": 0},
            {"id": 5, "image_id": 7, "category_id": 1, "bbox": [3, 4, 5, 6], "iscrowd": 0},
        ],
        "categories": [{"id": c, "name": n} for c, n in ((1, "person"), (18, "dog"), (90, "toothbrush"))],
    }
    for im in doc["images"]:
        arr = rng.integers(0, 255, (im["height"], im["width"], 3), dtype=np.uint8)
        assert cv2.imwrite(str(images / im["file_name"]), arr)
    js = tmp / "instances_val2014.json"
    js.write_text(json.dumps(doc))
    return js, images, doc


def test_round_trip(tmp_path):
    js, images, doc = make_coco(tmp_path)
    out = tmp_path / "coco_lmdb"
    ns = tmp_path / "ns.txt"
    stats = convert_coco(js, images, out, name_size=ns, progress=False)
    assert (stats.images, stats.boxes) == (3, 5)
    recs = list(iter_records(out))
    assert [k for k, _ in recs] == [
        f"{i:08d}_val2014/{im['file_name']}" for i, im in enumerate(doc["images"])
    ]
    labels = name_to_label(coco_labelmap())
    assert labels["1"] == 1 and labels["18"] == 17 and labels["90"] == 80
    for (_, raw), im in zip(recs, doc["images"], strict=True):
        ad = parse_annotated_datum(raw)
        assert ad.datum.data == (images / im["file_name"]).read_bytes()
        assert np.array_equal(decode_image(ad), cv2.imread(str(images / im["file_name"])))
        anns = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
        got = datum_boxes(ad)
        # grouped by label in first-appearance order
        order = []
        for a in anns:
            if a["category_id"] not in order:
                order.append(a["category_id"])
        want = [a for c in order for a in anns if a["category_id"] == c]
        assert len(got) == len(want)
        w, h = np.float32(im["width"]), np.float32(im["height"])
        for b, a in zip(got, want, strict=True):
            x, y, bw, bh = (np.float32(v) for v in a["bbox"])
            assert b.label == labels[str(a["category_id"])]
            assert (b.xmin, b.ymin) == (x / w, y / h)
            assert (b.xmax, b.ymax) == (np.float32(x + bw) / w, np.float32(y + bh) / h)
            assert b.difficult == bool(a["iscrowd"])  # upstream: crowd kept as difficult
    assert ns.read_text() == "42 60 80\n7 40 50\n9 30 30\n"


def test_skip_crowd_and_test_dev(tmp_path):
    js, images, doc = make_coco(tmp_path)
    stats = convert_coco(js, images, tmp_path / "a", skip_crowd=True, progress=False)
    assert stats.boxes == 4
    info = tmp_path / "image_info_test-dev.json"
    info.write_text(json.dumps({"images": doc["images"], "categories": doc["categories"]}))
    stats = convert_coco(info, images, tmp_path / "b", key_prefix="test2015", progress=False)
    assert (stats.images, stats.boxes) == (3, 0)
    assert next(iter_records(tmp_path / "b"))[0].startswith("00000000_test2015/COCO_val2014")


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda d: d["annotations"][0].update(category_id=12), "unknown category_id 12"),
        (lambda d: d["annotations"][0].update(bbox=[70, 0, 20, 5]), "outside"),
        (lambda d: d["annotations"][0].update(bbox=[10, 0, -5, 5]), "xmax<xmin"),
        (lambda d: d["annotations"][0].update(image_id=1234), "unknown image id"),
        (lambda d: d["images"][1].update(width=51), "in the JSON but"),
        (lambda d: d["images"][1].update(file_name="missing.jpg"), "missing.jpg: image file"),
        (lambda d: d.update(images=[], annotations=[]), "empty split"),
    ],
)
def test_bad_input(tmp_path, mutate, expect):
    js, images, doc = make_coco(tmp_path)
    mutate(doc)
    js.write_text(json.dumps(doc))
    out = tmp_path / "o"
    with pytest.raises(ModelLibsError, match=expect) as err:
        convert_coco(js, images, out, progress=False)
    # the error names the file at fault: the image for a missing image, else the JSON
    named = images / "missing.jpg" if "missing.jpg" in expect else js
    assert str(err.value).startswith(f"{named}:"), err.value
    assert not out.exists()


def test_malformed_json_and_unreadable_image(tmp_path):
    js, images, _ = make_coco(tmp_path)
    (images / "COCO_val2014_000000000009.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ModelLibsError, match=re.escape("000000000009.jpg: unreadable image")):
        convert_coco(js, images, tmp_path / "o", progress=False)
    js.write_text("{not json")
    with pytest.raises(ModelLibsError, match=re.escape("instances_val2014.json: malformed JSON")):
        convert_coco(js, images, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
