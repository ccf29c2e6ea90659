"""The built engine's annotated data path: resize, photometric distortion, expansion, emission.

Each test writes a tiny LMDB of flat-coloured scenes, runs an AnnotatedData-only net for a few
hundred draws and checks the documented properties: what each distortion may do to the
pixels, that its probability is respected, that expanded images keep their boxes on the
objects over a mean-filled canvas, and that emission follows the emit constraint.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from model_libs.netspec import to_prototxt
from model_libs.proto import caffe_pb2
from tests.caffe_support import annotated_datum, scene, write_lmdb

pytestmark = pytest.mark.caffe

N = 64  # images per batch
BATCHES = 8  # batches per test: 512 draws
# With 512 draws a frequency is within 0.09 (4 standard deviations) of its probability.
TOL = 0.09


@pytest.fixture(scope="module")
def caffe(caffe):
    caffe.set_random_seed(1234)
    return caffe


def data_net(
    tmp: Path, lmdb: Path, transform: dict, sampler: list[dict] | None = None, batch: int = N
) -> Path:
    """A net with one AnnotatedData layer (TRAIN) reading ``lmdb``."""
    net = caffe_pb2.NetParameter(name="data_only")
    layer = net.layer.add(name="data", type="AnnotatedData", top=["data", "label"])
    layer.include.add(phase=caffe_pb2.TRAIN)
    layer.data_param.source = str(lmdb)
    layer.data_param.batch_size = batch
    layer.data_param.backend = caffe_pb2.DataParameter.LMDB
    _fill(layer.transform_param, transform)
    for s in sampler or []:
        _fill(layer.annotated_data_param.batch_sampler.add(), s)
    path = tmp / "data.prototxt"
    path.write_text(to_prototxt(net) + "\n")
    return path


def _fill(msg, values: dict) -> None:
    for k, v in values.items():
        if isinstance(v, dict):
            _fill(getattr(msg, k), v)
        elif isinstance(v, list):
            getattr(msg, k).extend(v)
        else:
            setattr(msg, k, v)


def draws(caffe, path: Path, batches: int = BATCHES) -> tuple[np.ndarray, list[np.ndarray]]:
    """(images N x H x W x 3 float, per image an array of label rows) over ``batches``."""
    net = caffe.Net(str(path), caffe.TRAIN)
    imgs, labels = [], []
    for _ in range(batches):
        net.forward()
        data = net.blobs["data"].data.copy()
        lab = net.blobs["label"].data.reshape(-1, 8).copy()
        for i in range(data.shape[0]):
            imgs.append(data[i].transpose(1, 2, 0))
            labels.append(lab[lab[:, 0] == i])
    return np.stack(imgs), labels


def one_image_lmdb(tmp: Path, img: np.ndarray, boxes, ext=".png") -> Path:
    return write_lmdb(tmp / "lmdb", [annotated_datum(img, boxes, ext=ext)])


FLAT = (50, 90, 160)  # BGR: coloured enough for hue/saturation, x1.5 stays below 255
WARP64 = {"resize_mode": caffe_pb2.ResizeParameter.WARP, "height": 64, "width": 64}


def flat_draws(caffe, tmp, distort: dict):
    img = np.empty((64, 64, 3), np.uint8)
    img[:] = FLAT
    lmdb = one_image_lmdb(tmp, img, [(1, 0.25, 0.25, 0.75, 0.75)])
    imgs, _ = draws(caffe, data_net(tmp, lmdb, {"resize_param": WARP64, "distort_param": distort}))
    return imgs.reshape(len(imgs), -1, 3).mean(axis=1)  # mean BGR per draw


def test_resize_warps_to_the_net_size_with_each_interp_mode(caffe, tmp_path):
    img = scene(60, 100, [(1, 0.2, 0.2, 0.6, 0.8)])
    lmdb = one_image_lmdb(tmp_path, img, [(1, 0.2, 0.2, 0.6, 0.8)])
    modes = [
        caffe_pb2.ResizeParameter.LINEAR,
        caffe_pb2.ResizeParameter.AREA,
        caffe_pb2.ResizeParameter.NEAREST,
        caffe_pb2.ResizeParameter.CUBIC,
        caffe_pb2.ResizeParameter.LANCZOS4,
    ]
    rp = {"resize_mode": caffe_pb2.ResizeParameter.WARP, "height": 48, "width": 40, "interp_mode": modes}
    imgs, labels = draws(caffe, data_net(tmp_path, lmdb, {"resize_param": rp}), batches=1)
    assert imgs.shape == (N, 48, 40, 3)
    for lab in labels:  # WARP keeps normalised boxes
        np.testing.assert_allclose(lab[0, 3:7], [0.2, 0.2, 0.6, 0.8], atol=1e-5)
    # each draw is the image resized with one of the listed modes, and several are used
    cv_modes = [cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4]
    refs = np.stack([cv2.resize(img, (40, 48), interpolation=m).astype(np.float32) for m in cv_modes])
    err = np.abs(imgs[:, None] - refs[None]).mean(axis=(2, 3, 4))  # draws x modes
    assert (err.min(axis=1) < 1.5).all()
    assert len({tuple(np.round(im[::7, ::7, 2]).ravel()) for im in imgs}) >= 3


def test_brightness_adds_one_delta_with_its_probability(caffe, tmp_path):
    m = flat_draws(caffe, tmp_path, {"brightness_prob": 0.3, "brightness_delta": 32})
    d = m - np.array(FLAT)
    changed = np.abs(d).max(axis=1) > 1.5
    assert abs(changed.mean() - 0.3) < TOL
    assert np.abs(d).max() <= 32 + 2
    # the same delta on every channel
    assert (np.ptp(d[changed], axis=1) < 2.5).all()


def test_contrast_scales_with_its_probability(caffe, tmp_path):
    m = flat_draws(caffe, tmp_path, {"contrast_prob": 0.5, "contrast_lower": 0.5, "contrast_upper": 1.5})
    ratio = m / np.array(FLAT)
    changed = np.abs(ratio - 1).max(axis=1) > 0.03
    assert abs(changed.mean() - 0.5) < TOL
    r = ratio[changed]
    assert ((r > 0.5 - 0.03) & (r < 1.5 + 0.03)).all()
    assert (np.ptp(r, axis=1) < 0.05).all()  # one factor for all channels


def _hsv(bgr_means: np.ndarray) -> np.ndarray:
    px = np.clip(np.round(bgr_means), 0, 255).astype(np.uint8).reshape(-1, 1, 3)
    return cv2.cvtColor(px, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(float)


def test_saturation_changes_saturation_not_hue(caffe, tmp_path):
    m = flat_draws(
        caffe, tmp_path, {"saturation_prob": 0.5, "saturation_lower": 0.5, "saturation_upper": 1.5}
    )
    hsv, ref = _hsv(m), _hsv(np.array([FLAT], float))[0]
    changed = np.abs(hsv[:, 1] - ref[1]) > 4
    assert abs(changed.mean() - 0.5) < TOL
    assert (np.abs(hsv[:, 0] - ref[0]) <= 2).all()


def test_hue_shifts_hue_within_delta(caffe, tmp_path):
    m = flat_draws(caffe, tmp_path, {"hue_prob": 0.5, "hue_delta": 18})
    hsv, ref = _hsv(m), _hsv(np.array([FLAT], float))[0]
    dh = (hsv[:, 0] - ref[0] + 90) % 180 - 90
    changed = np.abs(dh) > 1.5
    # a drawn shift rounds to 0 with probability ~1/36, so slightly below 0.5
    assert abs(changed.mean() - 0.5 * 35 / 36) < TOL
    assert np.abs(dh).max() <= 18 + 2
    assert (np.abs(hsv[:, 2] - ref[2]) <= 4).all()


def test_channel_reordering_permutes_channels_with_its_probability(caffe, tmp_path):
    m = flat_draws(caffe, tmp_path, {"random_order_prob": 0.5})
    for row in m:  # always a permutation of the original values
        assert sorted(np.round(row)) == pytest.approx(sorted(FLAT), abs=2)
    reordered = np.abs(m - np.array(FLAT)).max(axis=1) > 2
    # a shuffle leaves the order as it was 1 time in 6
    assert abs(reordered.mean() - 0.5 * 5 / 6) < TOL


def test_no_distortion_when_probabilities_are_zero(caffe, tmp_path):
    m = flat_draws(
        caffe,
        tmp_path,
        {
            "brightness_prob": 0,
            "brightness_delta": 32,
            "contrast_prob": 0,
            "contrast_lower": 0.5,
            "contrast_upper": 1.5,
            "hue_prob": 0,
            "hue_delta": 18,
            "saturation_prob": 0,
            "saturation_lower": 0.5,
            "saturation_upper": 1.5,
            "random_order_prob": 0,
        },
    )
    assert np.abs(m - np.array(FLAT)).max() < 2


MEAN = [104.0, 117.0, 123.0]
OBJ = (0, 0, 255)
BG = (200, 200, 200)


def test_expansion_keeps_boxes_on_objects_over_a_mean_canvas(caffe, tmp_path):
    box = (1, 0.3, 0.2, 0.7, 0.6)
    img = scene(100, 100, [box], bg=BG, colors={1: OBJ})
    lmdb = one_image_lmdb(tmp_path, img, [box])
    t = {
        "mean_value": MEAN,
        "resize_param": {**WARP64, "height": 100, "width": 100},
        "expand_param": {"prob": 0.5, "max_expand_ratio": 4.0},
    }
    imgs, labels = draws(caffe, data_net(tmp_path, lmdb, t))
    obj = np.array(OBJ, float) - MEAN
    bg = np.array(BG, float) - MEAN
    expanded = []
    for im, lab in zip(imgs, labels):
        assert len(lab) == 1 and lab[0, 1] == 1
        x0, y0, x1, y1 = lab[0, 3:7]
        w, h = x1 - x0, y1 - y0
        ratio_w, ratio_h = 0.4 / w, 0.4 / h
        assert ratio_w == pytest.approx(ratio_h, rel=0.05)  # same factor both ways
        assert 1 - 0.02 <= ratio_w <= 4 + 0.05
        expanded.append(ratio_w > 1.02)
        # the box's interior is the object's colour
        H, W = im.shape[:2]
        cx0, cx1 = int((x0 + 0.2 * w) * W), int(np.ceil((x1 - 0.2 * w) * W))
        cy0, cy1 = int((y0 + 0.2 * h) * H), int(np.ceil((y1 - 0.2 * h) * H))
        inner = im[cy0:cy1, cx0:cx1].reshape(-1, 3)
        assert len(inner) > 0
        assert np.abs(inner.mean(axis=0) - obj).max() < 12
        # outside the original image the canvas holds the mean (0 after subtraction);
        # the original image covers 1/ratio^2 of the output
        near_zero = (np.abs(im) < 12).all(axis=2).mean()
        near_bg = (np.abs(im - bg) < 12).all(axis=2).mean()
        if ratio_w > 1.3:
            assert near_zero == pytest.approx(1 - 1 / (ratio_w * ratio_h), abs=0.06)
            assert near_bg > 0.2 / (ratio_w * ratio_h)
        else:
            assert near_zero < 1 - 1 / (ratio_w * ratio_h) + 0.06
    assert abs(np.mean(expanded) - 0.5) < TOL


def test_expansion_disabled_keeps_the_image(caffe, tmp_path):
    box = (2, 0.1, 0.1, 0.5, 0.9)
    img = scene(50, 50, [box], bg=BG, colors={2: OBJ})
    lmdb = one_image_lmdb(tmp_path, img, [box])
    t = {
        "resize_param": {**WARP64, "height": 50, "width": 50},
        "expand_param": {"prob": 0.0, "max_expand_ratio": 4.0},
    }
    imgs, labels = draws(caffe, data_net(tmp_path, lmdb, t), batches=1)
    for lab in labels:
        np.testing.assert_allclose(lab[0, 3:7], box[1:], atol=1e-5)
    assert np.abs(imgs - img.astype(np.float32)).max() < 1


def test_crop_emits_only_boxes_whose_centre_is_kept(caffe, tmp_path):
    # left object centred at x=0.15, right one at x=0.85; crops of the middle 0.3..1.0 scale
    boxes = [(1, 0.05, 0.3, 0.25, 0.7), (2, 0.75, 0.3, 0.95, 0.7)]
    img = scene(100, 100, boxes, bg=BG, colors={1: (255, 0, 0), 2: (0, 255, 0)})
    lmdb = one_image_lmdb(tmp_path, img, boxes)
    t = {
        "resize_param": {**WARP64, "height": 100, "width": 100},
        "emit_constraint": {"emit_type": caffe_pb2.EmitConstraint.CENTER},
    }
    sampler = [
        {
            "sampler": {"min_scale": 0.3, "max_scale": 1.0, "min_aspect_ratio": 0.5, "max_aspect_ratio": 2.0},
            "sample_constraint": {"max_jaccard_overlap": 1.0},
            "max_trials": 50,
            "max_sample": 1,
        }
    ]
    imgs, labels = draws(caffe, data_net(tmp_path, lmdb, t, sampler), batches=2)
    counts = []
    for im, lab in zip(imgs, labels):
        counts.append(len(lab))
        for row in lab:
            x0, y0, x1, y1 = row[3:7]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            # the emitted box's centre lies on its object's colour
            cx, cy = int((x0 + x1) / 2 * im.shape[1]), int((y0 + y1) / 2 * im.shape[0])
            want = (255, 0, 0) if row[1] == 1 else (0, 255, 0)
            assert np.abs(im[cy, cx] - want).max() < 40
    assert min(counts) < 2  # some crops dropped an object whose centre fell outside
