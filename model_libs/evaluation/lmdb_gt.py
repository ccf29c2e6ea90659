"""Ground truth from an SSD annotated LMDB (``AnnotatedDatum`` records, as convert_annoset
writes them), in the plain structure :func:`model_libs.evaluation.voc.evaluate_voc` takes.

Records are keyed ``%08d_<relative image path>``; the image id is the file name without folder
and extension (``00000000_VOC2007/JPEGImages/000001.jpg`` → ``000001``), which is what
DetectionOutput writes in VOC result files. Boxes are stored normalized to [0, 1]; they are
scaled back to pixels with the image size (``datum.width/height`` when set, otherwise read
from the encoded image) and rounded to 1/1000 pixel, which recovers the XML values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import ModelLibsError
from .voc import GTObject


def image_id_from_key(key: str) -> str:
    """``"00000012_VOC2007/JPEGImages/000012.jpg"`` → ``"000012"``."""
    _, sep, rel = key.partition("_")
    name = PurePosixPath(rel if sep else key).name
    return name.rsplit(".", 1)[0] if "." in name else name


def _image_size(datum, key: str) -> tuple[int, int]:
    if datum.height > 0 and datum.width > 0:
        return datum.width, datum.height
    if not datum.encoded:
        raise ModelLibsError(f"{key}: raw datum without width/height")
    import cv2

    img = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ModelLibsError(f"{key}: image bytes do not decode")
    return img.shape[1], img.shape[0]


def load_lmdb_ground_truth(
    path: str | os.PathLike, label_names: Mapping[int, str]
) -> dict[str, list[GTObject]]:
    """``{image_id: [(class, (xmin, ymin, xmax, ymax) in pixels, difficult), ...]}``.

    ``label_names`` maps label numbers to class names (see
    :func:`model_libs.datasets.labelmap.label_to_name`).
    """
    from ..datasets.annotated_datum import parse_annotated_datum
    from ..datasets.lmdb_io import iter_records

    p = Path(path)
    out: dict[str, list[GTObject]] = {}
    for key, raw in iter_records(p):
        ad = parse_annotated_datum(raw, f"{p}: record {key}")
        img = image_id_from_key(key)
        if img in out:
            raise ModelLibsError(f"{p}: record {key}: image id {img!r} appears twice")
        w, h = _image_size(ad.datum, key)
        objs: list[GTObject] = []
        for g in ad.annotation_group:
            if g.group_label not in label_names:
                raise ModelLibsError(f"{p}: record {key}: label {g.group_label} is not in the label map")
            name = label_names[g.group_label]
            for a in g.annotation:
                b = a.bbox
                # Undo the float32 normalization: VOC/COCO pixel values have at most a few
                # decimals, float32 error is < 1e-4 px for sizes < 1e3.
                box = (
                    round(float(b.xmin) * w, 3),
                    round(float(b.ymin) * h, 3),
                    round(float(b.xmax) * w, 3),
                    round(float(b.ymax) * h, 3),
                )
                if box[2] < box[0] or box[3] < box[1]:
                    raise ModelLibsError(f"{p}: record {key}: {name} box {box} is inverted (xmax < xmin)")
                objs.append((name, box, bool(b.difficult)))
        out[img] = objs
    return out
