"""Image loading for conversion: header size, corrupt/truncated files, re-encoding."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from model_libs.datasets.pipeline import jpeg_size, load_image
from model_libs.errors import ModelLibsError


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("progressive", [0, 1])
@pytest.mark.parametrize(("h", "w"), [(1, 1), (17, 33), (240, 320), (301, 9)])
def test_jpeg_size_matches_decoder(tmp_path, h, w, progressive):
    p = tmp_path / "a.jpg"
    cv2.imwrite(str(p), _img(h, w), [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive])
    raw = p.read_bytes()
    assert jpeg_size(raw) == (h, w) == cv2.imread(str(p)).shape[:2]
    im = load_image(p)
    assert (im.height, im.width, im.data, im.shape) == (h, w, raw, None)


def test_grayscale_and_jpeg_extension_keep_bytes(tmp_path):
    p = tmp_path / "g.JPEG"
    cv2.imwrite(str(p), np.full((20, 30), 77, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    im = load_image(p)
    assert (im.height, im.width, im.data, im.shape) == (20, 30, p.read_bytes(), None)


def test_png_is_reencoded_as_jpeg_with_shape(tmp_path):
    # a smooth picture (JPEG keeps it within a few grey levels) with a distinct colour per corner
    yy, xx = np.mgrid[0:48, 0:64]
    img = np.stack([xx * 4, yy * 5, 255 - xx * 2], axis=-1).astype(np.uint8)
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), img)
    im = load_image(p)
    assert im.shape == (3, 48, 64) and im.data[:2] == b"\xff\xd8"
    back = cv2.imdecode(np.frombuffer(im.data, np.uint8), cv2.IMREAD_COLOR)
    assert back.shape == img.shape
    err = np.abs(back.astype(int) - img.astype(int))
    assert err.mean() < 2 and err.max() <= 16  # the same picture, not just the same size


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_jpeg_is_rejected(tmp_path, cut):
    p = tmp_path / "t.jpg"
    cv2.imwrite(str(p), _img(120, 160))
    raw = p.read_bytes()
    p.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(ModelLibsError, match=r"t\.jpg: unreadable image"):
        load_image(p)


def test_corrupt_and_empty_files(tmp_path):
    p = tmp_path / "c.jpg"
    p.write_bytes(b"")
    with pytest.raises(ModelLibsError, match=re.escape("c.jpg: unreadable image")):
        load_image(p)
    p.write_bytes(b"GIF89a not a jpeg at all")
    with pytest.raises(ModelLibsError, match=re.escape("c.jpg: unreadable image")):
        load_image(p)
    with pytest.raises(ModelLibsError, match=re.escape("nope.jpg: image file not found")):
        load_image(tmp_path / "nope.jpg")
    assert jpeg_size(b"\xff\xd8\xff") is None and jpeg_size(b"abc") is None
