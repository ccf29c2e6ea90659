"""The dataset table: data/*/create_data.sh build it on tiny fixtures, every recipe reads what
they wrote, the README shows it, the label maps ship in the package (and only there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from model_libs import caffe_pb2
from model_libs.datasets.labelmap import labelmap_to_text, load_labelmap
from model_libs.datasets.layout import LAYOUTS, labelmap_path, markdown_table
from model_libs.datasets.lmdb_io import count_records, iter_records
from model_libs.datasets.voc import VocObject, write_voc_xml
from model_libs.dsod import write_nets
from model_libs.dsod.models import VARIANTS, recipe
from model_libs.errors import ModelLibsError

REPO = Path(__file__).resolve().parents[1]

# VOCdevkit fixture: (year, split) -> image names; VOC2012 test has no annotations, as released.
VOC_SETS = {
    ("VOC2007", "trainval"): ["000005", "000007", "000009"],
    ("VOC2007", "test"): ["000001", "000002"],
    ("VOC2012", "trainval"): ["2008_000002", "2008_000003"],
    ("VOC2012", "test"): ["2008_000001", "2008_000004", "2008_000005"],
}
# COCO fixture: split -> (json, image folder, image ids)
COCO_SETS = {
    "train": ("instances_train2017.json", "train2017", [9, 25, 30, 34]),
    "test": ("instances_val2017.json", "val2017", [139, 285]),
    "test-dev": ("image_info_test-dev2017.json", "test2017", [1, 16, 19]),
}


def make_devkit(root: Path) -> Path:
    for (year, split), names in VOC_SETS.items():
        ds = root / year
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (ds / sub).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            h, w = 24 + 8 * i, 32
            cv2.imwrite(str(ds / "JPEGImages" / f"{name}.jpg"), np.full((h, w, 3), 40 * i, np.uint8))
            if split != "test" or year == "VOC2007":
                write_voc_xml(
                    ds / "Annotations" / f"{name}.xml", f"{name}.jpg", w, h, [VocObject("dog", 1, 2, 20, 15)]
                )
        (ds / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def make_coco(root: Path) -> Path:
    (root / "annotations").mkdir(parents=True)
    for _split, (js, folder, ids) in COCO_SETS.items():
        (root / folder).mkdir()
        images = []
        for i in ids:
            name = f"{i:012d}.jpg"
            cv2.imwrite(str(root / folder / name), np.full((40, 50, 3), i % 255, np.uint8))
            images.append({"id": i, "file_name": name, "width": 50, "height": 40})
        data = {"images": images, "categories": [{"id": 62, "name": "chair"}, {"id": 1, "name": "person"}]}
        if js.startswith("instances"):
            data["annotations"] = [
                {"id": n, "image_id": i, "category_id": 62, "bbox": [1, 1, 10, 10], "iscrowd": 0}
                for n, i in enumerate(ids)
            ]
        (root / "annotations" / js).write_text(json.dumps(data))
    return root


def _run(cmd, **kw):
    return subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)


def _env(**kw):
    return dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(REPO), **kw)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A data root filled by both data scripts (all splits) from tiny VOC and COCO fixtures."""
    tmp = tmp_path_factory.mktemp("layout")
    root = tmp / "data"
    env = _env(
        VOCDEVKIT=str(make_devkit(tmp / "VOCdevkit")), COCO=str(make_coco(tmp / "coco")), DATA_ROOT=str(root)
    )
    for script, arg in (("data/VOC0712/create_data.sh", "all"), ("data/coco/create_data.sh", "all")):
        r = _run(["bash", str(REPO / script), arg], env=env, cwd=tmp)
        assert r.returncode == 0, r.stderr
    return root


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_scripts_write_every_lmdb_and_list_of_the_table(data_root):
    voc = lambda *sets: sum(len(VOC_SETS[s]) for s in sets)  # noqa: E731
    expected = {
        ("VOC0712", "train"): voc(("VOC2007", "trainval"), ("VOC2012", "trainval")),
        ("VOC0712", "test"): voc(("VOC2007", "test")),
        ("VOC0712Plus", "train"): voc(("VOC2007", "trainval"), ("VOC2007", "test"), ("VOC2012", "trainval")),
        ("VOC0712Plus", "test"): voc(("VOC2012", "test")),
        **{("coco", s): len(ids) for s, (_, _, ids) in COCO_SETS.items()},
    }
    assert set(expected) == {(d, s) for d, lay in LAYOUTS.items() for s in lay.splits}
    for (dataset, split), n in expected.items():
        lay = LAYOUTS[dataset]
        assert count_records(lay.lmdb_path(split, data_root)) == n, (dataset, split)
        ns = lay.name_size_path(split, data_root)
        if ns is not None:
            assert len(_lines(ns)) == n, ns
    # the official names, where the issue found them disagreeing
    assert (data_root / "VOC0712Plus/lmdb/VOC0712Plus_trainvalplus_lmdb").is_dir()
    assert _lines(data_root / "VOC0712Plus/test_name_size.txt")[0] == "2008_000001 24 32"
    assert (data_root / "coco/lmdb/coco_minival_lmdb").is_dir()
    assert _lines(data_root / "coco/minival2014_name_size.txt") == ["139 40 50", "285 40 50"]
    keys = [k for k, _ in iter_records(data_root / "VOC0712/lmdb/VOC0712_test_lmdb")]
    assert keys == ["00000000_VOC2007/JPEGImages/000001.jpg", "00000001_VOC2007/JPEGImages/000002.jpg"]


