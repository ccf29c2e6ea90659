"""Label maps: ``LabelMap`` text protos, name/label lookups, the VOC and COCO maps.

Upstream convention (``labelmap_voc.prototxt``, shipped in ``model_libs/data``): item 0 is the background,
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
from .layout import labelmap_path

BACKGROUND_NAME = "none_of_the_above"
BACKGROUND_DISPLAY = "background"


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
    """Upstream ``labelmap_voc.prototxt`` (background + the 20 VOC classes), as the package ships it."""
    return load_labelmap(labelmap_path("labelmap_voc.prototxt"))


def coco_labelmap() -> caffe_pb2.LabelMap:
    """Upstream ``labelmap_coco.prototxt`` (``name`` = category id, labels 1..80 in id order)."""
    return load_labelmap(labelmap_path("labelmap_coco.prototxt"))


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


def load_labelmap(path: str | os.PathLike | caffe_pb2.LabelMap) -> caffe_pb2.LabelMap:
    """Read and validate a ``LabelMap`` text proto; errors name the file.

    The toolkit's one label-map reader: every command takes the map through here and looks
    up what it needs with the views below (:func:`name_to_label` for converters,
    :func:`label_to_name` for result files, :func:`label_to_display_name` for captions). A
    ``LabelMap`` already in memory is returned as it is.
    """
    if isinstance(path, caffe_pb2.LabelMap):
        return path
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


def label_to_name(lm: caffe_pb2.LabelMap) -> dict[int, str]:
    """``label -> name``, in label order: DetectionOutput names its VOC result files
    ``comp4_det_test_<name>.txt`` after it, so scoring looks classes up by ``name``."""
    return {item.label: item.name for item in sorted(lm.item, key=lambda i: i.label)}


def foreground_names(lm: caffe_pb2.LabelMap, background_label: int = 0) -> list[str]:
    """Class names without the background, in label order."""
    return [name for label, name in label_to_name(lm).items() if label != background_label]


def label_to_display_name(lm: caffe_pb2.LabelMap) -> dict[int, str]:
    """``label -> display_name`` (falls back to ``name`` when no display name is set)."""
    return {item.label: (item.display_name or item.name) for item in lm.item}
