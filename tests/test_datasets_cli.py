"""The dataset commands through the real dispatcher: synthetic -> convert -> inspect."""

from __future__ import annotations

import json

import cv2
import numpy as np

from model_libs.__main__ import main
from model_libs.datasets.lmdb_io import count_records


def test_synthetic_convert_inspect(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["synthetic", "--out", str(out), "--train", "8", "--test", "3", "--seed", "4"]) == 0
    assert "8 train + 3 test images" in capsys.readouterr().out
    assert count_records(out / "lmdb/synth_trainval_lmdb") == 8
    assert len((out / "test_name_size.txt").read_text().splitlines()) == 3
    # the same split through `convert voc`
    lm = str(out / "labelmap_synth.prototxt")
    db = tmp_path / "test_lmdb"
    ns = tmp_path / "ns.txt"
    args = [
        "convert",
        "voc",
        "--root",
        str(out),
        "--sets",
        "Synth:test",
        "--out",
        str(db),
        "--labelmap",
        lm,
        "--name-size",
        str(ns),
        "--no-progress",
    ]
    assert main(args) == 0
    assert "3 images" in capsys.readouterr().out
    assert ns.read_text() == (out / "test_name_size.txt").read_text()
    # identical records to the ones build_synthetic_lmdbs wrote
    from model_libs.datasets.lmdb_io import iter_records

    assert list(iter_records(db)) == list(iter_records(out / "lmdb/synth_test_lmdb"))
    # rerun needs --force
    assert main(args) == 2
    assert "already exists (use --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    # inspect + draw
    png = tmp_path / "png"
    assert main(["inspect", str(db), "--labelmap", lm, "--draw", "2", "--out", str(png)]) == 0
    text = capsys.readouterr().out
    assert "3 records" in text and "all records decode" in text
    assert len(list(png.glob("*.png"))) == 2


def test_convert_coco_cli_and_errors(tmp_path, capsys):
    images = tmp_path / "val2017"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), np.zeros((20, 30, 3), np.uint8))
    js = tmp_path / "inst.json"
    js.write_text(
        json.dumps(
            {
                "images": [{"id": 3, "file_name": "a.jpg", "width": 30, "height": 20}],
                "annotations": [{"image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 0}],
                "categories": [{"id": 1, "name": "person"}],
            }
        )
    )
    db = tmp_path / "coco_lmdb"
    assert (
        main(
            [
                "convert",
                "coco",
                "--annotations",
                str(js),
                "--images",
                str(images),
                "--out",
                str(db),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "1 images, 1 boxes" in capsys.readouterr().out
    assert (
        main(
            [
                "convert",
                "coco",
                "--annotations",
                str(tmp_path / "no.json"),
                "--images",
                str(images),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "no.json: COCO annotation file not found" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "x")]) == 2
    assert main(["inspect", str(db), "--draw", "1"]) == 2
    assert "--draw needs --out" in capsys.readouterr().err
