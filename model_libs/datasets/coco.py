"""COCO (instances JSON) to LMDB, as upstream SSD's ``data/coco`` flow produces.

Upstream splits the instances JSON into one JSON per image and converts it with
``ReadJSONToAnnotatedDatum`` (``src/caffe/util/io.cpp``): the label is looked up by the
category id as a string (``labelmap_coco.prototxt`` names are ids), the box is
``[x, y, w, h]`` -> ``xmin = x, xmax = x + w`` (float), normalised by the image size, and
``iscrowd`` becomes ``bbox.difficult`` -- crowd boxes are kept, flagged difficult, so the
evaluator ignores them. ``skip_crowd=True`` drops them instead.

Images without annotations (and the whole of test-dev, whose JSON has no ``annotations``)
become records with no annotation groups, as upstream. ``test_name_size.txt`` for COCO uses
the image id as the name (upstream ``get_image_size --name_id_file``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelLibsError
from ..proto import caffe_pb2
from .annotated_datum import Box
from .labelmap import coco_labelmap, load_labelmap, name_to_label
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

# COCO boxes come from polygon extents in float; allow this much slack (pixels) past the edge.
EDGE_TOLERANCE = 1.0


@dataclass
class CocoImage:
    """One entry of ``images`` with its (non-crowd and crowd) annotations in file order."""

    id: int
    file_name: str
    width: int
    height: int
    annotations: list[dict] = field(default_factory=list)


def load_coco(path: str | os.PathLike) -> tuple[list[CocoImage], list[tuple[int, str]]]:
    """Parse an instances (or image_info) JSON: images in file order, categories."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLibsError(f"{p}: COCO annotation file not found") from None
    except json.JSONDecodeError as exc:
        raise ModelLibsError(f"{p}: malformed JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLibsError(f"{p}: cannot read COCO annotations ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise ModelLibsError(f"{p}: not a COCO instances file (no 'images' list)")
    images: dict[int, CocoImage] = {}
    for i, im in enumerate(doc["images"]):
        try:
            ci = CocoImage(int(im["id"]), str(im["file_name"]), int(im["width"]), int(im["height"]))
        except (KeyError, TypeError, ValueError):
            raise ModelLibsError(f"{p}: images[{i}] needs id, file_name, width, height") from None
        if ci.id in images:
            raise ModelLibsError(f"{p}: images[{i}] repeats image id {ci.id}")
        images[ci.id] = ci
    for i, ann in enumerate(doc.get("annotations") or []):
        try:
            img = images[int(ann["image_id"])]
        except KeyError:
            raise ModelLibsError(f"{p}: annotations[{i}] refers to an unknown image id") from None
        except (TypeError, ValueError):
            raise ModelLibsError(f"{p}: annotations[{i}] has no valid image_id") from None
        img.annotations.append({**ann, "_index": i})
    cats = []
    for i, c in enumerate(doc.get("categories") or []):
        try:
            cats.append((int(c["id"]), str(c["name"])))
        except (KeyError, TypeError, ValueError):
            raise ModelLibsError(f"{p}: categories[{i}] needs id and name") from None
    return list(images.values()), cats


def coco_boxes(img: CocoImage, labels: dict[str, int], path: Path, skip_crowd: bool = False) -> list[Box]:
    """Normalised boxes of one image (upstream float arithmetic: x + w, then / width)."""
    out = []
    w32, h32 = np.float32(img.width), np.float32(img.height)
    for ann in img.annotations:
        where = f"{path}: annotations[{ann['_index']}] (image {img.id})"
        crowd = bool(int(ann.get("iscrowd", 0) or 0))
        if crowd and skip_crowd:
            continue
        cid = str(ann.get("category_id"))
        if cid not in labels:
            raise ModelLibsError(f"{where}: unknown category_id {cid} (not in label map)")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ModelLibsError(f"{where}: bbox must be [x, y, width, height]")
        try:
            x, y, bw, bh = (np.float32(v) for v in bbox)
        except (TypeError, ValueError):
            raise ModelLibsError(f"{where}: bbox has non-numeric values {bbox}") from None
        xmin, ymin, xmax, ymax = x, y, np.float32(x + bw), np.float32(y + bh)
        if not all(np.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
            raise ModelLibsError(f"{where}: bbox has non-finite values {bbox}")
        if bw < 0 or bh < 0:
            raise ModelLibsError(f"{where}: bbox {bbox} has negative width/height (xmax<xmin)")
        tol = EDGE_TOLERANCE
        if xmin < -tol or ymin < -tol or xmax > w32 + tol or ymax > h32 + tol:
            raise ModelLibsError(f"{where}: bbox {bbox} lies outside the {img.width}x{img.height} image")
        out.append(
            Box(
                labels[cid], float(xmin / w32), float(ymin / h32), float(xmax / w32), float(ymax / h32), crowd
            )
        )
    return out


def _coco_job(
    index: int,
    img: CocoImage,
    images_dir: Path,
    prefix: str,
    labels: dict[str, int],
    json_path: Path,
    skip_crowd: bool,
    encode_type: str,
) -> Job:
    rel = f"{prefix}/{img.file_name}" if prefix else img.file_name
    key = record_key(index, rel)

    def run() -> Record:
        img_path = images_dir / img.file_name
        image = load_image(img_path, encode_type)
        if (image.height, image.width) != (img.height, img.width):
            raise ModelLibsError(
                f"{json_path}: image {img.id} is {img.width}x{img.height} in the JSON but "
                f"{img_path} is {image.width}x{image.height}"
            )
        boxes = coco_boxes(img, labels, json_path, skip_crowd)
        return make_record(key, str(img.id), image, boxes)

    return Job(key, run)


def convert_coco(
    annotations: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    labelmap: str | os.PathLike | caffe_pb2.LabelMap | None = None,
    name_size: str | os.PathLike | None = None,
    key_prefix: str | None = None,
    skip_crowd: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    force: bool = False,
    encode_type: str = "jpg",
    progress: bool | None = None,
    workers: int | None = None,
) -> ConvertStats:
    """Convert a COCO JSON plus its image folder into an LMDB at ``out``.

    ``labelmap`` defaults to the 80 COCO categories (labels 1..80 in id order). Keys are
    ``%08d_<key_prefix>/<file_name>``; ``key_prefix`` defaults to the image folder's name
    (e.g. ``val2014``). ``name_size`` lines are ``image_id height width``.
    """
    json_path = Path(annotations)
    images_dir = Path(images)
    if not images_dir.is_dir():
        raise ModelLibsError(f"{images_dir}: image folder not found")
    imgs, _ = load_coco(json_path)
    if isinstance(labelmap, caffe_pb2.LabelMap):
        lm = labelmap
    else:
        lm = load_labelmap(labelmap) if labelmap is not None else coco_labelmap()
    labels = name_to_label(lm)
    prefix = images_dir.resolve().name if key_prefix is None else key_prefix.strip("/")
    imgs = shuffled(imgs, shuffle, seed)
    jobs = [
        _coco_job(i, im, images_dir, prefix, labels, json_path, skip_crowd, encode_type)
        for i, im in enumerate(imgs)
    ]
    return convert_jobs(
        jobs,
        out,
        name_size=name_size,
        force=force,
        progress=progress,
        workers=workers,
        desc=f"coco {json_path.name}",
        source=str(json_path),
        inputs=[json_path, images_dir, labelmap if not isinstance(labelmap, caffe_pb2.LabelMap) else None],
    )
