"""``python -m model_libs eval``: real files in, tables/JSON/PNGs out, clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model_libs.__main__ import main
from tests.eval_helpers import write_results, write_vocdevkit

GT = {
    "000001": [("cat", (10, 10, 59, 59), False), ("dog", (100, 100, 199, 149), False)],
    "000002": [("cat", (0, 0, 99, 99), False), ("cat", (200, 200, 239, 239), True)],
    "000003": [("dog", (5, 5, 54, 104), False)],
}
DETS = {
    # cat: TP, duplicate FP, FP, TP -> area AP 0.75, 11-point AP 8.5/11
    "cat": [
        ("000001", 0.9, 10, 10, 59, 59),
        ("000001", 0.8, 11, 11, 59, 59),
        ("000003", 0.5, 0, 0, 30, 30),
        ("000002", 0.4, 0, 0, 99, 99),
    ],
    # dog: perfect
    "dog": [("000001", 0.7, 100, 100, 199, 149), ("000003", 0.6, 5, 5, 54, 104)],
}


@pytest.fixture
def voc(tmp_path):
    root = write_vocdevkit(tmp_path / "VOCdevkit", GT)
    res = write_results(tmp_path / "results", DETS)
    return root, res


@pytest.mark.parametrize("metric, cat_ap", [("area", 0.75), ("11point", 8.5 / 11)])
def test_voc_table_and_json(voc, tmp_path, capsys, metric, cat_ap):
    root, res = voc
    out = tmp_path / "out" / "report.json"
    rc = main(
        [
            "eval",
            "voc",
            "--root",
            str(root),
            "--set",
            "VOC2007:test",
            "--results",
            str(res),
            "--metric",
            metric,
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert f"{cat_ap * 100:.2f}" in text and "100.00" in text and "mAP" in text
    rep = json.loads(out.read_text())
    assert rep["ap"]["cat"] == pytest.approx(cat_ap, abs=1e-12)
    assert rep["ap"]["dog"] == 1.0
    assert rep["mAP"] == pytest.approx((cat_ap + 1) / 2, abs=1e-12)
    assert rep["npos"] == {"cat": 2, "dog": 2}


def test_voc_plots_are_pngs(voc, tmp_path):
    root, res = voc
    plots = tmp_path / "plots"
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
                "--plots",
                str(plots),
            ]
        )
        == 0
    )
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["pr_all.png", "pr_cat.png", "pr_dog.png"]
    assert all((plots / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)


def test_voc_with_labelmap_and_custom_classes(tmp_path, capsys):
    gt = {"s1": [("triangle", (0, 0, 9, 9), False), ("circle", (20, 20, 29, 29), False)]}
    root = write_vocdevkit(tmp_path / "dev", gt, year="SYN", image_set="val")
    res = write_results(tmp_path / "res", {"triangle": [("s1", 0.9, 0, 0, 9, 9)]}, prefix="det_")
    lm = tmp_path / "labelmap.prototxt"
    lm.write_text(
        'item {\n  name: "none_of_the_above"\n  label: 0\n  display_name: "background"\n}'
        '\nitem { name: "triangle" label: 1 display_name: "Triangle" }\n'
        'item { name: "circle" label: 2 display_name: "Circle" }\n'
    )
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "eval",
                "voc",
                "--root",
                str(root),
                "--set",
                "SYN:val",
                "--results",
                str(res),
                "--prefix",
                "det_",
                "--labelmap",
                str(lm),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rep = json.loads(out.read_text())
    assert rep["ap"] == {"triangle": 1.0, "circle": 0.0}  # no file for circle: no detections
    assert rep["mAP"] == 0.5


def test_voc_json_detections(tmp_path):
    root = write_vocdevkit(tmp_path / "VOCdevkit", GT)
    dets = [
        {"image_id": r[0], "class": c, "score": r[1], "bbox": list(r[2:])}
        for c, rows in DETS.items()
        for r in rows
    ]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "r.json"
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
                str(tmp_path / "dets.json"),
                "--metric",
                "area",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["ap"] == {"cat": 0.75, "dog": 1.0}


@pytest.mark.parametrize(
    "line, message",
    [
        ("000001 0.5 1 2 3\n", r"comp4_det_test_cat\.txt:3: expected 6 columns .* found 5"),
        ("000001 0.5 1 2 3 4 5\n", r"comp4_det_test_cat\.txt:3: expected 6 columns .* found 7"),
        (
            "000404 0.5 1 2 3 4\n",
            (
                r"comp4_det_test_cat\.txt:3: image id '000404' is not in the "
                r"ground truth \(VOC2007:test\)"
            ),
        ),
        ("000001 nan 1 2 3 4\n", r"comp4_det_test_cat\.txt:3: score is nan"),
        ("000001 0.5 1 2 x 4\n", r"comp4_det_test_cat\.txt:3: xmax 'x' is not a number"),
        ("000001 0.5 1 2 inf 4\n", r"comp4_det_test_cat\.txt:3: box .* is not finite"),
    ],
)
def test_bad_result_lines_name_file_and_line(voc, capsys, line, message):
    root, res = voc
    f = res / "comp4_det_test_cat.txt"
    lines = f.read_text().splitlines(keepends=True)
    f.write_text(lines[0] + "\n" + line + "".join(lines[1:]))  # blank line 2, bad line 3
    rc = main(["eval", "voc", "--root", str(root), "--set", "VOC2007:test", "--results", str(res)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert re.search(message, err), err


def test_missing_inputs_are_clear_errors(voc, tmp_path, capsys):
    root, res = voc
    assert main(["eval", "voc", "--root", str(root), "--set", "VOC2007:train", "--results", str(res)]) == 2
    assert "train.txt: image set list not found" in capsys.readouterr().err
    assert main(["eval", "voc", "--root", str(root), "--set", "VOC2007", "--results", str(res)]) == 2
    assert "expected YEAR:SET" in capsys.readouterr().err
    assert (
        main(
            ["eval", "voc", "--root", str(root), "--set", "VOC2007:test", "--results", str(tmp_path / "nope")]
        )
        == 2
    )
    assert "results folder not found" in capsys.readouterr().err
    (root / "VOC2007" / "Annotations" / "000002.xml").write_text("<annotation><object>")
    assert main(["eval", "voc", "--root", str(root), "--set", "VOC2007:test", "--results", str(res)]) == 2
    assert "000002.xml:1: malformed XML" in capsys.readouterr().err


def test_coco_and_compare(tmp_path, capsys):
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 60, 30], "area": 1800, "iscrowd": 0},
        ],
    }
    good = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9},
        {"image_id": 2, "category_id": 2, "bbox": [5, 5, 60, 30], "score": 0.8},
    ]
    worse = [good[0], {"image_id": 2, "category_id": 2, "bbox": [50, 50, 20, 20], "score": 0.8}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    for name in ("good", "worse"):
        assert (
            main(
                [
                    "eval",
                    "coco",
                    "--annotations",
                    str(tmp_path / "gt.json"),
                    "--results",
                    str(tmp_path / f"{name}.json"),
                    "--json",
                    str(tmp_path / f"r_{name}.json"),
                ]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "AP50" in out and "AP_small" in out
    good_rep = json.loads((tmp_path / "r_good.json").read_text())
    assert good_rep["mAP"] == pytest.approx(1.0)
    assert set(good_rep["ap"]) == {"cat", "dog"}
    assert (
        main(
            [
                "eval",
                "compare",
                str(tmp_path / "r_good.json"),
                str(tmp_path / "r_worse.json"),
                "--json",
                str(tmp_path / "cmp.json"),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "r_good" in table and "-100.00" in table
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["classes"]["dog"]["delta"] == pytest.approx(-1.0)
    assert cmp["classes"]["cat"]["delta"] == pytest.approx(0.0)
    assert cmp["mAP"]["delta"] == pytest.approx(-0.5)


def test_compare_rejects_non_reports(tmp_path, capsys):
    (tmp_path / "a.json").write_text('{"foo": 1}')
    assert main(["eval", "compare", str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 2
    assert "not an evaluation report" in capsys.readouterr().err


def test_module_entry_point_runs(voc, tmp_path):
    root, res = voc
    repo = Path(__file__).resolve().parents[1]
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_libs",
            "eval",
            "voc",
            "--root",
            str(root),
            "--set",
            "VOC2007:test",
            "--results",
            str(res),
            "--metric",
            "area",
        ],
        capture_output=True,
        text=True,
        cwd=repo,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "75.00" in p.stdout
