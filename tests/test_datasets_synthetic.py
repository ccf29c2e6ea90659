"""Synthetic set: deterministic, VOC layout, varied, and converts to valid LMDBs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model_libs.datasets.annotated_datum import datum_boxes, parse_annotated_datum
from model_libs.datasets.inspect import validate_lmdb
from model_libs.datasets.labelmap import load_labelmap, name_to_label
from model_libs.datasets.lmdb_io import iter_records
from model_libs.datasets.synthetic import (
    SYNTH_CLASSES,
    build_synthetic_lmdbs,
    make_synthetic,
    render_image,
    render_image_with_masks,
)
from model_libs.datasets.voc import parse_voc_xml
from model_libs.errors import ModelLibsError


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_from_seed(tmp_path):
    a = make_synthetic(tmp_path / "a", seed=5, n_train=6, n_test=3)
    b = make_synthetic(tmp_path / "b", seed=5, n_train=6, n_test=3)
    c = make_synthetic(tmp_path / "c", seed=6, n_train=6, n_test=3)
    fa, fb, fc = _files(a.root), _files(b.root), _files(c.root)
    assert fa == fb
    assert fa.keys() == fc.keys() and fa != fc


def test_layout_and_annotations(tmp_path):
    s = make_synthetic(tmp_path / "s", seed=0, n_train=40, n_test=10)
    ds = s.root / "Synth"
    train = (ds / "ImageSets/Main/trainval.txt").read_text().split()
    test = (ds / "ImageSets/Main/test.txt").read_text().split()
    assert len(train) == 40 and len(test) == 10 and not set(train) & set(test)
    assert list(name_to_label(load_labelmap(s.labelmap))) == ["none_of_the_above", *SYNTH_CLASSES]
    classes, sizes, difficult, n_obj = set(), [], 0, 0
    for name in train + test:
        ann = parse_voc_xml(ds / "Annotations" / f"{name}.xml")  # checks boxes inside image
        img = cv2.imread(str(ds / "JPEGImages" / f"{name}.jpg"))
        assert img.shape == (ann.height, ann.width, 3)
        assert 160 <= ann.width <= 300 and 160 <= ann.height <= 300
        for o in ann.objects:
            classes.add(o.name)
            sizes.append(max(o.xmax - o.xmin, o.ymax - o.ymin) + 1)
            difficult += o.difficult
            n_obj += 1
    assert n_obj == s.n_objects
    assert classes == set(SYNTH_CLASSES)
    assert min(sizes) < 16 and max(sizes) > 80  # small and large objects
    assert 0 < difficult < 0.2 * n_obj  # a few difficult ones


def _overlaps(a, b) -> bool:
    return not (a.xmax < b.xmin or b.xmax < a.xmin or a.ymax < b.ymin or b.ymax < a.ymin)


def test_objects_are_drawn_where_the_boxes_say():
    """Each object's painted pixels lie inside its VOC box, the box is tight around them
    (within 1 px per side: anti-aliased edges), and they stand out from the surroundings."""
    tight = contrasted = 0
    for seed, index in [(s, i) for s in (0, 1) for i in range(30)]:
        img, objects, masks = render_image_with_masks(seed, index)
        assert objects and len(masks) == len(objects)
        for k, (o, mask) in enumerate(zip(objects, masks)):
            x0, y0, x1, y1 = o.xmin - 1, o.ymin - 1, o.xmax - 1, o.ymax - 1  # VOC is 1-based
            inside = np.zeros_like(mask)
            inside[y0 : y1 + 1, x0 : x1 + 1] = True
            assert not (mask & ~inside).any(), (seed, index, o)  # nothing painted outside the box
            if any(_overlaps(o, later) for later in objects[k + 1 :]):
                continue  # partly hidden by a later object: its visible part may be smaller
            ys, xs = np.nonzero(mask)
            assert max(xs.min() - x0, ys.min() - y0, x1 - xs.max(), y1 - ys.max()) <= 1, (seed, index, o)
            tight += 1
            ring = np.zeros_like(mask)
            ring[max(y0 - 3, 0) : y1 + 4, max(x0 - 3, 0) : x1 + 4] = True
            ring &= ~inside
            if o.difficult or ring.sum() < 20:
                continue
            # measured over 430 such objects: at least 55 (sum over B, G, R of the mean difference)
            diff = np.abs(img[mask].mean(0) - img[ring].mean(0)).sum()
            assert diff > 30, (seed, index, o, diff)
            contrasted += 1
    assert tight > 100 and contrasted > 100
    # colour does not identify the class: the same class gets very different colours
    colours = {}
    for i in range(30):
        im, objs = render_image(1, i)
        for o in objs:
            if not o.difficult:
                c = im[(o.ymin + o.ymax) // 2 - 1, (o.xmin + o.xmax) // 2 - 1].astype(float)
                colours.setdefault(o.name, []).append(c)
    assert all(np.std(np.array(v), axis=0).mean() > 30 for v in colours.values())


def test_build_synthetic_lmdbs_round_trip(tmp_path):
    out = build_synthetic_lmdbs(tmp_path / "q", seed=1, n_train=12, n_test=5)
    lm = load_labelmap(out.labelmap)
    labels = name_to_label(lm)
    for lmdb_path, split, n in ((out.train_lmdb, "trainval", 12), (out.test_lmdb, "test", 5)):
        rep = validate_lmdb(lmdb_path, lm)
        assert rep.ok and rep.records == n, rep.summary()
        ids = (out.source.root / "Synth/ImageSets/Main" / f"{split}.txt").read_text().split()
        for (key, raw), name in zip(iter_records(lmdb_path), ids, strict=True):
            assert key.endswith(f"_Synth/JPEGImages/{name}.jpg")
            ann = parse_voc_xml(out.source.root / "Synth/Annotations" / f"{name}.xml")
            boxes = datum_boxes(parse_annotated_datum(raw))
            got = sorted(
                (b.label, round(b.xmin * ann.width), round(b.ymax * ann.height), b.difficult) for b in boxes
            )
            want = sorted((labels[o.name], o.xmin, o.ymax, o.difficult) for o in ann.objects)
            assert got == want
    lines = out.name_size.read_text().splitlines()
    assert len(lines) == 5 and all(len(ln.split()) == 3 for ln in lines)


def test_existing_output_and_bad_counts(tmp_path):
    make_synthetic(tmp_path / "s", n_train=2, n_test=1)
    with pytest.raises(ModelLibsError, match="already exists"):
        make_synthetic(tmp_path / "s", n_train=2, n_test=1)
    make_synthetic(tmp_path / "s", n_train=3, n_test=1, force=True)
    assert len((tmp_path / "s/Synth/ImageSets/Main/trainval.txt").read_text().split()) == 3
    with pytest.raises(ModelLibsError, match="at least 1"):
        make_synthetic(tmp_path / "t", n_train=0, n_test=1)
    assert not (tmp_path / "t").exists()
