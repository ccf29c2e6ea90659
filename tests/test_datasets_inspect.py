"""Inspector: counts, catches broken records, draws PNGs; LMDB reader errors."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from model_libs.datasets.annotated_datum import Box, build_annotated_datum
from model_libs.datasets.inspect import draw_records, validate_lmdb
from model_libs.datasets.labelmap import make_labelmap
from model_libs.datasets.lmdb_io import count_records, iter_records, write_lmdb
from model_libs.errors import ModelLibsError


def _jpeg(h=40, w=60, value=90):
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def _lmdb(tmp_path, records):
    out = tmp_path / "db"
    write_lmdb(out, records)
    return out


def test_valid_lmdb_report(tmp_path):
    good = build_annotated_datum(
        _jpeg(), [Box(1, 0.1, 0.2, 0.5, 0.6), Box(2, 0, 0, 1, 1, True), Box(1, 0.3, 0.3, 0.4, 0.4)]
    )
    empty = build_annotated_datum(_jpeg(30, 20), [])
    db = _lmdb(
        tmp_path,
        [("00000000_a.jpg", good.SerializeToString()), ("00000001_b.jpg", empty.SerializeToString())],
    )
    rep = validate_lmdb(db, make_labelmap(["cat", "dog"]))
    assert rep.ok, rep.summary()
    assert (rep.records, rep.boxes, rep.difficult, rep.empty_records) == (2, 3, 1, 1)
    assert rep.per_label == {1: 2, 2: 1}
    assert rep.min_size == (30, 20) and rep.max_size == (40, 60)
    assert count_records(db) == 2


def test_broken_records_are_reported(tmp_path):
    bad_box = build_annotated_datum(_jpeg(), [Box(1, 0.6, 0.2, 0.5, 0.6)])  # xmax < xmin
    bad_img = build_annotated_datum(b"not an image", [Box(1, 0.1, 0.1, 0.2, 0.2)])
    bad_label = build_annotated_datum(_jpeg(), [Box(7, 0.1, 0.1, 0.2, 0.2)])
    db = _lmdb(
        tmp_path,
        [
            ("0_box", bad_box.SerializeToString()),
            ("1_img", bad_img.SerializeToString()),
            ("2_label", bad_label.SerializeToString()),
            ("3_junk", b"\xff\xff\xff garbage"),
        ],
    )
    rep = validate_lmdb(db, make_labelmap(["cat", "dog"]))
    assert not rep.ok
    text = "\n".join(rep.errors)
    assert "0_box: label 1 instance 0 box" in text
    assert "1_img: the encoded image does not decode" in text
    assert "2_label: group label 7 is not in the label map" in text
    assert "3_junk: not an AnnotatedDatum" in text


def test_draw_records(tmp_path):
    ad = build_annotated_datum(_jpeg(value=200), [Box(1, 0.25, 0.25, 0.75, 0.75)])
    db = _lmdb(tmp_path, [(f"{i:08d}_dir/x{i}.jpg", ad.SerializeToString()) for i in range(5)])
    paths = draw_records(db, tmp_path / "png", 3, make_labelmap(["cat"]))
    assert [p.name for p in paths] == [f"{i:08d}_dir_x{i}.png" for i in range(3)]
    img = cv2.imread(str(paths[0]))
    assert img.shape == (40, 60, 3)
    # box edge is drawn (pixels changed along the box outline, interior centre untouched)
    assert not np.array_equal(img[10, 15:45], np.full((30, 3), img[20, 30]))


def test_reader_errors_and_duplicate_keys(tmp_path):
    with pytest.raises(ModelLibsError, match="LMDB not found"):
        count_records(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ModelLibsError, match=re.escape("no data.mdb")):
        list(iter_records(tmp_path / "plain"))
    with pytest.raises(ModelLibsError, match="duplicate key"):
        write_lmdb(tmp_path / "dup", [("k", b"1"), ("k", b"2")])
    assert not (tmp_path / "dup").exists()
