"""Shared helpers for the evaluation tests: write a tiny VOCdevkit and result files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def write_vocdevkit(
    root: Path,
    gt: Mapping[str, Sequence[tuple[str, Sequence[float], bool]]],
    year: str = "VOC2007",
    image_set: str = "test",
) -> Path:
    """Write ``root/<year>/Annotations/*.xml`` and ``ImageSets/Main/<image_set>.txt``."""
    base = root / year
    (base / "Annotations").mkdir(parents=True, exist_ok=True)
    (base / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for img, objs in gt.items():
        head = (
            f"<annotation><filename>{img}.jpg</filename>"
            "<size><width>500</width><height>375</height><depth>3</depth></size>"
        )
        parts = [head]
        for name, box, difficult in objs:
            x1, y1, x2, y2 = (int(v) if float(v).is_integer() else v for v in box)
            parts.append(
                f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                f"<difficult>{int(difficult)}</difficult><bndbox><xmin>{x1}</xmin>"
                f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            )
        parts.append("</annotation>\n")
        (base / "Annotations" / f"{img}.xml").write_text("\n".join(parts))
    (base / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{i}\n" for i in gt))
    return root


def write_results(
    directory: Path,
    dets: Mapping[str, Sequence[tuple[str, float, float, float, float, float]]],
    prefix: str = "comp4_det_test_",
) -> Path:
    """Write ``<prefix><class>.txt`` files with ``image score x1 y1 x2 y2`` lines."""
    directory.mkdir(parents=True, exist_ok=True)
    for cls, rows in dets.items():
        (directory / f"{prefix}{cls}.txt").write_text(
            "".join(f"{r[0]} {r[1]!r} {r[2]!r} {r[3]!r} {r[4]!r} {r[5]!r}\n" for r in rows)
        )
    return directory
