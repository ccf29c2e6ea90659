"""Label maps: ``LabelMap`` text protos, name/label lookups, the VOC and COCO maps.

Upstream convention (``data/VOC0712/labelmap_voc.prototxt``): item 0 is the background,
``name: "none_of_the_above" label: 0 display_name: "background"``, then one item per class
with contiguous labels from 1. For COCO the ``name`` is the COCO category id as a string and
``display_name`` the category name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format

from ..errors import ModelLibsError
from ..fsutil import atomic_write_text
from ..proto import caffe_pb2

BACKGROUND_NAME = "none_of_the_above"
BACKGROUND_DISPLAY = "background"

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

# (COCO category id, name): the 80 detection categories of instances_*.json, in id order.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"),
    (6, "bus"), (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"),
    (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"), (15, "bench"),
    (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"),
    (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"),
    (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"),
    (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"),
    (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"),
    (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"),
    (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"),
    (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"),
    (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip


def make_labelmap(
    names: Sequence[str],
    display_names: Sequence[str] | None = None,
    background: bool = True,
) -> caffe_pb2.LabelMap:
    """A label map with contiguous labels: background 0 (if ``background``), classes from 1."""
    if display_names is not None and len(display_names) != len(names):
        raise ModelLibsError("make_labelmap: names and display_names differ in length")
    lm = caffe_pb2.LabelMap()
    if background:
        lm.item.add(name=BACKGROUND_NAME, label=0, display_name=BACKGROUND_DISPLAY)
    start = 1 if background else 0
    for i, name in enumerate(names):
        disp = display_names[i] if display_names is not None else name
        lm.item.add(name=name, label=start + i, display_name=disp)
    validate_labelmap(lm)
    return lm


def voc_labelmap() -> caffe_pb2.LabelMap:
    """Upstream ``labelmap_voc.prototxt``: background + the 20 VOC classes."""
    return make_labelmap(VOC_CLASSES)


def coco_labelmap(categories: Sequence[tuple[int, str]] = COCO_CATEGORIES) -> caffe_pb2.LabelMap:
    """Upstream ``labelmap_coco.prototxt``: ``name`` = category id, labels 1..N in id order."""
    cats = sorted(categories)
    return make_labelmap([str(cid) for cid, _ in cats], [n for _, n in cats])


def validate_labelmap(lm: caffe_pb2.LabelMap, where: str = "label map") -> None:
    """Reject empty maps, missing fields and duplicate names or labels."""
    if not lm.item:
        raise ModelLibsError(f"{where}: label map has no items")
    names: set[str] = set()
    labels: set[int] = set()
    for i, item in enumerate(lm.item):
        if not item.HasField("name") or not item.HasField("label"):
            raise ModelLibsError(f"{where}: item {i} needs both a name and a label")
        if item.label < 0:
            raise ModelLibsError(f"{where}: item {i} ({item.name!r}) has negative label")
        if item.name in names:
            raise ModelLibsError(f"{where}: duplicate name {item.name!r} (item {i})")
        if item.label in labels:
            raise ModelLibsError(f"{where}: duplicate label {item.label} (item {i})")
        names.add(item.name)
        labels.add(item.label)


def load_labelmap(path: str | os.PathLike) -> caffe_pb2.LabelMap:
    """Read and validate a ``LabelMap`` text proto; errors name the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelLibsError(f"{p}: label map file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLibsError(f"{p}: cannot read label map ({exc})") from None
    lm = caffe_pb2.LabelMap()
    try:
        text_format.Parse(text, lm)
    except text_format.ParseError as exc:
        raise ModelLibsError(f"{p}: not a LabelMap text proto ({exc})") from None
    validate_labelmap(lm, str(p))
    return lm


def check_labelmap_fits(
    lm: caffe_pb2.LabelMap, num_classes: int, where: str = "label map", net: str = "the net"
) -> None:
    """Refuse a label map whose labels are not exactly 0 .. ``num_classes`` - 1.

    A net with ``num_classes`` outputs (background included) names its class ``k`` by the
    map's item with label ``k``; a map made for another dataset would name every detection
    wrongly (a star called "boat") without any other sign.
    """
    labels = sorted(item.label for item in lm.item)
    if labels != list(range(num_classes)):
        have = f"labels {labels[0]}..{labels[-1]}" if labels else "no labels"
        raise ModelLibsError(
            f"{where}: {len(labels)} classes ({have}) do not fit {net}, which has num_classes "
            f"{num_classes} (labels 0..{num_classes - 1}, background included)"
        )


def labelmap_to_text(lm: caffe_pb2.LabelMap) -> str:
    """Text-format the map in upstream's layout (one ``item { ... }`` block per class)."""
    return text_format.MessageToString(lm)


def save_labelmap(lm: caffe_pb2.LabelMap, path: str | os.PathLike) -> Path:
    """Write ``lm`` as a text proto (atomically)."""
    validate_labelmap(lm, str(path))
    return atomic_write_text(path, labelmap_to_text(lm))


def name_to_label(lm: caffe_pb2.LabelMap) -> dict[str, int]:
    """``name -> label`` (what the converters look class names up in)."""
    return {item.name: item.label for item in lm.item}


def label_to_display_name(lm: caffe_pb2.LabelMap) -> dict[int, str]:
    """``label -> display_name`` (falls back to ``name`` when no display name is set)."""
    return {item.label: (item.display_name or item.name) for item in lm.item}
