"""A built-in detection set: geometric shapes on textured, cluttered backgrounds.

Generated deterministically from a seed (one ``numpy`` Generator per image, seeded with
``[seed, image_index]``), written in VOC layout so the VOC converter reads it:

    OUT/Synth/JPEGImages/<id>.jpg, OUT/Synth/Annotations/<id>.xml,
    OUT/Synth/ImageSets/Main/{trainval,test}.txt, OUT/labelmap_synth.prototxt

Five classes with distinct geometry (circle, square, triangle, star, ring); each object
gets a random colour (so colour never identifies the class), size, aspect ratio and
rotation. Backgrounds are smooth colour fields with stripes and noise, plus distractor
clutter (lines, zig-zags, crosses) that is not any class. Objects may overlap (IoU up to
0.35); tiny objects (< 16 px) and objects mostly hidden by later ones are flagged
``difficult``, as VOC does for hard instances.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelLibsError
from ..fsutil import atomic_dir
from .labelmap import make_labelmap, save_labelmap
from .lmdb_io import is_lmdb_folder
from .pipeline import default_workers
from .voc import VocObject, write_voc_xml

SYNTH_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")
DATASET = "Synth"
LABELMAP_NAME = "labelmap_synth.prototxt"
MIN_SIDE, MAX_SIDE = 192, 256  # image width/height range (pixels)
DIFFICULT_PX = 16  # objects whose longer box side is below this are difficult
MAX_IOU = 0.35  # overlap allowed between two objects' boxes
MAX_IOS = 0.7  # ... and of the smaller box covered by the other
HIDDEN = 0.4  # objects with less than this fraction visible are difficult


@dataclass(frozen=True)
class SyntheticSet:
    """Where :func:`make_synthetic` put things."""

    root: Path  # VOCdevkit-style root, pass to convert_voc
    dataset: str  # "Synth"
    labelmap: Path
    n_train: int
    n_test: int
    n_objects: int

    @property
    def train_sets(self) -> str:
        return f"{self.dataset}:trainval"

    @property
    def test_sets(self) -> str:
        return f"{self.dataset}:test"


@dataclass(frozen=True)
class SyntheticLmdbs:
    """The full quickstart bundle made by :func:`build_synthetic_lmdbs`."""

    source: SyntheticSet
    train_lmdb: Path
    test_lmdb: Path
    name_size: Path
    labelmap: Path


def synth_labelmap():
    """Background + the five shape classes (labels 1..5)."""
    return make_labelmap(SYNTH_CLASSES)


# ----------------------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    import cv2

    grid = rng.uniform(30, 225, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
    img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    xx = np.arange(w, dtype=np.float32)[None, :]
    yy = np.arange(h, dtype=np.float32)[:, None]
    for _ in range(rng.integers(1, 3)):  # stripes / waves
        ang = rng.uniform(0, math.pi)
        freq = rng.uniform(0.04, 0.3)
        amp = np.float32(rng.uniform(5, 30))
        phase = xx * np.float32(math.cos(ang) * freq) + yy * np.float32(math.sin(ang) * freq)
        wave = np.sin(phase + np.float32(rng.uniform(0, 6.3))) * amp
        img += wave[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * rng.uniform(4, 14)  # grain
    return img


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    import cv2

    h, w = img.shape[:2]
    for _ in range(rng.integers(3, 12)):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(0, 3)
        thick = int(rng.integers(1, 4))
        if kind == 0:  # straight line
            p = rng.integers(0, [w, h], (2, 2))
            cv2.line(img, tuple(map(int, p[0])), tuple(map(int, p[1])), colour, thick, cv2.LINE_AA)
        elif kind == 1:  # zig-zag polyline
            n = int(rng.integers(3, 7))
            start = rng.integers(0, [w, h])
            steps = rng.integers(-30, 31, (n, 2))
            pts = np.clip(start + np.cumsum(steps, axis=0), 0, [w - 1, h - 1]).astype(np.int32)
            cv2.polylines(img, [pts], False, colour, thick, cv2.LINE_AA)
        else:  # small cross
            c = rng.integers(0, [w, h])
            r = int(rng.integers(3, 9))
            cx, cy = int(c[0]), int(c[1])
            cv2.line(img, (cx - r, cy), (cx + r, cy), colour, thick)
            cv2.line(img, (cx, cy - r), (cx, cy + r), colour, thick)


def _shape_polys(cls: str, cx: float, cy: float, rx: float, ry: float, ang: float):
    """Outer polygon (and inner hole for ring) as float (N, 2) arrays, rotated by ``ang``."""
    if cls in ("circle", "ring"):
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        unit = np.stack([np.cos(t), np.sin(t)], 1)
    elif cls == "square":
        unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.85
    elif cls == "triangle":
        t = -math.pi / 2 + np.arange(3) * 2 * math.pi / 3
        unit = np.stack([np.cos(t), np.sin(t)], 1)
    else:  # star: five points, inner radius 0.42
        t = -math.pi / 2 + np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        unit = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    outer = (unit * [rx, ry]) @ rot.T + [cx, cy]
    inner = (unit * [rx * 0.55, ry * 0.55]) @ rot.T + [cx, cy] if cls == "ring" else None
    return outer, inner


def _iou(a, b) -> tuple[float, float]:
    """IoU and intersection over the smaller box, for (x0, y0, x1, y1) boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0, 0.0
    inter = iw * ih
    aa = (a[2] - a[0]) * (a[3] - a[1])
    ab = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (aa + ab - inter), inter / min(aa, ab)


