"""PASCAL VOC (VOCdevkit layout): parse XML annotations, list splits, convert to LMDB.

Layout: ``ROOT/<dataset>/{JPEGImages/<id>.jpg, Annotations/<id>.xml,
ImageSets/Main/<split>.txt}``, e.g. ``VOCdevkit/VOC2007``. A split is named
``DATASET:SPLIT`` (``VOC2007:test``); several are joined with commas, in list order, as
upstream ``data/VOC0712/create_list.sh`` concatenates them. Keys are
``%08d_<dataset>/JPEGImages/<id>.jpg``.

Box conversion follows upstream ``ReadXMLToAnnotatedDatum``: the integer pixel coordinates
are divided by the XML ``size`` (``xmin / width`` ...), without subtracting 1; ``difficult``
becomes ``bbox.difficult``. Where upstream only logs a warning (box outside the image,
xmax < xmin, XML size differing from the image) this converter stops with an error.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelLibsError
from ..proto import caffe_pb2
from .annotated_datum import Box, normalize
from .labelmap import load_labelmap, name_to_label, voc_labelmap
from .pipeline import (
    ConvertStats,
    Job,
    Record,
    convert_jobs,
    load_image,
    make_record,
    record_key,
    shuffled,
)


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: class name, pixel box (VOC's 1-based integers) and flags.

    Coordinates are the numbers the file holds: ints for every real VOC annotation, floats
    where a hand-made file writes ``12.5``.
    """

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False
    truncated: bool = False

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.xmin, self.ymin, self.xmax, self.ymax)


@dataclass
class VocAnnotation:
    """A parsed annotation file."""

    filename: str
    width: int
    height: int
    depth: int
    objects: list[VocObject] = field(default_factory=list)


