"""Class names from a Caffe ``LabelMap`` text proto (``labelmap_voc.prototxt``) for scoring.

DetectionOutput names its VOC result files after each item's ``name``
(``comp4_det_test_<name>.txt``), so ``name`` is what :func:`read_labelmap` returns. Parsing
and validation are :mod:`model_libs.datasets.labelmap`'s.
"""

from __future__ import annotations

import os

from ..datasets.labelmap import load_labelmap


def read_labelmap(path: str | os.PathLike) -> dict[int, str]:
    """``{label: name}`` of every ``item`` in the label map, sorted by label."""
    return {item.label: item.name for item in sorted(load_labelmap(path).item, key=lambda i: i.label)}


def foreground_classes(path: str | os.PathLike, background_label: int = 0) -> list[str]:
    """Class names of the label map without the background label, in label order."""
    return [n for k, n in read_labelmap(path).items() if k != background_label]
