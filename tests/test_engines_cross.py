"""Both engines give the same outputs on the same weights, for every DSOD variant.

Caffe vs OpenCV needs the project's pycaffe (the ``caffe`` fixture of conftest.py: skipped
without it, a failure under CI).
"""

from __future__ import annotations

import numpy as np
import pytest
from _engines_fixtures import (
    RAW_OUTPUTS,
    blob_differences,
    deploy,
    detection_differences,
    random_weights,
    sample_images,
    weights_net,
)

from model_libs.dsod import MODELS
from model_libs.engines.detector import Detector
from model_libs.engines.opencv_engine import OpenCVEngine


def _batch(model: str) -> np.ndarray:
    shape = deploy(model).input_shape[0].dim
    rng = np.random.default_rng(42)
    return rng.normal(0, 60, (2, 3, shape[2], shape[3])).astype(np.float32)


@pytest.mark.caffe
@pytest.mark.parametrize("model", MODELS)
def test_caffe_and_opencv_agree(model, tmp_path, caffe):
    from model_libs.engines.caffe_engine import CaffeEngine

    w = tmp_path / f"{model}.caffemodel"
    w.write_bytes(random_weights(model))
    names = [*RAW_OUTPUTS, "detection_out"]
    x = _batch(model)
    out_cv = OpenCVEngine(deploy(model), w).forward(x, names)
    out_cf = CaffeEngine(deploy(model), w).forward(x, names)
    assert blob_differences({k: out_cv[k] for k in RAW_OUTPUTS}, {k: out_cf[k] for k in RAW_OUTPUTS}) == []
    assert len(out_cf["detection_out"].reshape(-1, 7)) > 1, "random weights gave no detections"
    assert detection_differences(out_cv["detection_out"], out_cf["detection_out"]) == []


@pytest.mark.caffe
def test_detector_same_detections_with_both_engines(tmp_path, caffe):
    w = tmp_path / "w.caffemodel"
    w.write_bytes(random_weights("DSOD300_smallest"))
    imgs = sample_images(3)
    a = Detector(deploy("DSOD300_smallest"), w, engine="opencv", batch_size=2).detect(imgs)
    b = Detector(deploy("DSOD300_smallest"), w, engine="caffe", batch_size=2).detect(imgs)
    for da, db in zip(a, b):
        assert [d.label for d in da] == [d.label for d in db]
        assert np.allclose([d.score for d in da], [d.score for d in db], atol=1e-4)


def test_comparison_helpers_accept_equal_and_reject_different():
    """The comparators above are honest: OpenCV batch-of-2 vs two single runs agree; a
    perturbed result is rejected."""
    model = "DSOD300_smallest"
    eng = OpenCVEngine(deploy(model), weights_net(model))
    x = _batch(model)
    names = [*RAW_OUTPUTS, "detection_out"]
    both = eng.forward(x, names)
    singles = [eng.forward(x[i : i + 1], names) for i in range(2)]
    assert blob_differences({"mbox_loc": both["mbox_loc"][1:]}, {"mbox_loc": singles[1]["mbox_loc"]}) == []
    rows = both["detection_out"].reshape(-1, 7)
    first = rows[rows[:, 0] == 0]
    assert detection_differences(first, singles[0]["detection_out"]) == []
    moved = first.copy()
    moved[0, 3] += 0.01
    assert detection_differences(moved, singles[0]["detection_out"])
    rescored = first.copy()
    rescored[0, 2] += 1e-3
    assert detection_differences(rescored, singles[0]["detection_out"])
    assert detection_differences(first[1:], singles[0]["detection_out"])
