"""Detector: preprocessing, batching, pixel boxes, label maps, engine choice."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest
from _engines_fixtures import deploy, detection_differences, random_weights, sample_images, weights_net

from model_libs import ModelLibsError
from model_libs.datasets.labelmap import label_to_display_name, load_labelmap
from model_libs.engines import caffe_engine, detector
from model_libs.engines.detector import Detection, Detector, preprocess, to_detections
from model_libs.engines.opencv_engine import OpenCVEngine

MODEL = "DSOD300_smallest"
LABELMAP = """
item { name: "none_of_the_above" label: 0 display_name: "background" }
item { name: "aeroplane" label: 1 display_name: "aeroplane" }
item { name: "bicycle" label: 2 }
"""


def test_preprocess_is_the_dsod_transform():
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    x = preprocess([img], (300, 300))
    assert x.shape == (1, 3, 300, 300) and x.dtype == np.float32
    manual = cv2.resize(img, (300, 300), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    manual -= np.array([104, 117, 123], np.float32)
    assert np.array_equal(x[0], manual.transpose(2, 0, 1))
    y = preprocess([img], (20, 30), mean=(1, 2, 3), scale=0.5)
    manual = (
        cv2.resize(img, (30, 20), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        - np.array([1, 2, 3], np.float32)
    ) * 0.5
    assert y.shape == (1, 3, 20, 30) and np.array_equal(y[0], manual.transpose(2, 0, 1))
    gray = img[:, :, 0]
    g = preprocess([gray], (8, 8))[0]
    assert np.array_equal(g[0] + 104, g[2] + 123)  # gray -> three equal channels
    with pytest.raises(ModelLibsError, match="image must be"):
        preprocess([np.zeros((4, 4, 2), np.uint8)], (8, 8))


def test_to_detections_pixels_clipping_threshold_and_no_detection_rows():
    rows = np.array(
        [
            [0, 1, 0.9, 0.1, 0.2, 0.5, 0.6],
            [1, 2, 0.4, -0.1, 0.5, 1.2, 1.0],
            [0, 2, 0.95, 0.0, 0.0, 1.0, 1.0],
            [-1, -1, -1, -1, -1, -1, -1],  # Caffe's "nothing detected" row
            [1, 1, 0.05, 0.1, 0.1, 0.2, 0.2],
        ],
        np.float32,
    )[None, None]
    dets = to_detections(rows, 2, [(100, 200), (50, 80)], {1: "aeroplane"}, threshold=0.1)
    assert [d.score for d in dets[0]] == pytest.approx([0.95, 0.9])  # sorted by score
    d = dets[0][1]
    assert d.label == 1 and d.name == "aeroplane"
    assert d.box == pytest.approx((20.0, 20.0, 100.0, 60.0))  # x by width, y by height
    (e,) = dets[1]
    assert e.name == "2" and e.box == pytest.approx((0.0, 25.0, 80.0, 50.0))  # clipped
    assert e.to_dict()["box"] == pytest.approx([0.0, 25.0, 80.0, 50.0])


def test_labelmap(tmp_path):
    p = tmp_path / "labelmap.prototxt"
    p.write_text(LABELMAP)
    assert label_to_display_name(load_labelmap(p)) == {0: "background", 1: "aeroplane", 2: "bicycle"}
    p.write_text("item { nme: 'x' }")
    with pytest.raises(ModelLibsError, match="not a LabelMap"):
        load_labelmap(p)
    p.write_text(LABELMAP + 'item { name: "again" label: 1 }')
    with pytest.raises(ModelLibsError, match="duplicate label 1"):
        load_labelmap(p)


def test_detector_batches_like_single_images_and_names_labels(tmp_path):
    lm = tmp_path / "lm.prototxt"
    lm.write_text(
        "\n".join(f'item {{ name: "c{i}" label: {i} display_name: "class{i}" }}' for i in range(21))
    )
    det = Detector(deploy(MODEL), weights_net(MODEL), engine="opencv", labelmap=lm, batch_size=3)
    assert det.engine_name == "opencv" and det.engine_reason == "requested"
    imgs = sample_images(5)
    batched = det.detect(imgs)
    assert len(batched) == 5 and any(batched)
    for img, dets in zip(imgs, batched):
        single = det.detect_one(img)
        assert [d.label for d in single] == [d.label for d in dets]
        assert np.allclose([d.box for d in single], [d.box for d in dets], atol=1e-2)
        h, w = img.shape[:2]
        for d in dets:
            assert d.name == f"class{d.label}" and 0 <= d.box[0] <= d.box[2] <= w and d.box[3] <= h
    # the engine sees exactly the documented preprocessing
    eng = OpenCVEngine(deploy(MODEL), weights_net(MODEL))
    raw = eng.forward(preprocess(imgs[:1], (300, 300)))["detection_out"]
    rows = raw.reshape(-1, 7)
    assert len(batched[0]) == len(rows)
    assert np.allclose(sorted(d.score for d in batched[0]), sorted(rows[:, 2]), atol=1e-6)


def test_detector_reads_files_and_threshold(tmp_path):
    p = tmp_path / "x.png"
    cv2.imwrite(str(p), sample_images(1)[0])
    det = Detector(deploy(MODEL), weights_net(MODEL))
    all_ = det.detect([p], threshold=0.0)[0]
    high = det.detect([str(p)], threshold=0.3)[0]
    assert all_ and len(high) == sum(d.score >= 0.3 for d in all_)
    with pytest.raises(ModelLibsError, match=r"missing\.jpg: image not found"):
        det.detect([tmp_path / "missing.jpg"])


def test_engine_auto_says_what_it_picked(monkeypatch):
    name, reason = detector.choose_engine("auto")
    assert name == "opencv" and reason.startswith("auto:")
    monkeypatch.setattr("model_libs.engines.opencv_engine.opencv_available", lambda: False)
    monkeypatch.setattr(caffe_engine, "caffe_available", lambda: True)
    assert detector.choose_engine("auto")[0] == "caffe"
    monkeypatch.setattr(caffe_engine, "caffe_available", lambda: False)
    with pytest.raises(ModelLibsError, match="no inference engine"):
        detector.choose_engine("auto")
    with pytest.raises(ModelLibsError, match="unknown engine"):
        detector.choose_engine("tensorrt")


def test_detector_rejects_bad_settings_and_mismatched_weights(tmp_path):
    with pytest.raises(ModelLibsError, match="differs from the deploy net"):
        Detector(deploy(MODEL), weights_net(MODEL), input_size=(320, 320))
    with pytest.raises(ModelLibsError, match="batch_size"):
        Detector(deploy(MODEL), weights_net(MODEL), batch_size=0)
    w = tmp_path / "w.caffemodel"
    w.write_bytes(random_weights("DSOD300_lite"))
    with pytest.raises(ModelLibsError, match="does not match the deploy net"):
        Detector(deploy(MODEL), w)


class _FakeBlob:
    def __init__(self, shape):
        self.data = np.zeros(shape, np.float32)

    def reshape(self, *shape):
        self.data = np.zeros(shape, np.float32)


def _fake_caffe(calls: list):
    """A pycaffe stand-in with pycaffe's API, computing through OpenCV, to exercise
    CaffeEngine's protocol (files, reshape, forward, blob reads) without Caffe."""

    class Net:
        def __init__(self, proto, weights, phase):
            calls.append(("Net", open(proto).read(), open(weights, "rb").read(), phase))
            self._eng = OpenCVEngine(proto, weights)
            self.blobs = {"data": _FakeBlob(self._eng.input_shape)}
            self.blobs.update({k: _FakeBlob([1]) for k in ("detection_out", "mbox_loc")})

        def reshape(self):
            calls.append(("reshape", self.blobs["data"].data.shape))

        def forward(self):
            out = self._eng.forward(self.blobs["data"].data, ["detection_out", "mbox_loc"])
            for k, v in out.items():
                self.blobs[k].data = v
            return {"detection_out": out["detection_out"]}

    return types.SimpleNamespace(TEST=1, set_mode_cpu=lambda: calls.append(("cpu",)), Net=Net)


