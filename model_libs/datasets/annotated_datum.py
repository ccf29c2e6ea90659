"""Build ``AnnotatedDatum`` records the way SSD's ``convert_annoset`` does, and decode them.

Upstream facts mirrored here (``src/caffe/util/io.cpp``, ``tools/convert_annoset.cpp``):

* ``--encoded --encode_type=jpg`` with no resizing keeps the original file bytes when the file
  extension is jpg/jpeg (``ReadFileToDatum``): ``datum.data`` = file bytes,
  ``datum.encoded = true``, ``datum.label = -1``; channels/height/width are *not* set.
  Other formats are re-encoded to JPEG (``EncodeCVMatToDatum``), which does set
  channels/height/width.
* ``type = BBOX``; boxes are grouped by label, groups in order of first appearance,
  ``instance_id`` counting from 0 within a group; ``bbox.difficult`` carries the flag.
* Box coordinates are ``float(pixel) / size`` computed in single precision, no ``-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import ModelLibsError
from ..proto import caffe_pb2


@dataclass(frozen=True)
class Box:
    """One ground-truth box in normalised [0, 1] coordinates."""

    label: int
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False


def normalize(value: float, size: int) -> float:
    """``value / size`` in float32, as upstream's ``static_cast<float>(v) / size``."""
    return float(np.float32(value) / np.float32(size))


def build_annotated_datum(
    image_bytes: bytes,
    boxes: Sequence[Box],
    shape: tuple[int, int, int] | None = None,
) -> caffe_pb2.AnnotatedDatum:
    """An ``AnnotatedDatum`` holding encoded ``image_bytes`` and ``boxes`` grouped by label.

    ``shape`` = (channels, height, width) is stored only for re-encoded images (upstream's
    ``EncodeCVMatToDatum``); leave it None when the bytes are the original file.
    """
    ad = caffe_pb2.AnnotatedDatum()
    d = ad.datum
    if shape is not None:
        d.channels, d.height, d.width = shape
    d.data = image_bytes
    d.label = -1
    d.encoded = True
    ad.type = caffe_pb2.AnnotatedDatum.BBOX
    groups: dict[int, caffe_pb2.AnnotationGroup] = {}
    for b in boxes:
        group = groups.get(b.label)
        if group is None:
            group = ad.annotation_group.add(group_label=b.label)
            groups[b.label] = group
        anno = group.annotation.add(instance_id=len(group.annotation))
        bb = anno.bbox
        bb.xmin, bb.ymin, bb.xmax, bb.ymax = b.xmin, b.ymin, b.xmax, b.ymax
        bb.difficult = bool(b.difficult)
    return ad


def datum_boxes(ad: caffe_pb2.AnnotatedDatum) -> list[Box]:
    """The boxes of a record, group by group (as stored)."""
    out = []
    for g in ad.annotation_group:
        for a in g.annotation:
            bb = a.bbox
            out.append(Box(g.group_label, bb.xmin, bb.ymin, bb.xmax, bb.ymax, bb.difficult))
    return out


def parse_annotated_datum(raw: bytes, where: str = "record") -> caffe_pb2.AnnotatedDatum:
    """Parse serialized bytes; a corrupt record raises ModelLibsError naming ``where``."""
    ad = caffe_pb2.AnnotatedDatum()
    try:
        ad.ParseFromString(raw)
    except DecodeError as exc:
        raise ModelLibsError(f"{where}: not an AnnotatedDatum ({exc})") from None
    return ad


def decode_image(ad: caffe_pb2.AnnotatedDatum, where: str = "record") -> np.ndarray:
    """The record's image as a BGR uint8 array (H, W, 3)."""
    import cv2

    d = ad.datum
    if d.encoded:
        img = cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ModelLibsError(f"{where}: the encoded image does not decode")
        return img
    c, h, w = d.channels, d.height, d.width
    if c * h * w == 0 or len(d.data) != c * h * w:
        raise ModelLibsError(f"{where}: raw datum of {len(d.data)} bytes does not match {c}x{h}x{w}")
    chw = np.frombuffer(d.data, np.uint8).reshape(c, h, w)
    img = np.ascontiguousarray(chw.transpose(1, 2, 0))
    if c == 1:
        img = np.repeat(img, 3, axis=2)
    return img


def decode_annotated_datum(raw: bytes, where: str = "record") -> tuple[np.ndarray, list[Box]]:
    """Serialized record -> (BGR image, boxes)."""
    ad = parse_annotated_datum(raw, where)
    return decode_image(ad, where), datum_boxes(ad)
