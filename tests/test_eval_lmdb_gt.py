"""Ground truth from an annotated LMDB gives the same AP as the VOC XML it came from."""

from __future__ import annotations

import json

import cv2
import lmdb
import numpy as np
import pytest

from model_libs.__main__ import main
from model_libs.errors import ModelLibsError
from model_libs.evaluation.lmdb_gt import image_id_from_key, load_lmdb_ground_truth
from model_libs.proto import caffe_pb2
from tests.eval_helpers import write_results, write_vocdevkit

LABELS = {0: "background", 1: "cat", 2: "dog"}
SIZES = {"000001": (500, 375), "000002": (353, 500), "000003": (480, 640)}
GT = {
    "000001": [("cat", (10, 10, 59, 59), False), ("dog", (100, 100, 199, 149), False)],
    "000002": [("cat", (1, 1, 352, 499), False), ("cat", (200, 200, 239, 239), True)],
    "000003": [("dog", (5, 5, 54, 104), False)],
}


def write_lmdb(path, gt=GT, raw_size=False):
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for idx, (img, objs) in enumerate(gt.items()):
            w, h = SIZES[img]
            ad = caffe_pb2.AnnotatedDatum()
            ad.type = caffe_pb2.AnnotatedDatum.BBOX
            ok, png = cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))
            assert ok
            ad.datum.data = png.tobytes()
            ad.datum.encoded = True
            if raw_size:
                ad.datum.width, ad.datum.height = w, h
            groups = {}
            for k, (name, box, difficult) in enumerate(objs):
                label = next(lab for lab, n in LABELS.items() if n == name)
                if label not in groups:
                    groups[label] = ad.annotation_group.add()
                    groups[label].group_label = label
                a = groups[label].annotation.add()
                a.instance_id = k
                b = a.bbox
                b.xmin, b.ymin, b.xmax, b.ymax = box[0] / w, box[1] / h, box[2] / w, box[3] / h
                b.difficult = difficult
            txn.put(f"{idx:08d}_VOC2007/JPEGImages/{img}.jpg".encode(), ad.SerializeToString())
    env.close()
    return path


def test_image_id_from_key():
    assert image_id_from_key("00000012_VOC2007/JPEGImages/000012.jpg") == "000012"
    assert image_id_from_key("00000000_train2017/000000397133.jpg") == "000000397133"


@pytest.mark.parametrize("raw_size", [False, True])
def test_lmdb_ground_truth_recovers_pixel_boxes(tmp_path, raw_size):
    gt = load_lmdb_ground_truth(write_lmdb(tmp_path / "lmdb", raw_size=raw_size), LABELS)
    assert sorted(gt) == sorted(GT)
    for img, objs in GT.items():
        got = sorted(gt[img])
        want = sorted((n, tuple(float(v) for v in b), d) for n, b, d in objs)
        assert got == want


def test_cli_lmdb_matches_xml(tmp_path):
    root = write_vocdevkit(tmp_path / "VOCdevkit", GT)
    res = write_results(
        tmp_path / "res",
        {
            "cat": [
                ("000001", 0.9, 10, 10, 59, 59),
                ("000002", 0.8, 1, 1, 352, 200),
                ("000002", 0.7, 200, 200, 239, 239),
                ("000003", 0.2, 1, 1, 352, 499),
            ],
            "dog": [("000003", 0.6, 5, 5, 54, 104), ("000001", 0.5, 100, 100, 140, 149)],
        },
    )
    lm = tmp_path / "labelmap.prototxt"
    lm.write_text(
        "".join(f'item {{ name: "{n}" label: {k} display_name: "{n}" }}\n' for k, n in LABELS.items())
    )
    write_lmdb(tmp_path / "lmdb")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert (
        main(
            [
                "eval",
                "voc",
                "--root",
                str(root),
                "--set",
                "VOC2007:test",
                "--results",
                str(res),
                "--labelmap",
                str(lm),
                "--json",
                str(a),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                "voc",
                "--lmdb",
                str(tmp_path / "lmdb"),
                "--results",
                str(res),
                "--labelmap",
                str(lm),
                "--json",
                str(b),
            ]
        )
        == 0
    )
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["ap"] == rb["ap"]
    assert 0 < ra["mAP"] < 1


def test_lmdb_errors(tmp_path, capsys):
    with pytest.raises(ModelLibsError, match="not an LMDB folder"):
        load_lmdb_ground_truth(tmp_path, LABELS)
    write_lmdb(tmp_path / "lmdb")
    with pytest.raises(ModelLibsError, match="label 2 is not in the label map"):
        load_lmdb_ground_truth(tmp_path / "lmdb", {1: "cat"})
    assert main(["eval", "voc", "--lmdb", str(tmp_path / "lmdb"), "--results", str(tmp_path)]) == 2
    assert "--lmdb needs --labelmap" in capsys.readouterr().err
