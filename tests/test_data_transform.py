"""The annotated data path of both engines (the project's Caffe, the PyTorch data path):
resize, photometric distortion, expansion, batch sampling, emission, mirror.

Each test writes a tiny LMDB of flat-coloured scenes, runs an AnnotatedData layer for a few
hundred draws and checks documented properties: what each distortion may do to the pixels,
that its probability is respected, that expanded images keep their boxes on the objects over
a mean-filled canvas, that crops meet their sampler's constraints, that emission follows the
emit constraint, where the resize policies put the boxes. One test body runs on each engine.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from model_libs.proto import caffe_pb2
from tests.caffe_support import annotated_datum, scene, write_lmdb
from tests.data_engines import ENGINES, Engine, data_net, make_engine

N = 64  # images per batch
BATCHES = 8  # batches per test: 512 draws
# With 512 draws a frequency is within 0.09 (4 standard deviations) of its probability.
TOL = 0.09


@pytest.fixture(params=ENGINES)
def engine(request) -> Engine:
    return make_engine(request)


def one_image_lmdb(tmp: Path, img: np.ndarray, boxes, ext=".png") -> Path:
    return write_lmdb(tmp / "lmdb", [annotated_datum(img, boxes, ext=ext)])


FLAT = (50, 90, 160)  # BGR: coloured enough for hue/saturation, x1.5 stays below 255
WARP64 = {"resize_mode": caffe_pb2.ResizeParameter.WARP, "height": 64, "width": 64}


def flat_draws(engine, tmp, distort: dict):
    img = np.empty((64, 64, 3), np.uint8)
    img[:] = FLAT
    lmdb = one_image_lmdb(tmp, img, [(1, 0.25, 0.25, 0.75, 0.75)])
    imgs, _ = engine.draws(data_net(tmp, lmdb, {"resize_param": WARP64, "distort_param": distort}))
    return imgs.reshape(len(imgs), -1, 3).mean(axis=1)  # mean BGR per draw


def test_resize_warps_to_the_net_size_with_each_interp_mode(engine, tmp_path):
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
    imgs, labels = engine.draws(data_net(tmp_path, lmdb, {"resize_param": rp}), batches=1)
    assert imgs.shape == (N, 48, 40, 3)
    for lab in labels:  # WARP keeps normalised boxes
        np.testing.assert_allclose(lab[0, 3:7], [0.2, 0.2, 0.6, 0.8], atol=1e-5)
    # each draw is the image resized with one of the listed modes, and several are used
    cv_modes = [cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4]
    refs = np.stack([cv2.resize(img, (40, 48), interpolation=m).astype(np.float32) for m in cv_modes])
    err = np.abs(imgs[:, None] - refs[None]).mean(axis=(2, 3, 4))  # draws x modes
    assert (err.min(axis=1) < 1.5).all()
    assert len({tuple(np.round(im[::7, ::7, 2]).ravel()) for im in imgs}) >= 3


def test_brightness_adds_one_delta_with_its_probability(engine, tmp_path):
    m = flat_draws(engine, tmp_path, {"brightness_prob": 0.3, "brightness_delta": 32})
    d = m - np.array(FLAT)
    changed = np.abs(d).max(axis=1) > 1.5
    assert abs(changed.mean() - 0.3) < TOL
    assert np.abs(d).max() <= 32 + 2
    # the same delta on every channel
    assert (np.ptp(d[changed], axis=1) < 2.5).all()


def test_contrast_scales_with_its_probability(engine, tmp_path):
    m = flat_draws(engine, tmp_path, {"contrast_prob": 0.5, "contrast_lower": 0.5, "contrast_upper": 1.5})
    ratio = m / np.array(FLAT)
    changed = np.abs(ratio - 1).max(axis=1) > 0.03
    assert abs(changed.mean() - 0.5) < TOL
    r = ratio[changed]
    assert ((r > 0.5 - 0.03) & (r < 1.5 + 0.03)).all()
    assert (np.ptp(r, axis=1) < 0.05).all()  # one factor for all channels


def _hsv(bgr_means: np.ndarray) -> np.ndarray:
    px = np.clip(np.round(bgr_means), 0, 255).astype(np.uint8).reshape(-1, 1, 3)
    return cv2.cvtColor(px, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(float)


def test_saturation_changes_saturation_not_hue(engine, tmp_path):
    m = flat_draws(
        engine, tmp_path, {"saturation_prob": 0.5, "saturation_lower": 0.5, "saturation_upper": 1.5}
    )
    hsv, ref = _hsv(m), _hsv(np.array([FLAT], float))[0]
    changed = np.abs(hsv[:, 1] - ref[1]) > 4
    assert abs(changed.mean() - 0.5) < TOL
    assert (np.abs(hsv[:, 0] - ref[0]) <= 2).all()


def test_hue_shifts_hue_within_delta(engine, tmp_path):
    m = flat_draws(engine, tmp_path, {"hue_prob": 0.5, "hue_delta": 18})
    hsv, ref = _hsv(m), _hsv(np.array([FLAT], float))[0]
    dh = (hsv[:, 0] - ref[0] + 90) % 180 - 90
    changed = np.abs(dh) > 1.5
    # a drawn shift rounds to 0 with probability ~1/36, so slightly below 0.5
    assert abs(changed.mean() - 0.5 * 35 / 36) < TOL
    assert np.abs(dh).max() <= 18 + 2
    assert (np.abs(hsv[:, 2] - ref[2]) <= 4).all()


def test_channel_reordering_permutes_channels_with_its_probability(engine, tmp_path):
    m = flat_draws(engine, tmp_path, {"random_order_prob": 0.5})
    for row in m:  # always a permutation of the original values
        assert sorted(np.round(row)) == pytest.approx(sorted(FLAT), abs=2)
    reordered = np.abs(m - np.array(FLAT)).max(axis=1) > 2
    # a shuffle leaves the order as it was 1 time in 6
    assert abs(reordered.mean() - 0.5 * 5 / 6) < TOL


def test_no_distortion_when_probabilities_are_zero(engine, tmp_path):
    m = flat_draws(
        engine,
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


def test_expansion_keeps_boxes_on_objects_over_a_mean_canvas(engine, tmp_path):
    box = (1, 0.3, 0.2, 0.7, 0.6)
    img = scene(100, 100, [box], bg=BG, colors={1: OBJ})
    lmdb = one_image_lmdb(tmp_path, img, [box])
    t = {
        "mean_value": MEAN,
        "resize_param": {**WARP64, "height": 100, "width": 100},
        "expand_param": {"prob": 0.5, "max_expand_ratio": 4.0},
    }
    imgs, labels = engine.draws(data_net(tmp_path, lmdb, t))
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


def test_expansion_disabled_keeps_the_image(engine, tmp_path):
    box = (2, 0.1, 0.1, 0.5, 0.9)
    img = scene(50, 50, [box], bg=BG, colors={2: OBJ})
    lmdb = one_image_lmdb(tmp_path, img, [box])
    t = {
        "resize_param": {**WARP64, "height": 50, "width": 50},
        "expand_param": {"prob": 0.0, "max_expand_ratio": 4.0},
    }
    imgs, labels = engine.draws(data_net(tmp_path, lmdb, t), batches=1)
    for lab in labels:
        np.testing.assert_allclose(lab[0, 3:7], box[1:], atol=1e-5)
    assert np.abs(imgs - img.astype(np.float32)).max() < 1


def test_crop_emits_only_boxes_whose_centre_is_kept(engine, tmp_path):
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
    imgs, labels = engine.draws(data_net(tmp_path, lmdb, t, sampler), batches=2)
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


def test_mirror_flips_image_and_boxes_with_even_odds(engine, tmp_path):
    box = (1, 0.1, 0.2, 0.4, 0.5)
    img = scene(64, 64, [box], bg=BG, colors={1: OBJ})
    lmdb = one_image_lmdb(tmp_path, img, [box])
    imgs, labels = engine.draws(data_net(tmp_path, lmdb, {"mirror": True, "resize_param": WARP64}), batches=4)
    flipped = []
    for im, lab in zip(imgs, labels):
        assert len(lab) == 1
        x0, y0, x1, y1 = lab[0, 3:7]
        is_flipped = bool(abs(x0 - 0.6) < 1e-5)
        assert is_flipped or abs(x0 - 0.1) < 1e-5
        np.testing.assert_allclose([x1 - x0, y0, y1], [0.3, 0.2, 0.5], atol=1e-5)
        np.testing.assert_allclose(im, img[:, ::-1] if is_flipped else img, atol=0.5)
        flipped.append(is_flipped)
    assert abs(np.mean(flipped) - 0.5) < 0.13  # 256 draws: 4 standard deviations


def gradient_image(size: int = 256) -> np.ndarray:
    """B = x, G = y: every pixel says where it came from."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:, :, 0] = np.arange(size)[None, :]
    img[:, :, 1] = np.arange(size)[:, None]
    return img