def render_image(seed: int, index: int) -> tuple[np.ndarray, list[VocObject]]:
    """One synthetic image (BGR uint8) and its objects (VOC 1-based pixel boxes)."""
    img, objects, _ = render_image_with_masks(seed, index)
    return img, objects


def render_image_with_masks(seed: int, index: int) -> tuple[np.ndarray, list[VocObject], list[np.ndarray]]:
    """:func:`render_image` plus, per object, the boolean image mask of its visible pixels
    (what later objects left uncovered): where the object really is in the picture."""
    import cv2

    rng = np.random.default_rng([seed, index])
    w, h = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    img = _background(rng, h, w)
    _clutter(rng, img)
    placed: list[tuple[str, tuple[int, int, int, int], np.ndarray, int]] = []
    for _ in range(int(rng.integers(1, 7))):
        cls = SYNTH_CLASSES[int(rng.integers(len(SYNTH_CLASSES)))]
        small = rng.random() < 0.12
        side = rng.uniform(8, 15) if small else math.exp(rng.uniform(math.log(20), math.log(0.5 * min(w, h))))
        aspect = math.exp(rng.uniform(math.log(0.65), math.log(1.55)))
        rx, ry = side / 2 * math.sqrt(aspect), side / 2 / math.sqrt(aspect)
        ang = rng.uniform(0, 2 * math.pi) if cls != "circle" else rng.uniform(0, math.pi)
        for _try in range(25):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            outer, inner = _shape_polys(cls, cx, cy, rx, ry, ang)
            x0, y0 = np.floor(outer.min(0)).astype(int)
            x1, y1 = np.ceil(outer.max(0)).astype(int)
            if x0 < 0 or y0 < 0 or x1 > w - 1 or y1 > h - 1:
                continue
            box = (int(x0), int(y0), int(x1), int(y1))
            overlaps = [_iou(box, b) for _, b, _, _ in placed]
            if all(iou < MAX_IOU and ios < MAX_IOS for iou, ios in overlaps):
                break
        else:
            continue
        # rasterise in the box's region only (4 fractional bits for smooth edges)
        x0, y0, x1, y1 = box
        roi = (slice(y0, y1 + 1), slice(x0, x1 + 1))
        mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
        shift = np.array([x0, y0])
        cv2.fillPoly(mask, [np.round((outer - shift) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        if inner is not None:
            cv2.fillPoly(mask, [np.round((inner - shift) * 16).astype(np.int32)], 0, cv2.LINE_AA, 4)
        # random colour, re-drawn until it stands out from the background under the shape
        sel = np.zeros((h, w), bool)
        sel[roi] = mask > 127
        patch = img[roi]
        under = patch[mask > 127].mean(0) if sel.any() else np.full(3, 128.0)
        for _c in range(10):
            colour = rng.uniform(0, 255, 3)
            if np.abs(colour - under).sum() > 120:
                break
        ramp = np.linspace(-1, 1, x1 - x0 + 1, dtype=np.float32)[None, :, None]
        shade = 1 + rng.uniform(-0.25, 0.25) * ramp
        alpha = (mask.astype(np.float32) / 255.0)[..., None]
        img[roi] = patch * (1 - alpha) + (colour[None, None, :] * shade) * alpha
        for _, _, m, _ in placed:  # later shapes hide earlier ones
            m[roi] &= ~sel[roi]
        placed.append((cls, box, sel, int(sel.sum())))
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.0))
    img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(2, 6)
    out = np.clip(img, 0, 255).astype(np.uint8)
    objects = []
    for cls, (x0, y0, x1, y1), visible, area in placed:
        hidden = visible.sum() < HIDDEN * max(area, 1)
        tiny = max(x1 - x0, y1 - y0) + 1 < DIFFICULT_PX
        # VOC boxes are 1-based inclusive pixel indices
        objects.append(VocObject(cls, x0 + 1, y0 + 1, x1 + 1, y1 + 1, difficult=tiny or hidden))
    return out, objects, [visible for _, _, visible, _ in placed]


# ----------------------------------------------------------------------------- writing


def _generate(out: Path, seed: int, n_train: int, n_test: int) -> SyntheticSet:
    import cv2

    ds = out / DATASET
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (ds / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(n_train + n_test)]

    def one(i: int) -> int:
        name = ids[i]
        img, objects = render_image(seed, i)
        quality = int(np.random.default_rng([seed, i, 1]).integers(85, 96))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ModelLibsError(f"{ds}: cannot encode image {name}")
        (ds / "JPEGImages" / f"{name}.jpg").write_bytes(buf.tobytes())
        h, w = img.shape[:2]
        write_voc_xml(ds / "Annotations" / f"{name}.xml", f"{name}.jpg", w, h, objects, DATASET)
        return len(objects)

    with ThreadPoolExecutor(max_workers=default_workers()) as pool:
        n_obj = sum(pool.map(one, range(len(ids))))
    main = ds / "ImageSets" / "Main"
    (main / "trainval.txt").write_text("".join(f"{n}\n" for n in ids[:n_train]))
    (main / "test.txt").write_text("".join(f"{n}\n" for n in ids[n_train:]))
    save_labelmap(synth_labelmap(), out / LABELMAP_NAME)
    return SyntheticSet(out, DATASET, out / LABELMAP_NAME, n_train, n_test, n_obj)


def _check_counts(n_train: int, n_test: int, seed: int = 0) -> None:
    if n_train < 1 or n_test < 1:
        raise ModelLibsError(
            f"synthetic: need at least 1 train and 1 test image (got --train {n_train} --test {n_test})"
        )
    if n_train + n_test > 1_000_000:
        raise ModelLibsError(f"synthetic: at most 1,000,000 images (got {n_train + n_test:,})")
    if not 0 <= seed < 2**63:
        raise ModelLibsError(f"synthetic: the seed must be a whole number from 0 to 2**63-1 (got {seed})")


# What make_synthetic / build_synthetic_lmdbs leave in their folder: --force replaces a
# folder only if it holds nothing else.
_TOP = {DATASET, "lmdb", "test_name_size.txt", LABELMAP_NAME}
_VOC_PARTS = {"JPEGImages", "Annotations", "ImageSets"}
_LMDBS = {"synth_trainval_lmdb", "synth_test_lmdb"}


def is_synthetic_folder(path: Path) -> bool:
    """True when ``path`` holds exactly what this module writes (the set, its LMDBs, lists)."""
    try:
        top = set(os.listdir(path))
        if LABELMAP_NAME not in top or not top <= _TOP:
            return False
        if DATASET in top and not set(os.listdir(path / DATASET)) <= _VOC_PARTS:
            return False
        if "lmdb" in top:
            lmdbs = set(os.listdir(path / "lmdb"))
            if not lmdbs <= _LMDBS or not all(is_lmdb_folder(path / "lmdb" / n) for n in lmdbs):
                return False
    except OSError:
        return False
    return True


def make_synthetic(
    out: str | os.PathLike,
    seed: int = 0,
    n_train: int = 400,
    n_test: int = 100,
    force: bool = False,
) -> SyntheticSet:
    """Write the synthetic set in VOC layout under ``out`` (built aside, renamed on success)."""
    _check_counts(n_train, n_test, seed)
    out = Path(out)
    with atomic_dir(out, force=force, recognise=is_synthetic_folder, what="synthetic set") as tmp:
        made = _generate(tmp, seed, n_train, n_test)
    return SyntheticSet(out, made.dataset, out / LABELMAP_NAME, n_train, n_test, made.n_objects)


def build_synthetic_lmdbs(
    out: str | os.PathLike,
    seed: int = 0,
    n_train: int = 400,
    n_test: int = 100,
    force: bool = False,
    progress: bool | None = False,
) -> SyntheticLmdbs:
    """One call for the quickstart: images + XML, train/test LMDBs, name/size list, label map.

    Layout under ``out``: ``Synth/`` (VOC layout), ``lmdb/synth_trainval_lmdb``,
    ``lmdb/synth_test_lmdb``, ``test_name_size.txt``, ``labelmap_synth.prototxt``.
    """
    from .voc import convert_voc

    _check_counts(n_train, n_test, seed)
    out = Path(out)
    with atomic_dir(out, force=force, recognise=is_synthetic_folder, what="synthetic set") as tmp:
        made = _generate(tmp, seed, n_train, n_test)
        lm = synth_labelmap()
        convert_voc(
            tmp, made.train_sets, tmp / "lmdb" / "synth_trainval_lmdb", labelmap=lm, progress=progress
        )
        convert_voc(
            tmp,
            made.test_sets,
            tmp / "lmdb" / "synth_test_lmdb",
            labelmap=lm,
            name_size=tmp / "test_name_size.txt",
            progress=progress,
        )
    src = SyntheticSet(out, made.dataset, out / LABELMAP_NAME, n_train, n_test, made.n_objects)
    return SyntheticLmdbs(
        src,
        out / "lmdb" / "synth_trainval_lmdb",
        out / "lmdb" / "synth_test_lmdb",
        out / "test_name_size.txt",
        out / LABELMAP_NAME,
    )
