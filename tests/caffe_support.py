"""Helpers for the tests that run the built Caffe: tiny annotated images and LMDBs.

pycaffe itself comes from the ``caffe`` fixture of ``tests/conftest.py`` (which also holds
the CI rule: a Caffe test that cannot run fails under CI).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_libs.proto import caffe_pb2

Box = tuple[int, float, float, float, float]  # label, xmin, ymin, xmax, ymax (normalised)


def encode(img: np.ndarray, ext: str = ".png") -> bytes:
    """Encode a BGR uint8 image with OpenCV."""
    import cv2

    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def scene(
    h: int,
    w: int,
    boxes: list[Box],
    bg: tuple[int, int, int] = (200, 200, 200),
    colors: dict[int, tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """A flat background with one flat-coloured rectangle per box."""
    colors = colors or {}
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bg
    for label, x0, y0, x1, y1 in boxes:
        c = colors.get(label, (0, 0, 255))
        img[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = c
    return img


def annotated_datum(
    img: np.ndarray, boxes: list[Box], ext: str = ".png", difficult: set[int] | None = None
) -> bytes:
    """Serialized AnnotatedDatum (encoded image, BBOX annotations grouped by label)."""
    ad = caffe_pb2.AnnotatedDatum()
    ad.type = caffe_pb2.AnnotatedDatum.BBOX
    d = ad.datum
    d.channels, d.height, d.width = img.shape[2], img.shape[0], img.shape[1]
    d.encoded = True
    d.data = encode(img, ext)
    d.label = -1
    groups: dict[int, caffe_pb2.AnnotationGroup] = {}
    for i, (label, x0, y0, x1, y1) in enumerate(boxes):
        g = groups.get(label)
        if g is None:
            g = groups[label] = ad.annotation_group.add()
            g.group_label = label
        a = g.annotation.add()
        a.instance_id = len(g.annotation) - 1
        a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax = x0, y0, x1, y1
        a.bbox.difficult = bool(difficult and i in difficult)
    return ad.SerializeToString()


def write_lmdb(path: Path, records: list[bytes]) -> Path:
    """An LMDB with the given serialized records under keys 00000000, 00000001, ..."""
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, rec in enumerate(records):
            txn.put(f"{i:08d}".encode(), rec)
    env.close()
    return path


def write_labelmap(path: Path, num_classes: int) -> Path:
    """A LabelMap prototxt: background plus class1..classN-1."""
    items = ['item {\n  name: "none_of_the_above"\n  label: 0\n  display_name: "background"\n}']
    items += [
        f'item {{\n  name: "class{i}"\n  label: {i}\n  display_name: "class{i}"\n}}'
        for i in range(1, num_classes)
    ]
    path.write_text("\n".join(items) + "\n")
    return path


def tiny_detection_lmdb(
    path: Path, n: int = 6, size: int = 96, seed: int = 0, num_classes: int = 21
) -> tuple[Path, list[list[Box]]]:
    """``n`` images of ``size``x``size`` with 1-2 coloured objects each; returns the boxes."""
    rng = np.random.default_rng(seed)
    records, all_boxes = [], []
    for _ in range(n):
        boxes: list[Box] = []
        for _ in range(int(rng.integers(1, 3))):
            label = int(rng.integers(1, num_classes))
            x0, y0 = rng.uniform(0.05, 0.5, 2)
            bw, bh = rng.uniform(0.2, 0.45, 2)
            boxes.append((label, float(x0), float(y0), float(x0 + bw), float(y0 + bh)))
        colors = {b[0]: tuple(int(v) for v in rng.integers(0, 256, 3)) for b in boxes}
        img = scene(size, size, boxes, colors=colors)
        records.append(annotated_datum(img, boxes, ext=".jpg"))
        all_boxes.append(boxes)
    return write_lmdb(path, records), all_boxes