def test_caffe_engine_protocol_with_a_pycaffe_stand_in(monkeypatch):
    calls: list = []
    monkeypatch.setattr(caffe_engine, "import_caffe", lambda: _fake_caffe(calls))
    monkeypatch.setattr(caffe_engine, "caffe_available", lambda: True)
    imgs = sample_images(3)
    det = Detector(deploy(MODEL), weights_net(MODEL), engine="caffe", batch_size=2)
    assert det.engine_name == "caffe"
    assert calls[0] == ("cpu",) and calls[1][0] == "Net" and calls[1][3] == 1
    assert "save_output_param" not in calls[1][1]  # nothing saved at inference
    assert calls[1][2] == random_weights(MODEL)
    got = det.detect(imgs)
    assert [c[1][0] for c in calls if c[0] == "reshape"] == [2, 1]  # batch 2, then the last image
    ref = Detector(deploy(MODEL), weights_net(MODEL), engine="opencv", batch_size=2).detect(imgs)
    for a, b in zip(got, ref):
        rows = lambda ds: np.array([[0, d.label, d.score, *d.box] for d in ds]).reshape(-1, 7)  # noqa: E731
        assert detection_differences(rows(a), rows(b)) == []


def test_detection_dataclass():
    d = Detection(3, "cat", 0.5, (1.0, 2.0, 3.0, 4.0))
    assert d.to_dict() == {"label": 3, "name": "cat", "score": 0.5, "box": [1.0, 2.0, 3.0, 4.0]}