@pytest.mark.parametrize("model", list(VARIANTS))
def test_every_recipe_reads_what_the_scripts_wrote(data_root, tmp_path, model):
    for dataset in VARIANTS[model].datasets:
        r = recipe(model, dataset, data_root=data_root, out_dir=tmp_path)
        for path in (r.train_data, r.test_data):
            assert count_records(path) > 0, path
        assert Path(r.label_map_file).is_file() and Path(r.name_size_file).is_file()
        n_test = count_records(r.test_data)
        assert r.num_test_image == n_test == len(_lines(Path(r.name_size_file)))
        assert r.num_classes == len(load_labelmap(r.label_map_file).item)
        files = write_nets(r, tmp_path / f"{model}_{dataset}")
        test = text_format.Parse(files["test"].read_text(), caffe_pb2.NetParameter())
        assert test.layer[0].data_param.source == r.test_data
        out = next(x for x in test.layer if x.type == "DetectionOutput").detection_output_param
        assert out.save_output_param.num_test_image == n_test
        assert out.save_output_param.name_size_file == r.name_size_file
        train = text_format.Parse(files["train"].read_text(), caffe_pb2.NetParameter())
        assert train.layer[0].data_param.source == r.train_data
        assert train.layer[0].annotated_data_param.label_map_file == r.label_map_file


def test_recipes_fall_back_to_the_official_counts_without_data(tmp_path):
    counts = {d: recipe("DSOD300", d, data_root=tmp_path).num_test_image for d in LAYOUTS}
    assert counts == {"VOC0712": 4952, "VOC0712Plus": 10991, "coco": 5000}
    r = recipe("DSOD300", "VOC0712Plus", data_root=tmp_path)
    assert r.test_iter == 10991 and r.name_size_file == str(tmp_path / "VOC0712Plus/test_name_size.txt")


def test_an_empty_name_size_list_is_refused(tmp_path):
    (tmp_path / "VOC0712").mkdir()
    (tmp_path / "VOC0712/test_name_size.txt").write_text("\n")
    with pytest.raises(ModelLibsError, match=r"test_name_size\.txt: the name/size list is empty"):
        recipe("DSOD300", data_root=tmp_path)


def test_readme_shows_the_table():
    text = (REPO / "README.md").read_text()
    start = text.index("<!-- layout table")
    block = text[text.index("\n", start) + 1 : text.index("<!-- end of layout table -->")]
    assert block == markdown_table()


def test_label_maps_ship_in_the_package_and_only_there():
    voc, coco = labelmap_path("labelmap_voc.prototxt"), labelmap_path("labelmap_coco.prototxt")
    assert voc.parent.name == "data" and voc.parent.parent.name == "model_libs"
    assert sorted(p.name for p in (REPO / "data").rglob("*.prototxt")) == []
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
    # the files are in upstream's text layout (what the library itself writes)
    for path in (voc, coco):
        assert path.read_text() == labelmap_to_text(load_labelmap(path))


def test_voc_script_refuses_to_overwrite_without_force(data_root, tmp_path):
    env = _env(VOCDEVKIT=str(make_devkit(tmp_path / "VOCdevkit")), DATA_ROOT=str(data_root))
    script = str(REPO / "data/VOC0712/create_data.sh")
    r = _run(["bash", script], env=env)
    assert r.returncode == 2 and "already exists" in r.stderr
    assert count_records(data_root / "VOC0712/lmdb/VOC0712_trainval_lmdb") == 5  # untouched
    r = _run(["bash", script], env={**env, "FORCE": "1"})
    assert r.returncode == 0, r.stderr
    r = _run(["bash", script, "voc2020"], env=env)
    assert r.returncode == 2 and "usage:" in r.stderr


def test_layout_command_errors(tmp_path):
    r = _run(
        [sys.executable, "-m", "model_libs", "layout", "coco", "--make", "val", "--source", str(tmp_path)]
    )
    assert r.returncode == 2 and r.stderr.startswith("error: coco has no split 'val'")
    r = _run([sys.executable, "-m", "model_libs", "layout", "coco", "--make", "test"])
    assert r.returncode == 2 and "--make needs --source" in r.stderr
    r = _run([sys.executable, "-m", "model_libs", "layout", "imagenet"])
    assert r.returncode == 2 and "unknown dataset 'imagenet'" in r.stderr
