"""Readers and reports: label maps, JSON detections, tables, comparisons, benchmark smoke."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_libs.datasets.labelmap import foreground_names, label_to_name, load_labelmap
from model_libs.errors import ModelLibsError
from model_libs.evaluation.report import compare_reports, format_comparison, format_table
from model_libs.evaluation.results import (
    ClassDetections,
    read_json_detections,
    read_result_dir,
    read_result_file,
    write_result_files,
)

VOC_LABELMAP = """# VOC labels
item {
  name: "none_of_the_above"
  label: 0
  display_name: "background"
}
item {
  name: "aeroplane"
  label: 1
  display_name: "aeroplane"
}
item { name: "bicycle" label: 2 display_name: "bicycle" }
"""


def test_labelmap(tmp_path):
    p = tmp_path / "labelmap.prototxt"
    p.write_text(VOC_LABELMAP)
    assert label_to_name(load_labelmap(p)) == {0: "none_of_the_above", 1: "aeroplane", 2: "bicycle"}
    assert foreground_names(load_labelmap(p)) == ["aeroplane", "bicycle"]


@pytest.mark.parametrize(
    "text, message",
    [
        ('item { name: "a" label: 1 }\nitem { name: "b" label: 1 }\n', r"duplicate label 1"),
        ('item { name: "a" label: 1 }\n\nitem { label: 2 }\n', r"item 1 needs both a name and a label"),
        ("layer { }\n", r"not a LabelMap text proto"),
    ],
)
def test_bad_labelmap(tmp_path, text, message):
    p = tmp_path / "lm.prototxt"
    p.write_text(text)
    with pytest.raises(ModelLibsError, match=message):
        load_labelmap(p)


def test_result_file_roundtrip_and_blank_lines(tmp_path):
    det = ClassDetections.from_rows([("a", 0.5, 1, 2, 3, 4), ("b", 0.25, 5, 6, 7, 8)])
    write_result_files(tmp_path, {"cat": det})
    f = tmp_path / "comp4_det_test_cat.txt"
    f.write_text("\n" + f.read_text() + "\n\n")
    back = read_result_file(f)
    assert list(back.image_ids) == ["a", "b"]
    np.testing.assert_allclose(back.scores, [0.5, 0.25])
    np.testing.assert_allclose(back.boxes, [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert list(back.lines) == [2, 3]
    assert back.where(1).endswith("comp4_det_test_cat.txt:3")


def test_result_dir_rejects_classes_not_in_labelmap(tmp_path):
    (tmp_path / "comp4_det_test_zebra.txt").write_text("a 0.5 1 2 3 4\n")
    with pytest.raises(ModelLibsError, match=r"comp4_det_test_zebra\.txt: class 'zebra' is not"):
        read_result_dir(tmp_path, ["cat", "dog"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLibsError, match="no result files"):
        read_result_dir(empty)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"image_id": "a", "class": "cat", "score": 0.5}, "entry 1: needs keys"),
        ({"image_id": "a", "class": "cat", "score": 0.5, "bbox": [1, 2, 3]}, "entry 1: bbox must"),
        (
            {"image_id": "a", "class": "cat", "score": "high", "bbox": [1, 2, 3, 4]},
            "entry 1: score and bbox must be numbers",
        ),
        (
            {"image_id": "a", "class": "cat", "score": float("nan"), "bbox": [1, 2, 3, 4]},
            "entry 1: score is nan",
        ),
    ],
)
def test_json_detection_errors_name_the_entry(tmp_path, entry, message):
    good = {"image_id": "a", "class": "cat", "score": 0.5, "bbox": [1, 2, 3, 4]}
    p = tmp_path / "d.json"
    p.write_text(json.dumps([good, entry]))
    with pytest.raises(ModelLibsError, match=message):
        read_json_detections(p)


def test_table_marks_undefined_ap():
    rep = {
        "mAP": 0.5,
        "ap": {"cat": 0.5, "bird": None},
        "npos": {"cat": 3, "bird": 0},
        "ndet": {"cat": 4, "bird": 1},
    }
    t = format_table(rep)
    assert "n/a" in t and "50.00" in t
    lines = t.splitlines()
    assert lines[0].split() == ["class", "AP", "npos", "ndet"]


def test_compare_handles_missing_and_undefined_classes():
    a = {"mAP": 0.5, "ap": {"cat": 0.5, "dog": None}}
    b = {"mAP": 0.6, "ap": {"cat": 0.7, "bird": 0.1}}
    cmp = compare_reports(a, b)
    assert cmp["classes"]["cat"]["delta"] == pytest.approx(0.2)
    assert cmp["classes"]["dog"]["delta"] is None
    assert cmp["classes"]["bird"] == {"a": None, "b": 0.1, "delta": None}
    assert cmp["mAP"]["delta"] == pytest.approx(0.1)
    text = format_comparison(cmp, "base", "new")
    assert "+20.00" in text and "n/a" in text


def test_benchmark_script_runs_small():
    repo = Path(__file__).resolve().parents[1]
    p = subprocess.run(
        [
            sys.executable,
            str(repo / "bench" / "bench_eval.py"),
            "--images",
            "40",
            "--per-image",
            "20",
            "--repeat",
            "1",
            "--files",
            "--naive",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "evaluate_voc metric=area" in p.stdout
    diff = re.search(r"max \|AP diff\| = (\S+)", p.stdout)
    assert diff and float(diff.group(1)) < 1e-9, p.stdout
