"""Read saved detections: VOC ``comp4`` result files and a JSON list of boxes.

Detections are held per class as :class:`ClassDetections` (parallel arrays). Each detection
remembers where it came from (file and line, or JSON entry) so that later checks, such as an
image id missing from the ground truth, can name the exact place.

Formats
-------
VOC result files, as written by DetectionOutput's ``save_output_param`` (one file per class,
``<prefix><class>.txt``, e.g. ``comp4_det_test_aeroplane.txt``), one detection per line::

    <image_id> <score> <xmin> <ymin> <xmax> <ymax>

JSON detections: a list of objects ``{"image_id": str, "class": str, "score": float,
"bbox": [xmin, ymin, xmax, ymax]}`` (``"category"`` is accepted for ``"class"``).
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelLibsError

DEFAULT_PREFIX = "comp4_det_test_"


@dataclass
class ClassDetections:
    """All detections of one class.

    ``image_ids`` (N,) str, ``scores`` (N,) float64, ``boxes`` (N, 4) float64 as
    ``xmin, ymin, xmax, ymax``; ``source`` names the file and ``lines`` holds each detection's
    1-based line number (or JSON entry index) in it, for error messages.
    """

    image_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    source: str = "<memory>"
    lines: np.ndarray | None = None
    json_entries: bool = False
    inverted: np.ndarray = field(init=False, repr=False)  # indices of boxes with xmax < xmin or ymax < ymin

    def __post_init__(self) -> None:
        self.image_ids = np.asarray(self.image_ids, dtype=object).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        n = len(self.scores)
        if len(self.image_ids) != n or len(self.boxes) != n:
            raise ModelLibsError(
                f"{self.source}: {len(self.image_ids)} image ids, {n} scores and "
                f"{len(self.boxes)} boxes (they must have the same length)"
            )
        if self.lines is None:
            self.lines = np.arange(1, n + 1)
        self.lines = np.asarray(self.lines).reshape(-1)
        bad = ~np.isfinite(self.scores)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ModelLibsError(
                f"{self.where(i)}: score is {float(self.scores[i])!r}; scores must be finite numbers"
            )
        bad = ~np.isfinite(self.boxes).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ModelLibsError(f"{self.where(i)}: box {self.boxes[i].tolist()} is not finite")
        # An inverted box can match nothing (the devkit's overlap is then <= 0): it scores 0
        # without a word, and is almost always a format mix-up (x, y, width, height given for
        # xmin, ymin, xmax, ymax). Kept, as the devkit keeps it, and reported (see ``inverted``).
        inv = (self.boxes[:, 2] < self.boxes[:, 0]) | (self.boxes[:, 3] < self.boxes[:, 1])
        self.inverted = np.flatnonzero(inv)

    def inverted_report(self) -> str | None:
        """A warning about inverted boxes (xmax < xmin or ymax < ymin), or None."""
        if not len(self.inverted):
            return None
        i = int(self.inverted[0])
        return (
            f"{self.where(i)}: {len(self.inverted)} of {len(self)} boxes are inverted (the first: "
            f"{self.boxes[i].tolist()}); they can match nothing: are they xmin ymin xmax ymax?"
        )

    def __len__(self) -> int:
        return len(self.scores)

    def where(self, i: int) -> str:
        """``file:line`` (or ``file: entry N`` for JSON input) of detection ``i``."""
        assert self.lines is not None
        if self.json_entries:
            return f"{self.source}: entry {int(self.lines[i])}"
        return f"{self.source}:{int(self.lines[i])}"

    @classmethod
    def from_rows(
        cls, rows: Iterable[tuple[str, float, float, float, float, float]], source: str = "<memory>"
    ) -> ClassDetections:
        """Build from ``(image_id, score, xmin, ymin, xmax, ymax)`` tuples."""
        rows = list(rows)
        ids = [r[0] for r in rows]
        scores = [float(r[1]) for r in rows]
        boxes = [[float(v) for v in r[2:6]] for r in rows]
        return cls(
            np.array(ids, dtype=object), np.array(scores), np.array(boxes).reshape(-1, 4), source=source
        )


def _parse_float(token: str, where: str, what: str) -> float:
    try:
        return float(token)
    except ValueError:
        raise ModelLibsError(f"{where}: {what} {token!r} is not a number") from None


def read_result_file(path: str | os.PathLike) -> ClassDetections:
    """Read one VOC result file (``image_id score xmin ymin xmax ymax`` per line).

    Blank lines are skipped. A line with the wrong number of columns, a value that is not a
    number, or a NaN/infinite score raises :class:`ModelLibsError` naming ``file:line``.
    """
    # Millions of short-lived strings would otherwise trigger repeated full GC passes.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _read_result_file(path)
    finally:
        if was_enabled:
            gc.enable()


def _read_result_file(path: str | os.PathLike) -> ClassDetections:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelLibsError(f"{p}: cannot read result file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ModelLibsError(f"{p}: not a text file") from None
    src = str(p)
    counts = [len(line.split()) for line in text.splitlines()]
    bad = [k for k, c in enumerate(counts) if c not in (0, 6)]
    if bad:
        raise ModelLibsError(
            f"{src}:{bad[0] + 1}: expected 6 columns (image_id score xmin ymin xmax ymax), "
            f"found {counts[bad[0]]}"
        )
    lines = np.flatnonzero(np.array(counts, dtype=np.int64) == 6) + 1
    tokens = text.split()
    ids = tokens[0::6]
    del tokens[0::6]
    try:
        values = np.fromiter(map(float, tokens), np.float64, len(tokens))
    except ValueError:
        # Slow path only to find the offending line.
        names = ("score", "xmin", "ymin", "xmax", "ymax")
        for j, lineno in enumerate(lines):
            for k, name in enumerate(names):
                _parse_float(tokens[5 * j + k], f"{src}:{lineno}", name)
        raise  # pragma: no cover - numpy and float() disagree
    values = values.reshape(-1, 5)
    return ClassDetections(np.array(ids, dtype=object), values[:, 0], values[:, 1:5], source=src, lines=lines)


def find_result_files(directory: str | os.PathLike, prefix: str = DEFAULT_PREFIX) -> dict[str, Path]:
    """Map class name → result file for every ``<prefix><class>.txt`` in ``directory``."""
    d = Path(directory)
    if not d.is_dir():
        raise ModelLibsError(f"{d}: results folder not found")
    pat = re.compile(re.escape(prefix) + r"(.+)\.txt$")
    found: dict[str, Path] = {}
    for f in sorted(d.iterdir()):
        m = pat.match(f.name)
        if m and f.is_file():
            found[m.group(1)] = f
    return found


def read_result_dir(
    directory: str | os.PathLike,
    classes: Iterable[str] | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> dict[str, ClassDetections]:
    """Read every ``<prefix><class>.txt`` in ``directory``.

    With ``classes`` given, a class without a file gets no detections; a file for a class not in
    ``classes`` is an error (it would otherwise be silently ignored). Without ``classes`` the
    classes are the file names found; finding none is an error.
    """
    found = find_result_files(directory, prefix)
    if not found:  # a wrong --prefix would otherwise score every class 0 without a word
        others = sorted(f.name for f in Path(directory).glob("*.txt"))[:3]
        hint = f" (it holds {', '.join(others)}: check --prefix)" if others else ""
        raise ModelLibsError(f"{directory}: no result files named {prefix}<class>.txt{hint}")
    if classes is None:
        return {c: read_result_file(p) for c, p in found.items()}
    classes = list(classes)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ModelLibsError(
            f"{found[unknown[0]]}: class {unknown[0]!r} is not in the label map (known: {', '.join(classes)})"
        )
    out: dict[str, ClassDetections] = {}
    for c in classes:
        if c in found:
            out[c] = read_result_file(found[c])
        else:
            out[c] = ClassDetections(
                np.zeros(0, dtype=object),
                np.zeros(0),
                np.zeros((0, 4)),
                source=str(Path(directory) / f"{prefix}{c}.txt"),
            )
    return out


def read_json_detections(path: str | os.PathLike) -> dict[str, ClassDetections]:
    """Read a JSON list of ``{"image_id", "class", "score", "bbox": [x1, y1, x2, y2]}``.

    Errors name the file and the entry (0-based index in the list).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLibsError(f"{p}: cannot read detections ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ModelLibsError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise ModelLibsError(f"{p}: expected a JSON list of detections")
    per: dict[str, tuple[list, list, list, list]] = {}
    for i, d in enumerate(data):
        where = f"{p}: entry {i}"
        if not isinstance(d, Mapping):
            raise ModelLibsError(f"{where}: expected an object, found {type(d).__name__}")
        cls = d.get("class", d.get("category"))
        if cls is None or "image_id" not in d or "score" not in d or "bbox" not in d:
            raise ModelLibsError(f"{where}: needs keys image_id, class, score, bbox")
        bbox = d["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ModelLibsError(f"{where}: bbox must be [xmin, ymin, xmax, ymax]")
        try:
            score = float(d["score"])
            box = [float(v) for v in bbox]
        except (TypeError, ValueError):
            raise ModelLibsError(f"{where}: score and bbox must be numbers") from None
        if not math.isfinite(score):
            raise ModelLibsError(f"{where}: score is {score!r}; scores must be finite numbers")
        ids, scores, boxes, idx = per.setdefault(str(cls), ([], [], [], []))
        ids.append(str(d["image_id"]))
        scores.append(score)
        boxes.append(box)
        idx.append(i)
    return {
        c: ClassDetections(
            np.array(ids, dtype=object),
            np.array(s),
            np.array(b).reshape(-1, 4),
            source=str(p),
            lines=np.array(idx),
            json_entries=True,
        )
        for c, (ids, s, b, idx) in per.items()
    }


def write_result_files(
    directory: str | os.PathLike,
    detections: Mapping[str, ClassDetections],
    prefix: str = DEFAULT_PREFIX,
) -> list[Path]:
    """Write detections as VOC result files (the format :func:`read_result_file` reads)."""
    from ..fsutil import atomic_write_text

    out = []
    for c, det in detections.items():
        lines = [
            f"{i} {s:.6f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f}\n"
            for i, s, b in zip(det.image_ids, det.scores, det.boxes, strict=True)
        ]
        out.append(atomic_write_text(Path(directory) / f"{prefix}{c}.txt", "".join(lines)))
    return out
