"""VOC converter: round trip, upstream record layout, and every bad-input error."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_libs.datasets.annotated_datum import datum_boxes, decode_image, parse_annotated_datum
from model_libs.datasets.lmdb_io import count_records, iter_records
from model_libs.datasets.voc import VocObject, convert_voc, parse_sets, parse_voc_xml, write_voc_xml
from model_libs.errors import ModelLibsError

# id -> (width, height, objects)
SAMPLES = {
    "000001": (
        64,
        48,
        [
            VocObject("dog", 1, 2, 30, 40),
            VocObject("cat", 10, 5, 64, 48, True),
            VocObject("dog", 33, 1, 60, 20),
        ],
    ),
    "000002": (50, 70, [VocObject("person", 5, 6, 45, 69)]),
    "000003": (40, 40, []),
}


def make_devkit(root: Path, samples=SAMPLES, dataset="VOC2007", split="test") -> Path:
    ds = root / dataset
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (ds / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (w, h, objs) in samples.items():
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        assert cv2.imwrite(str(ds / "JPEGImages" / f"{name}.jpg"), img)
        write_voc_xml(ds / "Annotations" / f"{name}.xml", f"{name}.jpg", w, h, objs, dataset)
    (ds / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in samples))
    return root


def test_round_trip_matches_source(tmp_path):
    root = make_devkit(tmp_path / "VOCdevkit")
    out = tmp_path / "test_lmdb"
    ns = tmp_path / "test_name_size.txt"
    stats = convert_voc(root, "VOC2007:test", out, name_size=ns, progress=False)
    assert (stats.images, stats.boxes) == (3, 4)
    assert count_records(out) == 3
    recs = list(iter_records(out))
    assert [k for k, _ in recs] == [
        "00000000_VOC2007/JPEGImages/000001.jpg",
        "00000001_VOC2007/JPEGImages/000002.jpg",
        "00000002_VOC2007/JPEGImages/000003.jpg",
    ]
    labels = {"cat": 8, "dog": 12, "person": 15}
    for (_key, raw), (name, (w, h, objs)) in zip(recs, SAMPLES.items(), strict=True):
        ad = parse_annotated_datum(raw)
        src = root / "VOC2007/JPEGImages" / f"{name}.jpg"
        # original file bytes kept, upstream ReadFileToDatum fields
        assert ad.datum.data == src.read_bytes()
        assert ad.datum.encoded and ad.datum.label == -1
        assert not ad.datum.HasField("channels") and not ad.datum.HasField("height")
        assert ad.type == ad.BBOX
        img = decode_image(ad)
        assert np.array_equal(img, cv2.imread(str(src)))
        # boxes: grouped by first appearance, instance ids per group, x / width (no -1)
        want = {}
        for o in objs:
            want.setdefault(labels[o.name], []).append(o)
        assert [g.group_label for g in ad.annotation_group] == list(want)
        for g in ad.annotation_group:
            assert [a.instance_id for a in g.annotation] == list(range(len(want[g.group_label])))
            for a, o in zip(g.annotation, want[g.group_label], strict=True):
                assert a.bbox.xmin == np.float32(o.xmin) / np.float32(w)
                assert a.bbox.ymin == np.float32(o.ymin) / np.float32(h)
                assert a.bbox.xmax == np.float32(o.xmax) / np.float32(w)
                assert a.bbox.ymax == np.float32(o.ymax) / np.float32(h)
                assert a.bbox.difficult == o.difficult
        assert len(datum_boxes(ad)) == len(objs)
    assert ns.read_text() == "000001 48 64\n000002 70 50\n000003 40 40\n"


def test_multiple_sets_and_shuffle(tmp_path):
    root = make_devkit(tmp_path / "d", dataset="VOC2007", split="trainval")
    make_devkit(
        root, {"2012_000001": (30, 30, [VocObject("bus", 1, 1, 30, 30)])}, dataset="VOC2012", split="trainval"
    )
    out = tmp_path / "a"
    convert_voc(root, "VOC2007:trainval,VOC2012:trainval", out, progress=False)
    keys = [k for k, _ in iter_records(out)]
    assert keys[-1] == "00000003_VOC2012/JPEGImages/2012_000001.jpg"
    s1 = [
        k
        for k, _ in iter_records(
            convert_voc(
                root,
                "VOC2007:trainval,VOC2012:trainval",
                tmp_path / "s1",
                shuffle=True,
                seed=3,
                progress=False,
            ).out
        )
    ]
    s2 = [
        k
        for k, _ in iter_records(
            convert_voc(
                root,
                "VOC2007:trainval,VOC2012:trainval",
                tmp_path / "s2",
                shuffle=True,
                seed=3,
                progress=False,
            ).out
        )
    ]
    assert s1 == s2 and sorted(k[9:] for k in s1) == sorted(k[9:] for k in keys)


def test_parse_sets():
    assert parse_sets("VOC2007:test, VOC2012:trainval") == [("VOC2007", "test"), ("VOC2012", "trainval")]
    with pytest.raises(ModelLibsError, match="DATASET:SPLIT"):
        parse_sets("VOC2007")


def _bad(tmp_path, edit):
    root = make_devkit(tmp_path / "VOCdevkit")
    target = edit(root / "VOC2007")
    out = tmp_path / "out_lmdb"
    with pytest.raises(ModelLibsError) as err:
        convert_voc(root, "VOC2007:test", out, name_size=tmp_path / "ns.txt", progress=False)
    assert not out.exists() and not (tmp_path / "ns.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if "out_lmdb" in p.name] == []  # no temp left
    assert str(target) in str(err.value)
    return str(err.value)


def test_malformed_xml(tmp_path):
    def edit(ds):
        p = ds / "Annotations/000002.xml"
        p.write_text("<annotation><size><width>5</width></size>")
        return p

    assert "malformed XML" in _bad(tmp_path, edit)


def test_missing_image(tmp_path):
    def edit(ds):
        p = ds / "JPEGImages/000003.jpg"
        p.unlink()
        return p

    assert "not found" in _bad(tmp_path, edit)


def test_unreadable_jpeg(tmp_path):
    def edit(ds):
        p = ds / "JPEGImages/000002.jpg"
        p.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        return p

    assert "unreadable image" in _bad(tmp_path, edit)


def _rewrite(ds, name, objs, w=None, h=None):
    p = ds / f"Annotations/{name}.xml"
    w0, h0, _ = SAMPLES[name]
    write_voc_xml(p, f"{name}.jpg", w or w0, h or h0, objs)
    return p


def test_unknown_class(tmp_path):
    msg = _bad(tmp_path, lambda ds: _rewrite(ds, "000001", [VocObject("unicorn", 1, 1, 5, 5)]))
    assert "unknown class 'unicorn'" in msg and "object 0" in msg


def test_box_outside_image(tmp_path):
    msg = _bad(tmp_path, lambda ds: _rewrite(ds, "000002", [VocObject("dog", 1, 1, 51, 5)]))
    assert "outside" in msg


def test_box_xmax_below_xmin(tmp_path):
    msg = _bad(
        tmp_path,
        lambda ds: _rewrite(ds, "000002", [VocObject("dog", 1, 1, 5, 5), VocObject("dog", 20, 1, 10, 5)]),
    )
    assert "xmax<xmin" in msg and "object 1" in msg


def test_size_mismatch(tmp_path):
    msg = _bad(tmp_path, lambda ds: _rewrite(ds, "000003", [], w=41))
    assert "differs from image" in msg


def test_empty_split(tmp_path):
    def edit(ds):
        p = ds / "ImageSets/Main/test.txt"
        p.write_text("\n")
        return p

    assert "empty split" in _bad(tmp_path, edit)


def test_missing_split_and_root(tmp_path):
    root = make_devkit(tmp_path / "VOCdevkit")
    with pytest.raises(ModelLibsError, match=re.escape("trainval.txt: image set list not found")):
        convert_voc(root, "VOC2007:trainval", tmp_path / "o", progress=False)
    with pytest.raises(ModelLibsError, match="VOCdevkit folder not found"):
        convert_voc(tmp_path / "nope", "VOC2007:test", tmp_path / "o", progress=False)


def test_existing_output_needs_force(tmp_path):
    root = make_devkit(tmp_path / "VOCdevkit")
    out = tmp_path / "lmdb"
    convert_voc(root, "VOC2007:test", out, progress=False)
    with pytest.raises(ModelLibsError, match="already exists"):
        convert_voc(root, "VOC2007:test", out, progress=False)
    # a failing forced rerun leaves the old database intact
    (root / "VOC2007/JPEGImages/000001.jpg").write_bytes(b"junk")
    with pytest.raises(ModelLibsError):
        convert_voc(root, "VOC2007:test", out, force=True, progress=False)
    assert count_records(out) == 3
    (root / "VOC2007/ImageSets/Main/test.txt").write_text("000002\n")
    convert_voc(root, "VOC2007:test", out, force=True, progress=False)
    assert count_records(out) == 1


def test_parse_voc_xml_fields(tmp_path):
    p = tmp_path / "a.xml"
    write_voc_xml(p, "a.jpg", 10, 20, [VocObject("dog", 1, 2, 3, 4, difficult=True)])
    ann = parse_voc_xml(p)
    assert (ann.filename, ann.width, ann.height, ann.depth) == ("a.jpg", 10, 20, 3)
    assert ann.objects == [VocObject("dog", 1, 2, 3, 4, difficult=True)]


def test_unannotated_images_allowed_on_request(tmp_path):
    root = make_devkit(tmp_path / "VOCdevkit")
    (root / "VOC2007/Annotations/000002.xml").unlink()
    with pytest.raises(ModelLibsError, match=re.escape("000002.xml: annotation file not found")):
        convert_voc(root, "VOC2007:test", tmp_path / "a", progress=False)
    convert_voc(root, "VOC2007:test", tmp_path / "b", allow_unannotated=True, progress=False)
    raw = dict(iter_records(tmp_path / "b"))["00000001_VOC2007/JPEGImages/000002.jpg"]
    assert len(parse_annotated_datum(raw).annotation_group) == 0


def test_person_layout_parts_are_not_objects(tmp_path):
    # VOC person-layout XML nests <part><name>hand</name><bndbox>..</bndbox></part> in an
    # object; upstream reads only the object's direct <name>/<bndbox>, and so do we.
    p = tmp_path / "p.xml"
    p.write_text(
        "<annotation><size><width>100</width><height>80</height><depth>3</depth></size>"
        "<object><name>person</name><difficult>0</difficult>"
        "<bndbox><xmin>10</xmin><ymin>5</ymin><xmax>60</xmax><ymax>75</ymax></bndbox>"
        "<part><name>hand</name><bndbox><xmin>12</xmin><ymin>40</ymin><xmax>20</xmax>"
        "<ymax>50</ymax></bndbox></part></object></annotation>"
    )
    ann = parse_voc_xml(p)
    assert ann.objects == [VocObject("person", 10, 5, 60, 75)]


def test_one_reader_for_conversion_and_evaluation(tmp_path):
    """eval voc reads the converter's VocAnnotation: same objects, numbers as written."""
    from model_libs.evaluation.voc import load_voc_ground_truth

    base = tmp_path / "VOCdevkit" / "VOC2007"
    (base / "Annotations").mkdir(parents=True)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / "test.txt").write_text("a\n")
    objs = [VocObject("dog", 1, 2, 30, 40, difficult=True), VocObject("cat", 5, 6.5, 20, 21)]
    write_voc_xml(base / "Annotations" / "a.xml", "a.jpg", 50, 60, objs)
    ann = parse_voc_xml(base / "Annotations" / "a.xml")
    assert ann.objects == objs and isinstance(ann.objects[0].xmin, int)
    gt = load_voc_ground_truth(tmp_path / "VOCdevkit", "VOC2007", "test")
    assert gt == {"a": [("dog", (1, 2, 30, 40), True), ("cat", (5, 6.5, 20, 21), False)]}
    assert load_voc_ground_truth(base, "VOC2007", "test") == gt  # the year folder itself
    (base / "Annotations" / "a.xml").write_text(
        "<annotation><size><width>5</width><height>5</height></size><object><name>dog</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>x</xmax><ymax>2</ymax></bndbox></object></annotation>"
    )
    with pytest.raises(ModelLibsError, match=r"a\.xml: object 0 \(dog\) <xmax> is not a number: 'x'"):
        load_voc_ground_truth(tmp_path / "VOCdevkit", "VOC2007", "test")
    with pytest.raises(ModelLibsError, match=r"expected YEAR:SET"):
        parse_sets("VOC2007", option="--set")