def crop_windows(imgs: np.ndarray, size: int = 256) -> np.ndarray:
    """The crop each draw was taken from (normalised xyxy), read from a gradient image resized
    with NEAREST (first and last output pixels come from the crop's first and last pixels)."""
    h, w = imgs.shape[1:3]
    x0, y0 = imgs[:, 0, 0, 0], imgs[:, 0, 0, 1]
    # the last output pixel starts about one source step before the crop's end
    x1 = imgs[:, -1, -1, 0] + (imgs[:, -1, -1, 0] - x0 + 1) / w
    y1 = imgs[:, -1, -1, 1] + (imgs[:, -1, -1, 1] - y0 + 1) / h
    return np.stack([x0, y0, x1, y1], axis=1) / size


def iou(a: np.ndarray, b) -> np.ndarray:
    iw = np.clip(np.minimum(a[:, 2], b[2]) - np.maximum(a[:, 0], b[0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[3]) - np.maximum(a[:, 1], b[1]), 0, None)
    inter = iw * ih
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    return inter / (area + (b[2] - b[0]) * (b[3] - b[1]) - inter)


SCALE_AR = {"min_scale": 0.3, "max_scale": 1.0, "min_aspect_ratio": 0.5, "max_aspect_ratio": 2.0}
NEAREST128 = {
    "resize_mode": caffe_pb2.ResizeParameter.WARP,
    "height": 128,
    "width": 128,
    "interp_mode": [caffe_pb2.ResizeParameter.NEAREST],
}


@pytest.mark.parametrize(
    "obj, constraint, check",
    [
        ((1, 0.1, 0.15, 0.9, 0.85), {"min_jaccard_overlap": 0.7}, lambda j: j >= 0.7 - 0.03),
        ((1, 0.6, 0.55, 0.9, 0.9), {"max_jaccard_overlap": 0.1}, lambda j: j <= 0.1 + 0.03),
    ],
    ids=["min_jaccard", "max_jaccard"],
)
def test_sampled_crops_meet_their_constraint_scale_and_aspect(engine, tmp_path, obj, constraint, check):
    lmdb = one_image_lmdb(tmp_path, gradient_image(), [obj])
    sampler = [{"sampler": SCALE_AR, "sample_constraint": constraint, "max_trials": 50, "max_sample": 1}]
    t = {"resize_param": NEAREST128, "emit_constraint": {"emit_type": caffe_pb2.EmitConstraint.CENTER}}
    imgs, labels = engine.draws(data_net(tmp_path, lmdb, t, sampler), batches=4)
    win = crop_windows(imgs)
    whole = np.all(np.abs(win - [0, 0, 1, 1]) < 0.01, axis=1)  # no sample found: the whole image
    assert whole.mean() < 0.3
    cropped = win[~whole]
    assert all(check(j) for j in iou(cropped, obj[1:]))
    w, h = cropped[:, 2] - cropped[:, 0], cropped[:, 3] - cropped[:, 1]
    assert ((w * h > 0.3**2 - 0.02) & (w * h <= 1.0 + 0.02)).all()  # scale^2
    # aspect ratio; a pixel or two of error (Caffe re-encodes crops as JPEG) moves it by ~0.1
    assert ((w / h > 0.5 * 0.9) & (w / h < 2.0 * 1.1)).all()
    # the object is emitted iff its centre is in the crop, projected into it
    cx, cy = (obj[1] + obj[3]) / 2, (obj[2] + obj[4]) / 2
    for wn, lab in zip(win, labels):
        inside = wn[0] + 0.01 < cx < wn[2] - 0.01 and wn[1] + 0.01 < cy < wn[3] - 0.01
        outside = not (wn[0] - 0.01 < cx < wn[2] + 0.01 and wn[1] - 0.01 < cy < wn[3] + 0.01)
        if inside:
            assert len(lab) == 1
            sw, sh = wn[2] - wn[0], wn[3] - wn[1]
            want = np.clip(
                [(obj[1] - wn[0]) / sw, (obj[2] - wn[1]) / sh, (obj[3] - wn[0]) / sw, (obj[4] - wn[1]) / sh],
                0,
                1,
            )
            np.testing.assert_allclose(lab[0, 3:7], want, atol=0.03)
        elif outside:
            assert len(lab) == 0


RED = (0, 0, 255)


def red_extent(im: np.ndarray) -> np.ndarray:
    """Normalised xyxy of the pixels that are red in the image."""
    ys, xs = np.nonzero((im[:, :, 2] > 200) & (im[:, :, 0] < 60))
    h, w = im.shape[:2]
    return np.array([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])


@pytest.mark.parametrize(
    "h, w, want",
    [
        # 600 wide, 1000 tall: 180 x 300 in the middle of 300 x 300, 60 columns of padding
        # each side: x 0.1 -> (60 + 0.1 * 180) / 300 = 0.26
        (1000, 600, [0.26, 0.1, 0.38, 0.3]),
        (600, 1000, [0.1, 0.26, 0.3, 0.38]),
    ],
    ids=["taller", "wider"],
)
def test_fit_large_size_and_pad_centres_the_image_and_its_boxes(engine, tmp_path, h, w, want):
    box = (1, 0.1, 0.1, 0.3, 0.3)
    img = scene(h, w, [box], colors={1: RED})
    lmdb = one_image_lmdb(tmp_path, img, [box])
    rp = {"resize_mode": caffe_pb2.ResizeParameter.FIT_LARGE_SIZE_AND_PAD, "height": 300, "width": 300}
    rp["pad_value"] = [7.0, 8.0, 9.0]
    imgs, labels = engine.draws(data_net(tmp_path, lmdb, {"resize_param": rp}, batch=2), batches=1)
    assert imgs.shape == (2, 300, 300, 3)
    for im, lab in zip(imgs, labels):
        assert len(lab) == 1
        np.testing.assert_allclose(lab[0, 3:7], want, atol=1e-4)
        np.testing.assert_allclose(red_extent(im), want, atol=2 / 300)
        pad = im[:, :60] if h > w else im[:60]
        assert (pad == [7, 8, 9]).all()


@pytest.mark.parametrize("h, w", [(1000, 600), (600, 1000)], ids=["taller", "wider"])
def test_fit_small_size_keeps_the_aspect_ratio_and_the_boxes(engine, tmp_path, h, w):
    box = (1, 0.1, 0.1, 0.3, 0.3)
    img = scene(h, w, [box], colors={1: RED})
    lmdb = one_image_lmdb(tmp_path, img, [box])
    rp = {"resize_mode": caffe_pb2.ResizeParameter.FIT_SMALL_SIZE, "height": 300, "width": 300}
    imgs, labels = engine.draws(data_net(tmp_path, lmdb, {"resize_param": rp}, batch=2), batches=1)
    # the shorter side becomes 300, the other 300 * 5/3 (float32 may make it 499)
    long_side = imgs.shape[1] if h > w else imgs.shape[2]
    assert (imgs.shape[2] if h > w else imgs.shape[1]) == 300 and long_side in (499, 500)
    for im, lab in zip(imgs, labels):
        np.testing.assert_allclose(lab[0, 3:7], box[1:], atol=1e-4)
        np.testing.assert_allclose(red_extent(im), box[1:], atol=2 / 300)


def test_a_batch_without_boxes_gives_one_row_of_minus_one(engine, tmp_path):
    img = scene(40, 40, [])
    lmdb = write_lmdb(tmp_path / "lmdb", [annotated_datum(img, []), annotated_datum(img, [])])
    _, label = engine.blobs(data_net(tmp_path, lmdb, {"resize_param": WARP64}, batch=3), batches=1)[0]
    assert label.shape == (1, 1, 1, 8)
    assert (label == -1).all()
