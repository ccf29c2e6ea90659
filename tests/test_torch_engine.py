"""The torch engine beside OpenCV and Caffe, and caffemodels written by the PyTorch engine
read back by Caffe and OpenCV DNN."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from _engines_fixtures import (
    RAW_OUTPUTS,
    blob_differences,
    deploy,
    detection_differences,
    sample_images,
    weights_net,
)
from _torch_support import raw_deploy, require_caffe, require_torch

from model_libs.dsod import MODELS
from model_libs.engines.opencv_engine import OpenCVEngine
from model_libs.pytorch.net import CaffeNet
from model_libs.pytorch.weights import load_caffemodel, save_caffemodel

pytestmark = pytest.mark.torch
torch = require_torch()


def _batch(model: str, n: int = 2, seed: int = 42) -> np.ndarray:
    shape = deploy(model).input_shape[0].dim
    return np.random.default_rng(seed).normal(0, 60, (n, 3, shape[2], shape[3])).astype(np.float32)


def test_torch_engine_matches_opencv_outputs_and_detections():
    from model_libs.engines.torch_engine import TorchEngine

    model = "DSOD300_smallest"
    w = weights_net(model)
    x = _batch(model)
    names = [*RAW_OUTPUTS, "detection_out"]
    a = TorchEngine(deploy(model), w, device="cpu").forward(x, names)
    b = OpenCVEngine(deploy(model), w).forward(x, names)
    assert blob_differences({k: a[k] for k in RAW_OUTPUTS}, {k: b[k] for k in RAW_OUTPUTS}) == []
    assert all(a[k].shape == b[k].shape for k in RAW_OUTPUTS)
    assert len(b["detection_out"].reshape(-1, 7)) > 1, "random weights gave no detections"
    assert detection_differences(a["detection_out"], b["detection_out"]) == []


@pytest.mark.caffe
@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_torch_engine_matches_caffe(model, tmp_path):
    """Every DSOD variant: the torch engine's raw outputs and detections are Caffe's."""
    from model_libs.engines.caffe_engine import CaffeEngine
    from model_libs.engines.torch_engine import TorchEngine

    require_caffe()
    w = weights_net(model)
    x = _batch(model)
    names = [*RAW_OUTPUTS, "detection_out"]
    a = TorchEngine(deploy(model), w, device="cpu").forward(x, names)
    b = CaffeEngine(deploy(model), w).forward(x, names)
    assert blob_differences({k: a[k] for k in RAW_OUTPUTS}, {k: b[k] for k in RAW_OUTPUTS}) == []
    assert len(b["detection_out"].reshape(-1, 7)) > 1
    assert detection_differences(a["detection_out"], b["detection_out"]) == []


def test_detect_cli_with_the_torch_engine(tmp_path):
    """``python -m model_libs detect --engine torch`` end to end: the same detections as
    the OpenCV engine on the same images."""
    import json

    from model_libs.__main__ import main

    model = "DSOD300_smallest"
    w = tmp_path / "w.caffemodel"
    w.write_bytes(weights_net(model).SerializeToString())
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(str(deploy(model)))
    import cv2

    for i, img in enumerate(sample_images(2)):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), img)
    out = {}
    for engine in ("torch", "opencv"):
        js = tmp_path / f"{engine}.json"
        args = ["detect", "--engine", engine, "--deploy", str(proto), "--weights", str(w)]
        assert (
            main(
                [
                    *args,
                    "--threshold",
                    "0.01",
                    "--json",
                    str(js),
                    str(tmp_path / "img0.png"),
                    str(tmp_path / "img1.png"),
                ]
            )
            == 0
        )
        out[engine] = json.loads(js.read_text())
    assert out["torch"]["engine"] == "torch"

    def rows(result):  # DetectionOutput-like rows: image, label, score, box in pixels
        return np.array(
            [
                [i, d["label"], d["score"], *d["box"]]
                for i, im in enumerate(result["images"])
                for d in im["detections"]
            ]
        )

    assert detection_differences(rows(out["torch"]), rows(out["opencv"])) == []
    assert sum(len(x["detections"]) for x in out["torch"]["images"]) > 0


@pytest.mark.caffe
def test_torch_written_caffemodel_loads_in_opencv_and_caffe(tmp_path):
    """Weights changed in PyTorch (a TRAIN forward moves the BatchNorm statistics) and
    written as a caffemodel give the same outputs and detections in OpenCV DNN and Caffe."""
    from model_libs.engines.caffe_engine import CaffeEngine

    require_caffe()
    model = "DSOD300_smallest"
    train = CaffeNet(raw_deploy(model), "TRAIN")
    load_caffemodel(train, weights_net(model))
    with torch.no_grad():
        train({"data": torch.from_numpy(_batch(model, 2, seed=5))})
    path = tmp_path / "torch.caffemodel"
    save_caffemodel(train, path)
    test = CaffeNet(raw_deploy(model), "TEST")
    load_caffemodel(test, path)
    x = _batch(model)
    with torch.no_grad():
        ours = {k: v.numpy() for k, v in test({"data": torch.from_numpy(x)}, list(RAW_OUTPUTS)).items()}
    names = [*RAW_OUTPUTS, "detection_out"]
    cv = OpenCVEngine(deploy(model), path).forward(x, names)
    cf = CaffeEngine(deploy(model), path).forward(x, names)
    ref = OpenCVEngine(deploy(model), weights_net(model)).forward(x, RAW_OUTPUTS)
    assert blob_differences({k: ours[k] for k in RAW_OUTPUTS}, {k: cf[k] for k in RAW_OUTPUTS}) == []
    assert blob_differences({k: cv[k] for k in RAW_OUTPUTS}, {k: cf[k] for k in RAW_OUTPUTS}) == []
    assert blob_differences({"mbox_loc": ref["mbox_loc"]}, {"mbox_loc": cf["mbox_loc"]}), "weights unchanged"
    assert len(cf["detection_out"].reshape(-1, 7)) > 1
    assert detection_differences(cv["detection_out"], cf["detection_out"]) == []


def test_torch_engine_without_torch_is_one_clear_error(tmp_path):
    w = tmp_path / "w.caffemodel"
    w.write_bytes(weights_net("DSOD300_smallest").SerializeToString())
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(str(deploy("DSOD300_smallest")))
    img = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(img), np.zeros((20, 20, 3), np.uint8))
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from model_libs.__main__ import main\n"
        f"sys.exit(main(['detect', '--engine', 'torch', '--deploy', {str(proto)!r}, "
        f"'--weights', {str(w)!r}, {str(img)!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the torch engine needs PyTorch"), r.stderr
    assert "pip install" in lines[0]
    # model_libs itself never imports torch.
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['torch'] = None; import model_libs, model_libs.engines.detector",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
