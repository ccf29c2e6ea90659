"""Cross-check against the project's real Caffe: DetectionEvaluate rows and the solver's mAP.

Feeds the same random detections and ground truth (normalized boxes, some difficult) to

* Caffe's ``DetectionEvaluate`` layer (via pycaffe) and :func:`detection_evaluate`;
* Caffe's solver (``eval_type: "detection"``, ``ap_version`` 11point / Integral /
  MaxIntegral; the number it logs as ``Test net output #0: detection_eval = ...``) and
  :func:`solver_map` — agreement within 1e-4.

Skipped only when Caffe cannot be imported *and* the ``CI`` environment variable is unset;
under CI a missing Caffe is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_libs.evaluation.caffe_ap import detection_evaluate, solver_map

pytestmark = pytest.mark.caffe

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 5

IMPORT_CAFFE = """
try:
    from model_libs.caffe_env import import_caffe
    caffe = import_caffe()
except ImportError:
    import caffe
"""


def make_case(seed=0, n_images=25):
    rng = np.random.default_rng(seed)
    gt, det = [], []
    for img in range(n_images):
        for k in range(int(rng.integers(1, 5))):
            label = int(rng.integers(1, NUM_CLASSES))
            x1, y1 = rng.uniform(0, 0.6, 2)
            w, h = rng.uniform(0.05, 0.4, 2)
            box = [x1, y1, x1 + w, y1 + h]
            gt.append([img, label, k, *box, float(rng.random() < 0.15)])
            for _ in range(int(rng.integers(0, 3))):
                j = rng.normal(0, 0.03, 4)
                det.append([img, label, rng.random(), *(np.array(box) + j)])
        for _ in range(int(rng.integers(0, 4))):
            x1, y1 = rng.uniform(0, 0.7, 2)
            det.append([img, int(rng.integers(1, NUM_CLASSES)), rng.random(), x1, y1, x1 + 0.2, y1 + 0.2])
    det = np.array(det, dtype=np.float32)
    det[:, 2] = np.round(det[:, 2], 5) + np.arange(len(det)) * 1e-7  # distinct scores
    return det, np.array(gt, dtype=np.float32)


def net_prototxt(n_det, n_gt):
    return f"""
name: "eval_crosscheck"
layer {{ name: "det" type: "Input" top: "det"
  input_param {{ shape {{ dim: 1 dim: 1 dim: {n_det} dim: 7 }} }} }}
layer {{ name: "gt" type: "Input" top: "gt"
  input_param {{ shape {{ dim: 1 dim: 1 dim: {n_gt} dim: 8 }} }} }}
layer {{ name: "detection_eval" type: "DetectionEvaluate" bottom: "det" bottom: "gt"
  top: "detection_eval"
  detection_evaluate_param {{ num_classes: {NUM_CLASSES} background_label_id: 0
    overlap_threshold: 0.5 evaluate_difficult_gt: false }} }}
"""


TRAIN_NET = """
name: "dummy_train"
layer { name: "a" type: "DummyData" top: "a"
  dummy_data_param { shape { dim: 1 dim: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "b" type: "DummyData" top: "b"
  dummy_data_param { shape { dim: 1 dim: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" }
"""

RUNNER = (
    IMPORT_CAFFE
    + """
import json, sys
import numpy as np
spec = json.load(open(sys.argv[1]))
caffe.set_mode_cpu()
det = np.load(spec["det"]); gt = np.load(spec["gt"])
if spec["what"] == "layer":
    net = caffe.Net(spec["net"], caffe.TEST)
    net.blobs["det"].data[...] = det.reshape(1, 1, -1, 7)
    net.blobs["gt"].data[...] = gt.reshape(1, 1, -1, 8)
    net.forward()
    np.save(spec["out"], net.blobs["detection_eval"].data.reshape(-1, 5))
else:
    solver = caffe.SGDSolver(spec["solver"])
    solver.test_nets[0].blobs["det"].data[...] = det.reshape(1, 1, -1, 7)
    solver.test_nets[0].blobs["gt"].data[...] = gt.reshape(1, 1, -1, 8)
    solver.step(1)
"""
)


def _run(tmp_path, spec):
    (tmp_path / "runner.py").write_text(RUNNER)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = dict(
        os.environ,
        GLOG_logtostderr="1",
        GLOG_minloglevel="0",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    p = subprocess.run(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "spec.json")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stderr


@pytest.mark.parametrize("seed", [0, 1])
def test_detection_evaluate_layer_rows_match(tmp_path, seed, caffe):
    det, gt = make_case(seed)
    np.save(tmp_path / "det.npy", det)
    np.save(tmp_path / "gt.npy", gt)
    (tmp_path / "net.prototxt").write_text(net_prototxt(len(det), len(gt)))
    _run(
        tmp_path,
        {
            "what": "layer",
            "det": str(tmp_path / "det.npy"),
            "gt": str(tmp_path / "gt.npy"),
            "net": str(tmp_path / "net.prototxt"),
            "out": str(tmp_path / "rows.npy"),
        },
    )
    caffe_rows = np.load(tmp_path / "rows.npy")
    ours = detection_evaluate(det, gt, NUM_CLASSES)
    assert caffe_rows.shape == ours.shape

    # The solver only sees the multiset of rows, so compare them in a canonical order
    # (image, label, descending score) rather than relying on the layer's map order.
    def canonical(r):
        return r[np.lexsort((-r[:, 2], r[:, 1], r[:, 0]))]

    np.testing.assert_allclose(canonical(caffe_rows), canonical(ours), atol=1e-6)


@pytest.mark.parametrize("ap_version", ["11point", "Integral", "MaxIntegral"])
def test_solver_map_matches(tmp_path, ap_version, caffe):
    det, gt = make_case(7)
    np.save(tmp_path / "det.npy", det)
    np.save(tmp_path / "gt.npy", gt)
    (tmp_path / "test.prototxt").write_text(net_prototxt(len(det), len(gt)))
    (tmp_path / "train.prototxt").write_text(TRAIN_NET)
    (tmp_path / "solver.prototxt").write_text(
        f'train_net: "{tmp_path / "train.prototxt"}"\n'
        f'test_net: "{tmp_path / "test.prototxt"}"\n'
        "test_iter: 1\ntest_interval: 1000\ntest_initialization: true\n"
        'eval_type: "detection"\n'
        f'ap_version: "{ap_version}"\n'
        'base_lr: 0\nlr_policy: "fixed"\nmax_iter: 1\ndisplay: 1\nsnapshot: 0\n'
        "solver_mode: CPU\n"
    )
    log = _run(
        tmp_path,
        {
            "what": "solver",
            "det": str(tmp_path / "det.npy"),
            "gt": str(tmp_path / "gt.npy"),
            "solver": str(tmp_path / "solver.prototxt"),
        },
    )
    m = re.findall(r"Test net output #0: detection_eval = ([-+0-9.eE]+)", log)
    assert m, log[-3000:]
    caffe_map = float(m[0])
    ours = solver_map(detection_evaluate(det, gt, NUM_CLASSES), ap_version).mAP
    assert ours == pytest.approx(caffe_map, abs=1e-4)
