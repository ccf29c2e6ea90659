"""Class names from a Caffe ``LabelMap`` text proto (``labelmap_voc.prototxt``).

A tiny text parser, enough for the label-map files SSD/DSOD ship::

    item { name: "none_of_the_above" label: 0 display_name: "background" }
    item { name: "aeroplane" label: 1 display_name: "aeroplane" }

DetectionOutput names its VOC result files after ``name`` (``comp4_det_test_<name>.txt``), so
``name`` is what :func:`read_labelmap` returns.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ModelLibsError

_ITEM = re.compile(r"\bitem\s*\{([^{}]*)\}", re.DOTALL)
_FIELD = re.compile(r"\b(name|label|display_name)\s*:\s*(\"(?:[^\"\\]|\\.)*\"|'[^']*'|-?\d+)")


def read_labelmap(path: str | os.PathLike) -> dict[int, str]:
    """``{label: name}`` of every ``item`` in the label map, sorted by label."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelLibsError(f"{p}: cannot read label map ({exc.strerror})") from None
    text = re.sub(r"#[^\n]*", "", text)
    out: dict[int, str] = {}
    for m in _ITEM.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        fields = {k: v for k, v in _FIELD.findall(m.group(1))}
        if "label" not in fields or "name" not in fields:
            raise ModelLibsError(f"{p}:{line}: item needs both name and label")
        label, name = int(fields["label"]), fields["name"][1:-1]
        if label in out:
            raise ModelLibsError(f"{p}:{line}: label {label} appears twice")
        out[label] = name
    if not out:
        raise ModelLibsError(f"{p}: no 'item {{ name: ... label: ... }}' entries found")
    return dict(sorted(out.items()))


def foreground_classes(path: str | os.PathLike, background_label: int = 0) -> list[str]:
    """Class names of the label map without the background label, in label order."""
    return [n for k, n in read_labelmap(path).items() if k != background_label]
