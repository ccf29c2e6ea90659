"""python -m model_libs weights init|show|check and detect."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from _engines_fixtures import deploy, random_weights, sample_images

from model_libs.__main__ import main
from model_libs.engines.caffemodel import read_caffemodel, weights_dict

MODEL = "DSOD300_smallest"


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "deploy.prototxt"
    d.write_text(str(deploy(MODEL)))
    w = tmp_path / "w.caffemodel"
    w.write_bytes(random_weights(MODEL))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, img in enumerate(sample_images(3)):
        cv2.imwrite(str(imgs / f"im{i}.jpg"), img)
    return d, w, imgs


def test_weights_init_show_check(files, tmp_path, capsys):
    d, _, _ = files
    out = tmp_path / "init.caffemodel"
    assert main(["weights", "init", "--deploy", str(d), "--out", str(out), "--seed", "4"]) == 0
    assert "5,872,372 values" in capsys.readouterr().out
    again = tmp_path / "again.caffemodel"
    main(["weights", "init", "--deploy", str(d), "--out", str(again), "--seed", "4"])
    assert out.read_bytes() == again.read_bytes()  # deterministic by seed
    assert main(["weights", "show", str(out), "--limit", "4"]) == 0
    text = capsys.readouterr().out
    assert "Convolution1" in text and "stored values: 5,872,372" in text
    assert main(["weights", "check", "--deploy", str(d), str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    legacy = tmp_path / "legacy.caffemodel"
    main(["weights", "init", "--deploy", str(d), "--out", str(legacy), "--seed", "4", "--legacy"])
    a, b = weights_dict(read_caffemodel(legacy)), weights_dict(read_caffemodel(out))
    assert all((x.ravel() == y.ravel()).all() for k in a for x, y in zip(a[k], b[k]))


def test_weights_check_mismatch_exit_1(files, tmp_path, capsys):
    d, _, _ = files
    other = tmp_path / "other.caffemodel"
    other.write_bytes(random_weights("DSOD300_lite"))
    assert main(["weights", "check", "--deploy", str(d), str(other), "--limit", "2"]) == 1
    text = capsys.readouterr().out
    assert "blob shape mismatch" in text and "... and" in text and text.strip().endswith("MISMATCH")


def test_detect_prints_draws_and_writes_json(files, tmp_path, capsys):
    d, w, imgs = files
    lm = tmp_path / "lm.prototxt"
    lm.write_text("\n".join(f'item {{ name: "n{i}" label: {i} display_name: "c{i}" }}' for i in range(21)))
    js = tmp_path / "out" / "dets.json"
    draw = tmp_path / "drawn"
    rc = main(
        [
            "detect",
            "--deploy",
            str(d),
            "--weights",
            str(w),
            "--labelmap",
            str(lm),
            "--threshold",
            "0.2",
            "--batch",
            "2",
            "--draw",
            str(draw),
            "--json",
            str(js),
            str(imgs),
        ]
    )
    assert rc == 0
    cap = capsys.readouterr()
    assert "engine: opencv (auto:" in cap.err
    data = json.loads(js.read_text())
    assert data["engine"] == "opencv" and len(data["images"]) == 3
    n = sum(len(r["detections"]) for r in data["images"])
    assert n > 0 and len(cap.out.strip().splitlines()) == n
    for rec in data["images"]:
        for det in rec["detections"]:
            assert det["score"] >= 0.2 and det["name"] == f"c{det['label']}"
            assert 0 <= det["box"][0] <= det["box"][2] <= rec["width"]
    drawn = sorted(p.name for p in draw.iterdir())
    assert drawn == ["im0.png", "im1.png", "im2.png"]
    # each picture is its image with the boxes drawn on it: the last-drawn box's left edge
    # (half-way down, below its caption) is in its class colour
    from model_libs.draw import class_colour

    for rec in data["images"]:
        stem = Path(rec["image"]).stem
        drawn_img, original = cv2.imread(str(draw / f"{stem}.png")), cv2.imread(rec["image"])
        assert drawn_img.shape == original.shape
        assert (drawn_img != original).any() == bool(rec["detections"])
        if rec["detections"]:
            last = rec["detections"][-1]
            x0, y0, _x1, y1 = (round(v) for v in last["box"])
            y = min(max((y0 + y1) // 2, y0 + 20), y1)
            assert tuple(int(v) for v in drawn_img[y, x0]) == class_colour(last["label"]), (stem, last)


def test_detect_bad_inputs_are_one_line_errors(files, tmp_path, capsys):
    d, w, _ = files
    assert main(["detect", "--deploy", str(d), "--weights", str(w), str(tmp_path / "nope.jpg")]) == 2
    assert "no such image or folder" in capsys.readouterr().err
    other = tmp_path / "other.caffemodel"
    other.write_bytes(random_weights("DSOD300_lite"))
    img = tmp_path / "imgs" / "im0.jpg"
    assert main(["detect", "--deploy", str(d), "--weights", str(other), str(img)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not match the deploy net" in err and "Traceback" not in err
