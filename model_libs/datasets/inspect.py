"""Read an LMDB of AnnotatedDatum records back: count, validate every record, draw a few.

:func:`validate_lmdb` decodes every image and checks every box (type BBOX, labels > 0 and in
the label map when one is given, 0 <= xmin <= xmax <= 1, same for y, instance ids counting
from 0, encoded image present). :func:`draw_records` writes PNGs with the boxes and class
names drawn on, for a person to look at.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelLibsError
from ..proto import caffe_pb2
from .annotated_datum import datum_boxes, decode_image, parse_annotated_datum
from .labelmap import label_to_display_name, load_labelmap
from .lmdb_io import iter_records

EPS = 1e-6  # float32 slack for box bounds


@dataclass
class InspectReport:
    """What :func:`validate_lmdb` found."""

    path: Path
    records: int = 0
    boxes: int = 0
    difficult: int = 0
    empty_records: int = 0
    per_label: Counter = field(default_factory=Counter)
    min_size: tuple[int, int] | None = None  # (height, width)
    max_size: tuple[int, int] | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.records > 0

    def summary(self, names: dict[int, str] | None = None) -> str:
        labels = ", ".join(f"{(names or {}).get(k, k)}: {v}" for k, v in sorted(self.per_label.items()))
        lines = [
            (
                f"{self.path}: {self.records} records, {self.boxes} boxes "
                f"({self.difficult} difficult), {self.empty_records} records without boxes"
            ),
            f"  image sizes (h x w): {self.min_size} .. {self.max_size}",
            f"  boxes per label: {labels or '-'}",
        ]
        if self.errors:
            lines.append(f"  {len(self.errors)} invalid records:")
            lines += [f"    {e}" for e in self.errors[:20]]
        else:
            lines.append("  all records decode and all boxes are valid")
        return "\n".join(lines)


def _check_record(key: str, ad: caffe_pb2.AnnotatedDatum, valid: set[int] | None) -> list[str]:
    errs = []
    if not ad.HasField("datum") or not ad.datum.data:
        errs.append(f"{key}: no image data")
    if ad.type != caffe_pb2.AnnotatedDatum.BBOX:
        errs.append(f"{key}: annotation type {ad.type} is not BBOX")
    seen = set()
    for g in ad.annotation_group:
        if g.group_label <= 0:
            errs.append(f"{key}: group label {g.group_label} (background or negative)")
        elif valid is not None and g.group_label not in valid:
            errs.append(f"{key}: group label {g.group_label} is not in the label map")
        if g.group_label in seen:
            errs.append(f"{key}: label {g.group_label} has two annotation groups")
        seen.add(g.group_label)
        for i, a in enumerate(g.annotation):
            b = a.bbox
            if a.instance_id != i:
                errs.append(f"{key}: label {g.group_label} instance {i} has instance_id {a.instance_id}")
            coords = (b.xmin, b.ymin, b.xmax, b.ymax)
            if not all(np.isfinite(coords)) or not (
                -EPS <= b.xmin <= b.xmax <= 1 + EPS and -EPS <= b.ymin <= b.ymax <= 1 + EPS
            ):
                errs.append(f"{key}: label {g.group_label} instance {i} box {coords} is invalid")
    return errs


def labels_of(labelmap) -> dict[int, str] | None:
    return None if labelmap is None else label_to_display_name(load_labelmap(labelmap))


def validate_lmdb(
    path: str | os.PathLike,
    labelmap: str | os.PathLike | caffe_pb2.LabelMap | None = None,
    limit: int | None = None,
) -> InspectReport:
    """Decode every record (or the first ``limit``) and check its boxes; never raises for a
    bad record (they are listed in ``errors``), only for an unreadable database."""
    names = labels_of(labelmap)
    valid = set(names) if names is not None else None
    rep = InspectReport(Path(path))
    for key, raw in iter_records(path, limit):
        rep.records += 1
        try:
            ad = parse_annotated_datum(raw, key)
            img = decode_image(ad, key)
        except ModelLibsError as exc:
            rep.errors.append(str(exc))
            continue
        hw = img.shape[:2]
        rep.min_size = hw if rep.min_size is None else tuple(map(min, rep.min_size, hw))
        rep.max_size = hw if rep.max_size is None else tuple(map(max, rep.max_size, hw))
        rep.errors += _check_record(key, ad, valid)
        boxes = datum_boxes(ad)
        rep.boxes += len(boxes)
        rep.difficult += sum(b.difficult for b in boxes)
        rep.empty_records += not boxes
        rep.per_label.update(b.label for b in boxes)
    return rep


def draw_boxes(img: np.ndarray, boxes, names: dict[int, str] | None = None) -> np.ndarray:
    """A copy of ``img`` with ground-truth ``boxes`` (normalised); difficult boxes thinner."""
    from ..draw import DrawnBox
    from ..draw import draw_boxes as draw_pixel_boxes

    h, w = img.shape[:2]
    return draw_pixel_boxes(
        img,
        (
            DrawnBox(
                b.label,
                (b.xmin * w, b.ymin * h, b.xmax * w, b.ymax * h),
                (names or {}).get(b.label, str(b.label)) + (" (difficult)" if b.difficult else ""),
                secondary=b.difficult,
            )
            for b in boxes
        ),
    )


def draw_records(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    n: int = 8,
    labelmap: str | os.PathLike | caffe_pb2.LabelMap | None = None,
) -> list[Path]:
    """Write the first ``n`` records as PNGs with their boxes to ``out_dir``; returns paths."""
    import cv2

    from ..fsutil import Output, is_png

    names = labels_of(labelmap)
    written = []
    inputs = [path, None if isinstance(labelmap, caffe_pb2.LabelMap) else labelmap]
    with Output(out_dir, kind="folder", what="drawing", inputs=inputs, recognise=is_png) as out:
        for key, raw in iter_records(path, n):
            ad = parse_annotated_datum(raw, key)
            img = draw_boxes(decode_image(ad, key), datum_boxes(ad), names)
            ok, png = cv2.imencode(".png", img)
            if not ok:
                raise ModelLibsError(f"{key}: cannot encode the drawing as PNG")
            written.append(out.write_bytes(png.tobytes(), key.replace("/", "_").rsplit(".", 1)[0] + ".png"))
    return written
