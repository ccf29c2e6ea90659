"""data/ folders: label map files match the library, create_data.sh scripts run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from model_libs.datasets.labelmap import (
    coco_labelmap,
    labelmap_to_text,
    load_labelmap,
    voc_labelmap,
)
from model_libs.datasets.lmdb_io import count_records, iter_records
from model_libs.datasets.voc import VocObject, write_voc_xml

REPO = Path(__file__).resolve().parents[1]
SAMPLES = {"000001": [VocObject("dog", 1, 2, 30, 20)], "000002": [], "000003": []}


def make_devkit(root: Path, dataset: str, split: str) -> None:
    ds = root / dataset
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (ds / sub).mkdir(parents=True, exist_ok=True)
    for name, objs in SAMPLES.items():
        cv2.imwrite(str(ds / "JPEGImages" / f"{name}.jpg"), np.full((24, 32, 3), 99, np.uint8))
        write_voc_xml(ds / "Annotations" / f"{name}.xml", f"{name}.jpg", 32, 24, objs)
    (ds / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in SAMPLES))


def test_labelmap_files_match_library():
    voc = REPO / "data/VOC0712/labelmap_voc.prototxt"
    coco = REPO / "data/coco/labelmap_coco.prototxt"
    assert voc.read_text() == labelmap_to_text(voc_labelmap())
    assert coco.read_text() == labelmap_to_text(coco_labelmap())
    lm = load_labelmap(voc)
    assert (lm.item[0].name, lm.item[0].label, lm.item[0].display_name) == (
        "none_of_the_above",
        0,
        "background",
    )
    assert [i.label for i in lm.item] == list(range(21))
    assert (lm.item[20].name, lm.item[20].label) == ("tvmonitor", 20)
    c = load_labelmap(coco)
    assert [(i.name, i.label, i.display_name) for i in c.item][1:3] == [
        ("1", 1, "person"),
        ("2", 2, "bicycle"),
    ]
    assert (c.item[80].name, c.item[80].label, c.item[80].display_name) == ("90", 80, "toothbrush")


def _run(cmd, **kw):
    return subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)


def _env(**kw):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(REPO), **kw)
    return env


def test_voc_create_data_script(tmp_path):
    root = tmp_path / "VOCdevkit"
    make_devkit(root, dataset="VOC2007", split="test")
    make_devkit(root, dataset="VOC2007", split="trainval")
    make_devkit(root, dataset="VOC2012", split="trainval")
    env = _env(VOCDEVKIT=str(root), OUT=str(tmp_path / "lmdb"), NAME_SIZE_DIR=str(tmp_path))
    script = REPO / "data/VOC0712/create_data.sh"
    r = _run(["bash", str(script), "voc0712"], env=env)
    assert r.returncode == 0, r.stderr
    assert count_records(tmp_path / "lmdb/VOC0712_trainval_lmdb") == 2 * len(SAMPLES)
    keys = [k for k, _ in iter_records(tmp_path / "lmdb/VOC0712_test_lmdb")]
    assert keys[0] == "00000000_VOC2007/JPEGImages/000001.jpg"
    assert len((tmp_path / "test_name_size.txt").read_text().splitlines()) == len(SAMPLES)
    # second run without FORCE fails cleanly, with FORCE succeeds
    r = _run(["bash", str(script)], env=env)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = _run(["bash", str(script)], env={**env, "FORCE": "1"})
    assert r.returncode == 0, r.stderr


def test_coco_create_data_script_val(tmp_path):
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "val2017").mkdir()
    cv2.imwrite(str(coco / "val2017/000000000139.jpg"), np.zeros((40, 50, 3), np.uint8))
    (coco / "annotations/instances_val2017.json").write_text(
        json.dumps(
            {
                "images": [{"id": 139, "file_name": "000000000139.jpg", "width": 50, "height": 40}],
                "annotations": [{"image_id": 139, "category_id": 62, "bbox": [1, 1, 10, 10], "iscrowd": 0}],
                "categories": [{"id": 62, "name": "chair"}],
            }
        )
    )
    env = _env(COCO=str(coco), NAME_SIZE_DIR=str(tmp_path))
    r = _run(["bash", str(REPO / "data/coco/create_data.sh"), "val"], env=env)
    assert r.returncode == 0, r.stderr
    assert next(iter_records(coco / "lmdb/coco_val_lmdb"))[0] == "00000000_val2017/000000000139.jpg"
    assert (tmp_path / "val_name_size.txt").read_text() == "139 40 50\n"