def _text(node: ET.Element, tag: str, path: Path, what: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ModelLibsError(f"{path}: {what} has no <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: Path, what: str) -> float:
    """An int where the text is one (every real VOC file), else the float it writes."""
    text = _text(node, tag, path, what)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ModelLibsError(f"{path}: {what} <{tag}> is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ModelLibsError(f"{path}: {what} <{tag}> is not a finite number: {text!r}")
    return int(value) if value.is_integer() else value


def _flag(node: ET.Element, tag: str, path: Path, what: str) -> bool:
    """``<difficult>``/``<truncated>``: absent means 0; any non-zero number means set."""
    if node.find(tag) is None or not (node.findtext(tag) or "").strip():
        return False
    return _number(node, tag, path, what) != 0


def parse_voc_xml(path: str | os.PathLike) -> VocAnnotation:
    """Parse one VOC annotation XML; every problem raises ModelLibsError naming the file.

    The one reader of VOC XML (the converter and the VOC evaluation both use it). Objects are
    the ``<object>`` children of ``<annotation>`` with their own ``<name>``/``<bndbox>``, as
    upstream and the devkit read them (a person layout's ``<part>`` is not an object). The
    box geometry is checked by :func:`check_boxes`, which the converter applies.
    """
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except FileNotFoundError:
        raise ModelLibsError(f"{p}: annotation file not found") from None
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else 0
        raise ModelLibsError(f"{p}:{line}: malformed XML ({exc})") from None
    except OSError as exc:
        raise ModelLibsError(f"{p}: cannot read annotation ({exc.strerror})") from None
    if root.tag != "annotation":
        raise ModelLibsError(f"{p}: root element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    if size is None:
        raise ModelLibsError(f"{p}: no <size> element")
    width = int(_number(size, "width", p, "<size>"))
    height = int(_number(size, "height", p, "<size>"))
    depth = int(_number(size, "depth", p, "<size>")) if size.find("depth") is not None else 3
    if width <= 0 or height <= 0:
        raise ModelLibsError(f"{p}: invalid image size {width}x{height}")
    fn = root.find("filename")
    ann = VocAnnotation(fn.text.strip() if fn is not None and fn.text else "", width, height, depth)
    for i, obj in enumerate(root.findall("object")):  # direct children, as upstream
        what = f"object {i}"
        name = _text(obj, "name", p, what)
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ModelLibsError(f"{p}: {what} ({name}) has no <bndbox>")
        xmin, ymin, xmax, ymax = (
            _number(bnd, t, p, f"{what} ({name})") for t in ("xmin", "ymin", "xmax", "ymax")
        )
        difficult = _flag(obj, "difficult", p, f"{what} ({name})")
        truncated = _flag(obj, "truncated", p, f"{what} ({name})")
        ann.objects.append(VocObject(name, xmin, ymin, xmax, ymax, difficult, truncated))
    return ann


def check_boxes(ann: VocAnnotation, path: str | os.PathLike) -> None:
    """Refuse inverted boxes and boxes outside the image (upstream only warns)."""
    for i, o in enumerate(ann.objects):
        what = f"object {i} ({o.name}) box ({o.xmin},{o.ymin},{o.xmax},{o.ymax})"
        if o.xmax < o.xmin or o.ymax < o.ymin:
            raise ModelLibsError(f"{path}: {what} has xmax<xmin or ymax<ymin")
        if o.xmin < 0 or o.ymin < 0 or o.xmax > ann.width or o.ymax > ann.height:
            raise ModelLibsError(f"{path}: {what} lies outside the {ann.width}x{ann.height} image")


def voc_boxes(ann: VocAnnotation, labels: dict[str, int], path: Path) -> list[Box]:
    """Normalised boxes (upstream: ``xmin / width`` in float, no ``-1``)."""
    check_boxes(ann, path)
    out = []
    for i, o in enumerate(ann.objects):
        if o.name not in labels:
            raise ModelLibsError(f"{path}: object {i} has unknown class {o.name!r} (not in label map)")
        w, h = ann.width, ann.height
        out.append(
            Box(
                labels[o.name],
                normalize(o.xmin, w),
                normalize(o.ymin, h),
                normalize(o.xmax, w),
                normalize(o.ymax, h),
                o.difficult,
            )
        )
    return out


def parse_sets(spec: str, option: str = "--sets") -> list[tuple[str, str]]:
    """``"VOC2007:trainval,VOC2012:trainval"`` -> ``[("VOC2007","trainval"), ...]``.

    The one parser of image-set names (``convert voc --sets``, ``eval voc --set``).
    """
    out = []
    for part in (s.strip() for s in spec.split(",")):
        if not part:
            continue
        dataset, sep, split = part.partition(":")
        if not sep or not dataset or not split:
            raise ModelLibsError(f"{option} {part!r}: expected YEAR:SET (DATASET:SPLIT), e.g. VOC2007:test")
        out.append((dataset, split))
    if not out:
        raise ModelLibsError(f"{option}: no DATASET:SPLIT given")
    return out


def split_ids(root: str | os.PathLike, dataset: str, split: str) -> list[str]:
    """Image ids of ``ROOT/<dataset>/ImageSets/Main/<split>.txt``, in file order."""
    lst = Path(root) / dataset / "ImageSets" / "Main" / f"{split}.txt"
    try:
        lines = lst.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise ModelLibsError(f"{lst}: image set list not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLibsError(f"{lst}: cannot read image set list ({exc})") from None
    ids = [ln.split()[0] for ln in lines if ln.strip()]
    if not ids:
        raise ModelLibsError(f"{lst}: empty split, lists no images")
    return ids


def list_split(root: str | os.PathLike, dataset: str, split: str) -> list[tuple[str, str]]:
    """Image and annotation paths, relative to ``root``, of one split, in file order."""
    ids = split_ids(root, dataset, split)
    return [(f"{dataset}/JPEGImages/{i}.jpg", f"{dataset}/Annotations/{i}.xml") for i in ids]


def _voc_job(
    root: Path,
    index: int,
    img_rel: str,
    xml_rel: str,
    labels: dict[str, int],
    allow_unannotated: bool,
    encode_type: str,
) -> Job:
    key = record_key(index, img_rel)

    def run() -> Record:
        img_path = root / img_rel
        xml_path = root / xml_rel
        image = load_image(img_path, encode_type)
        boxes: list[Box] = []
        if allow_unannotated and not xml_path.exists():
            pass  # upstream: no label file -> record with no annotation groups
        else:
            ann = parse_voc_xml(xml_path)
            if (ann.height, ann.width) != (image.height, image.width):
                raise ModelLibsError(
                    f"{xml_path}: size {ann.width}x{ann.height} differs from image "
                    f"{img_path} ({image.width}x{image.height})"
                )
            boxes = voc_boxes(ann, labels, xml_path)
        return make_record(key, Path(img_rel).stem, image, boxes)

    return Job(key, run)


def convert_voc(
    root: str | os.PathLike,
    sets: str | Sequence[tuple[str, str]],
    out: str | os.PathLike,
    *,
    labelmap: str | os.PathLike | caffe_pb2.LabelMap | None = None,
    name_size: str | os.PathLike | None = None,
    shuffle: bool = False,
    seed: int = 0,
    force: bool = False,
    allow_unannotated: bool = False,
    encode_type: str = "jpg",
    progress: bool | None = None,
    workers: int | None = None,
) -> ConvertStats:
    """Convert VOC splits under ``root`` (the VOCdevkit folder) into one LMDB at ``out``.

    ``labelmap``: a LabelMap or its file (default: the 20 VOC classes). ``name_size``: also
    write ``name height width`` per image (upstream ``test_name_size.txt``). ``shuffle``
    reorders the concatenated list with ``seed`` before keys are numbered.
    """
    root = Path(root)
    if not root.is_dir():
        raise ModelLibsError(f"{root}: VOCdevkit folder not found")
    pairs = parse_sets(sets) if isinstance(sets, str) else list(sets)
    if isinstance(labelmap, caffe_pb2.LabelMap):
        lm = labelmap
    else:
        lm = load_labelmap(labelmap) if labelmap is not None else voc_labelmap()
    labels = name_to_label(lm)
    items: list[tuple[str, str]] = []
    for dataset, split in pairs:
        items += list_split(root, dataset, split)
    items = shuffled(items, shuffle, seed)
    jobs = [
        _voc_job(root, i, img, xml, labels, allow_unannotated, encode_type)
        for i, (img, xml) in enumerate(items)
    ]
    names = ",".join(f"{d}:{s}" for d, s in pairs)
    return convert_jobs(
        jobs,
        out,
        name_size=name_size,
        force=force,
        progress=progress,
        workers=workers,
        desc=f"voc {names}",
        source=f"{root} {names}",
        inputs=[root, labelmap if not isinstance(labelmap, caffe_pb2.LabelMap) else None],
    )


def write_voc_xml(
    path: str | os.PathLike,
    filename: str,
    width: int,
    height: int,
    objects: Sequence[VocObject],
    folder: str = "",
    depth: int = 3,
) -> None:
    """Write a VOC-style annotation file (used by the synthetic generator and tests)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, v in (("width", width), ("height", height), ("depth", depth)):
        ET.SubElement(size, tag).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for o in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = o.name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "1" if o.truncated else "0"
        ET.SubElement(obj, "difficult").text = "1" if o.difficult else "0"
        bnd = ET.SubElement(obj, "bndbox")
        for tag, v in (("xmin", o.xmin), ("ymin", o.ymin), ("xmax", o.xmax), ("ymax", o.ymax)):
            ET.SubElement(bnd, tag).text = str(v)
    ET.indent(root)
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8") + b"\n")
