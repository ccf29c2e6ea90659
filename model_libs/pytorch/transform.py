"""SSD Caffe's AnnotatedData augmentation in numpy and OpenCV (no torch here).

One record goes through the steps of the project's ``AnnotatedDataLayer::load_batch``, in
its order: photometric distortion, expansion onto a mean-filled canvas, the batch samplers
and a crop to one sampled box, then the transform proper (resize, ``crop_size`` crop,
mirror, mean subtraction, scale) with the boxes following every geometric step and the
emit constraint deciding which boxes survive a crop. The parameters mean what they mean to
the project's Caffe (sources: ``data_transformer.cpp``, ``annotated_data_layer.cpp``,
``util/sampler.cpp``, ``util/im_transforms.cpp``, ``util/bbox_util.cpp`` with
``caffe/patches/0003`` and ``0009``); the random draws follow the same distributions, not the
same stream.

Box arithmetic is float32 in Caffe's order of operations, so that deterministic steps give
Caffe's label values bit for bit. Deliberate differences, all without effect on the
parameters' meaning:

- Caffe re-encodes the image as JPEG after each of distortion, expansion and cropping when
  the record is encoded (a lossy round trip, even for the test net's trivial sampler); here
  the pixels stay decoded.
- An expanded image is never materialised whole: only the crop taken from the canvas is.
- Raw (not encoded) records are resized like encoded ones (Caffe ignores ``resize_param``
  for raw pixels and then fails its shape check).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelLibsError
from ..proto import caffe_pb2

F32 = np.float32
RP = caffe_pb2.ResizeParameter
EMIT_CENTER = caffe_pb2.EmitConstraint.CENTER
EMIT_MIN_OVERLAP = caffe_pb2.EmitConstraint.MIN_OVERLAP

INTERP = {
    RP.LINEAR: cv2.INTER_LINEAR,
    RP.AREA: cv2.INTER_AREA,
    RP.NEAREST: cv2.INTER_NEAREST,
    RP.CUBIC: cv2.INTER_CUBIC,
    RP.LANCZOS4: cv2.INTER_LANCZOS4,
}
PAD = {
    RP.CONSTANT: cv2.BORDER_CONSTANT,
    RP.MIRRORED: cv2.BORDER_REFLECT101,
    RP.REPEAT_NEAREST: cv2.BORDER_REPLICATE,
}


# ---------------------------------------------------------------- boxes


@dataclass(frozen=True)
class Boxes:
    """A record's boxes in emission order (group by group, as stored): normalised xyxy."""

    label: np.ndarray  # int32, the group label
    instance: np.ndarray  # int32, instance_id
    xyxy: np.ndarray  # float32 (n, 4)
    difficult: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.label)

    def keep(self, mask: np.ndarray, xyxy: np.ndarray) -> Boxes:
        """The boxes where ``mask`` holds, with new coordinates ``xyxy`` (all rows)."""
        return Boxes(self.label[mask], self.instance[mask], xyxy[mask], self.difficult[mask])

    def moved(self, xyxy: np.ndarray) -> Boxes:
        return Boxes(self.label, self.instance, xyxy.astype(F32, copy=False), self.difficult)


def boxes_of(ad: caffe_pb2.AnnotatedDatum) -> Boxes:
    """The boxes of a record in the order Caffe emits them."""
    label, inst, xyxy, diff = [], [], [], []
    for g in ad.annotation_group:
        for a in g.annotation:
            b = a.bbox
            label.append(g.group_label)
            inst.append(a.instance_id)
            xyxy.append((b.xmin, b.ymin, b.xmax, b.ymax))
            diff.append(b.difficult)
    return Boxes(
        np.asarray(label, np.int32),
        np.asarray(inst, np.int32),
        np.asarray(xyxy, F32).reshape(-1, 4),
        np.asarray(diff, bool),
    )


def _size(b: np.ndarray) -> np.ndarray:
    """BBoxSize (normalised): 0 for an inverted box."""
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return np.where((w < 0) | (h < 0), F32(0), w * h).astype(F32)


def _intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IntersectBBox, broadcasting: [0, 0, 0, 0] where the boxes do not touch."""
    apart = (
        (b[..., 0] > a[..., 2]) | (b[..., 2] < a[..., 0]) | (b[..., 1] > a[..., 3]) | (b[..., 3] < a[..., 1])
    )
    inter = np.stack(
        [
            np.maximum(a[..., 0], b[..., 0]),
            np.maximum(a[..., 1], b[..., 1]),
            np.minimum(a[..., 2], b[..., 2]),
            np.minimum(a[..., 3], b[..., 3]),
        ],
        axis=-1,
    )
    return np.where(apart[..., None], F32(0), inter).astype(F32)


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """JaccardOverlap (normalised), broadcasting over leading axes."""
    i = _intersect(a, b)
    iw, ih = i[..., 2] - i[..., 0], i[..., 3] - i[..., 1]
    inter = (iw * ih).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (_size(a) + _size(b) - inter)
    return np.where((iw > 0) & (ih > 0), iou, F32(0)).astype(F32)


def coverage(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """BBoxCoverage: the share of ``a`` inside ``b``."""
    inter = _size(_intersect(a, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = inter / _size(a)
    return np.where(inter > 0, cov, F32(0)).astype(F32)


def clip(b: np.ndarray) -> np.ndarray:
    """ClipBBox to [0, 1]."""
    return np.clip(b, F32(0), F32(1)).astype(F32)


def meets_emit(src: np.ndarray, b: np.ndarray, emit: caffe_pb2.EmitConstraint) -> np.ndarray:
    """MeetEmitConstraint of each box ``b`` (n, 4) against the window ``src`` (4,)."""
    if emit.emit_type == EMIT_CENTER:
        cx = (b[:, 0] + b[:, 2]) / F32(2)
        cy = (b[:, 1] + b[:, 3]) / F32(2)
        return (cx >= src[0]) & (cx <= src[2]) & (cy >= src[1]) & (cy <= src[3])
    if emit.emit_type == EMIT_MIN_OVERLAP:
        return coverage(b, src[None]) > F32(emit.emit_overlap)
    raise ModelLibsError(f"emit_constraint: unknown emit_type {emit.emit_type}")


def transform_annotation(
    boxes: Boxes, src: np.ndarray, mirror: bool, emit: caffe_pb2.EmitConstraint | None
) -> Boxes:
    """TransformAnnotation: drop boxes failing the emit constraint, project the others into the
    window ``src`` (ProjectBBox: dropped when outside or empty after clipping), mirror."""
    b = boxes.xyxy
    ok = np.ones(len(b), bool) if emit is None else meets_emit(src, b, emit)
    ok &= ~((b[:, 0] >= src[2]) | (b[:, 2] <= src[0]) | (b[:, 1] >= src[3]) | (b[:, 3] <= src[1]))
    sw, sh = src[2] - src[0], src[3] - src[1]
    p = np.empty_like(b)
    p[:, 0] = (b[:, 0] - src[0]) / sw
    p[:, 1] = (b[:, 1] - src[1]) / sh
    p[:, 2] = (b[:, 2] - src[0]) / sw
    p[:, 3] = (b[:, 3] - src[1]) / sh
    p = clip(p)
    ok &= _size(p) > 0
    if mirror:
        p = np.stack([F32(1) - p[:, 2], p[:, 1], F32(1) - p[:, 0], p[:, 3]], axis=1).astype(F32)
    return boxes.keep(ok, p)


def update_by_resize_policy(
    b: np.ndarray, rp: caffe_pb2.ResizeParameter, old_w: int, old_h: int
) -> np.ndarray:
    """UpdateBBoxByResizePolicy (upstream SSD's, with the padding halved): where each box of an
    ``old_w`` x ``old_h`` image lands in the resized one."""
    new_h, new_w = F32(rp.height), F32(rp.width)
    ow, oh = F32(old_w), F32(old_h)
    orig_aspect = ow / oh
    new_aspect = new_w / new_h
    x0, y0, x1, y1 = (b[:, 0] * ow, b[:, 1] * oh, b[:, 2] * ow, b[:, 3] * oh)
    zero = F32(0)
    mode = rp.resize_mode
    if mode == RP.FIT_SMALL_SIZE:
        if orig_aspect < new_aspect:
            new_h = new_w / orig_aspect
        else:
            new_w = orig_aspect * new_h
    if mode in (RP.WARP, RP.FIT_SMALL_SIZE) or (
        mode == RP.FIT_LARGE_SIZE_AND_PAD and orig_aspect > new_aspect
    ):
        x0 = np.maximum(zero, x0 * new_w / ow)
        x1 = np.minimum(new_w, x1 * new_w / ow)
    if mode in (RP.WARP, RP.FIT_SMALL_SIZE) or (
        mode == RP.FIT_LARGE_SIZE_AND_PAD and orig_aspect <= new_aspect
    ):
        y0 = np.maximum(zero, y0 * new_h / oh)
        y1 = np.minimum(new_h, y1 * new_h / oh)
    if mode == RP.FIT_LARGE_SIZE_AND_PAD:
        if orig_aspect > new_aspect:
            pad = (new_h - new_w / orig_aspect) / F32(2)
            y0 = pad + np.maximum(zero, y0 * (new_h - F32(2) * pad) / oh)
            y1 = pad + np.minimum(new_h, y1 * (new_h - F32(2) * pad) / oh)
        else:
            pad = (new_w - orig_aspect * new_h) / F32(2)
            x0 = pad + np.maximum(zero, x0 * (new_w - F32(2) * pad) / ow)
            x1 = pad + np.minimum(new_w, x1 * (new_w - F32(2) * pad) / ow)
    elif mode not in (RP.WARP, RP.FIT_SMALL_SIZE):
        raise ModelLibsError(f"resize_param: unknown resize_mode {mode}")
    return np.stack([x0 / new_w, y0 / new_h, x1 / new_w, y1 / new_h], axis=1).astype(F32)


def resize_boxes(b: np.ndarray, rp: caffe_pb2.ResizeParameter, old_w: int, old_h: int) -> np.ndarray:
    """Boxes after the resize, as patch 0009 moves them: FIT_LARGE_SIZE_AND_PAD through the
    resize policy; WARP and FIT_SMALL_SIZE scale both axes with the image, so the policy only
    clamps a box's far sides into the image, done exactly (without the pixel round trip)."""
    if rp.resize_mode == RP.FIT_LARGE_SIZE_AND_PAD:
        return update_by_resize_policy(b, rp, old_w, old_h)
    out = b.copy()
    out[:, :2] = np.maximum(out[:, :2], F32(0))
    out[:, 2:] = np.minimum(out[:, 2:], F32(1))
    return out


# ---------------------------------------------------------------- the plan


def _uniform(rng: np.random.Generator, a: float, b: float) -> float:
    """caffe_rng_uniform on [a, b]; ``a`` when the range is empty (the project's distortion)."""
    return float(rng.uniform(a, b)) if b > a else float(a)


@dataclass(frozen=True)
class TransformPlan:
    """The ``transform_param`` and ``batch_sampler`` of an AnnotatedData layer, checked."""

    transform: caffe_pb2.TransformationParameter
    samplers: SamplerTable | None
    train: bool
    mean_file: np.ndarray | None = None  # (C, H, W) float32

    @staticmethod
    def from_layer(layer: caffe_pb2.LayerParameter, phase: str) -> TransformPlan:
        """The layer's plan for ``phase`` ("TRAIN" or "TEST"); a parameter the PyTorch data path
        does not support, or a wrong one, raises ModelLibsError naming the layer."""
        t = layer.transform_param
        where = f"layer {layer.name!r}"
        if phase not in ("TRAIN", "TEST"):
            raise ModelLibsError(f"{where}: phase must be TRAIN or TEST, not {phase!r}")
        if t.HasField("noise_param"):
            raise ModelLibsError(
                f"{where}: transform_param.noise_param is not supported by the PyTorch data path"
            )
        if t.force_color and t.force_gray:
            raise ModelLibsError(f"{where}: cannot set both force_color and force_gray")
        if t.HasField("mean_file") and len(t.mean_value):
            raise ModelLibsError(f"{where}: cannot specify mean_file and mean_value at the same time")
        if t.HasField("mean_file") and (t.HasField("expand_param") or t.crop_size or t.crop_h or t.crop_w):
            raise ModelLibsError(
                f"{where}: mean_file with expand_param or a crop is not supported (use mean_value)"
            )
        if t.HasField("resize_param"):
            rp = t.resize_param
            if rp.height <= 0 or rp.width <= 0:
                raise ModelLibsError(f"{where}: resize_param needs a height and a width")
            if rp.resize_mode not in (RP.WARP, RP.FIT_SMALL_SIZE, RP.FIT_LARGE_SIZE_AND_PAD):
                raise ModelLibsError(f"{where}: unknown resize_mode {rp.resize_mode}")
            if rp.height_scale or rp.width_scale:
                raise ModelLibsError(f"{where}: resize_param height_scale/width_scale are not supported")
        if t.HasField("expand_param") and t.expand_param.max_expand_ratio < 1:
            raise ModelLibsError(f"{where}: expand_param.max_expand_ratio must be >= 1")
        for s in layer.annotated_data_param.batch_sampler:
            sp = s.sampler
            if not (0 < sp.min_scale <= sp.max_scale <= 1):
                raise ModelLibsError(f"{where}: batch_sampler needs 0 < min_scale <= max_scale <= 1")
            if not (0 < sp.min_aspect_ratio <= sp.max_aspect_ratio):
                raise ModelLibsError(f"{where}: batch_sampler needs 0 < min_aspect_ratio <= max_aspect_ratio")
        mean_file = read_mean_file(t.mean_file) if t.HasField("mean_file") else None
        samplers = SamplerTable.of(layer.annotated_data_param.batch_sampler)
        return TransformPlan(t, samplers, phase == "TRAIN", mean_file)

    # -- shapes

    def crop_hw(self) -> tuple[int, int]:
        t = self.transform
        if t.crop_size:
            return t.crop_size, t.crop_size
        return t.crop_h, t.crop_w

    def mean(self, channels: int) -> np.ndarray | None:
        """mean_value per channel (one value is used for every channel), or None."""
        mv = list(self.transform.mean_value)
        if not mv:
            return None
        if len(mv) == 1:
            mv = mv * channels
        if len(mv) != channels:
            raise ModelLibsError(f"mean_value: give 1 value or {channels} (one per channel), not {len(mv)}")
        return np.asarray(mv, F32)

    # -- the steps

    def apply(self, img: np.ndarray, boxes: Boxes, rng: np.random.Generator) -> tuple[np.ndarray, Boxes]:
        """One record through every step but the last: (the uint8 H x W x C image the blob is
        made of, by :meth:`to_blob`; its boxes)."""
        t = self.transform
        # Distortion comes first, as in Caffe, but runs on the pixels the crop keeps.
        dist = Distortion.draw(t.distort_param, img.shape[2], rng) if t.HasField("distort_param") else None
        canvas = Canvas.of(img, dist)
        emit = t.emit_constraint if t.HasField("emit_constraint") else None
        if t.HasField("expand_param"):
            canvas, boxes = self.expand(canvas, boxes, rng, emit)
        if self.samplers is not None:
            crops = self.samplers.generate(boxes.xyxy, rng)
            if len(crops):
                crop = crops[int(rng.integers(len(crops)))]
                img, window = canvas.crop(crop)
                boxes = transform_annotation(boxes, window, False, emit)
            else:
                img = canvas.whole()
        else:
            img = canvas.whole()
        return self.transform_image(img, boxes, rng, emit)

    def expand(
        self, canvas: Canvas, boxes: Boxes, rng: np.random.Generator, emit: caffe_pb2.EmitConstraint | None
    ) -> tuple[Canvas, Boxes]:
        """ExpandImage: with probability ``prob`` the image sits at a random place of a canvas
        ``ratio`` in [1, max_expand_ratio] times larger, filled with the mean values."""
        ep = self.transform.expand_param
        prob = rng.uniform(0.0, 1.0)
        if prob > ep.prob or abs(ep.max_expand_ratio - 1.0) < 1e-2:
            return canvas, boxes
        img = canvas.img
        ratio = F32(rng.uniform(1.0, ep.max_expand_ratio))
        h, w = img.shape[:2]
        height, width = int(F32(h) * ratio), int(F32(w) * ratio)
        h_off = math.floor(rng.uniform(0, height - h)) if height > h else 0
        w_off = math.floor(rng.uniform(0, width - w)) if width > w else 0
        window = np.array(
            [
                F32(-w_off) / F32(w),
                F32(-h_off) / F32(h),
                F32(width - w_off) / F32(w),
                F32(height - h_off) / F32(h),
            ],
            F32,
        )
        mean = self.mean(img.shape[2])
        fill = (
            np.zeros(img.shape[2], np.uint8)
            if mean is None
            else np.clip(np.rint(mean), 0, 255).astype(np.uint8)
        )
        expanded = Canvas(img, w_off, h_off, width, height, fill, canvas.distortion)
        return expanded, transform_annotation(boxes, window, False, emit)

    def transform_image(
        self, img: np.ndarray, boxes: Boxes, rng: np.random.Generator, emit: caffe_pb2.EmitConstraint | None
    ) -> tuple[np.ndarray, Boxes]:
        """DataTransformer::Transform with annotations, up to the pixels: resize (boxes follow the
        resize policy), crop_size crop (random in TRAIN, centred in TEST), mirror."""
        t = self.transform
        do_mirror = bool(t.mirror and rng.integers(2))
        h0, w0 = img.shape[:2]
        if t.HasField("resize_param"):
            img = apply_resize(img, t.resize_param, rng)
            boxes = boxes.moved(resize_boxes(boxes.xyxy, t.resize_param, w0, h0))
        ih, iw = img.shape[:2]
        ch, cw = self.crop_hw()
        h_off = w_off = 0
        if ch > 0 and cw > 0:
            if ih < ch or iw < cw:
                raise ModelLibsError(f"crop {ch}x{cw} is larger than the {ih}x{iw} image")
            if self.train:
                h_off, w_off = int(rng.integers(ih - ch + 1)), int(rng.integers(iw - cw + 1))
            else:
                h_off, w_off = (ih - ch) // 2, (iw - cw) // 2
            img = img[h_off : h_off + ch, w_off : w_off + cw]
        oh, ow = img.shape[:2]
        window = np.array(
            [
                F32(w_off) / F32(iw),
                F32(h_off) / F32(ih),
                F32(w_off + ow) / F32(iw),
                F32(h_off + oh) / F32(ih),
            ],
            F32,
        )
        boxes = transform_annotation(boxes, window, do_mirror, emit)
        if do_mirror:
            img = cv2.flip(img, 1)
            img = img if img.ndim == 3 else img[:, :, None]
        return img, boxes

    def to_blob(self, img: np.ndarray, out: np.ndarray) -> None:
        """Write the H x W x C uint8 image into ``out`` (C x H x W float32) as Caffe does:
        ``(pixel - mean) * scale`` in float32."""
        c, h, w = out.shape
        if img.shape != (h, w, c):
            raise ModelLibsError(
                f"an image of {img.shape[0]}x{img.shape[1]}x{img.shape[2]} does not fit the {c}x{h}x{w} blob"
            )
        scale = F32(self.transform.scale)
        if self.mean_file is not None:
            if self.mean_file.shape != out.shape:
                raise ModelLibsError(
                    f"mean_file is {'x'.join(map(str, self.mean_file.shape))} but the output is {c}x{h}x{w}"
                )
            # Caffe's cv::Mat path subtracts the mean at the output position (not mirrored).
            np.subtract(img.transpose(2, 0, 1), self.mean_file, out=out, dtype=F32)
        else:
            mean = self.mean(c)
            planes = cv2.split(img) if c > 1 else [img[:, :, 0]]
            for k in range(c):
                np.subtract(planes[k], F32(0) if mean is None else mean[k], out=out[k], dtype=F32)
        if scale != 1:
            out *= scale


# ---------------------------------------------------------------- images


def read_mean_file(path: str) -> np.ndarray:
    """A binary BlobProto mean (compute_image_mean's output) as float32 C x H x W."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ModelLibsError(f"{path}: cannot read the mean file ({exc.strerror})") from None
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(raw)
    except Exception:
        raise ModelLibsError(f"{path}: not a BlobProto mean file") from None
    if blob.HasField("shape"):
        dims = list(blob.shape.dim)
    else:
        dims = [blob.num, blob.channels, blob.height, blob.width]
    if len(dims) != 4 or dims[0] != 1 or len(blob.data) != int(np.prod(dims)):
        raise ModelLibsError(f"{path}: a mean file holds one 1 x C x H x W blob")
    return np.asarray(blob.data, F32).reshape(dims[1:])


def decode(datum: caffe_pb2.Datum, force_color: bool, force_gray: bool, where: str) -> np.ndarray:
    """The record's image as uint8 H x W x C, decoded as Caffe does (native channels unless
    force_color / force_gray)."""
    if datum.encoded:
        flag = (
            cv2.IMREAD_COLOR if force_color else cv2.IMREAD_GRAYSCALE if force_gray else cv2.IMREAD_UNCHANGED
        )
        img = cv2.imdecode(np.frombuffer(datum.data, np.uint8), flag)
        if img is None:
            raise ModelLibsError(f"{where}: the encoded image does not decode")
    else:
        c, h, w = datum.channels, datum.height, datum.width
        if c * h * w == 0 or len(datum.data) != c * h * w:
            raise ModelLibsError(f"{where}: raw datum of {len(datum.data)} bytes does not match {c}x{h}x{w}")
        img = np.frombuffer(datum.data, np.uint8).reshape(c, h, w).transpose(1, 2, 0)
    if img.dtype != np.uint8:
        raise ModelLibsError(f"{where}: image data type must be unsigned byte, not {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    return np.ascontiguousarray(img)


@dataclass(frozen=True)
class Canvas:
    """An image placed at (x, y) on a width x height canvas of ``fill`` (the expansion), with
    the distortion still to run on the image's pixels."""

    img: np.ndarray
    x: int
    y: int
    width: int
    height: int
    fill: np.ndarray
    distortion: Distortion | None = None

    @staticmethod
    def of(img: np.ndarray, distortion: Distortion | None = None) -> Canvas:
        return Canvas(img, 0, 0, img.shape[1], img.shape[0], np.zeros(img.shape[2], np.uint8), distortion)

    def region(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """The canvas pixels of [x0, x0 + w) x [y0, y0 + h), materialised."""
        ih, iw = self.img.shape[:2]
        run = self.distortion or (lambda im: im)
        if self.x == 0 and self.y == 0 and (iw, ih) == (self.width, self.height):
            return run(self.img[y0 : y0 + h, x0 : x0 + w])
        # the image's part inside the region, bordered with the fill
        ax0, ay0 = max(x0, self.x), max(y0, self.y)
        ax1, ay1 = min(x0 + w, self.x + iw), min(y0 + h, self.y + ih)
        if ax1 <= ax0 or ay1 <= ay0:
            return np.broadcast_to(self.fill, (h, w, len(self.fill))).copy()
        part = run(self.img[ay0 - self.y : ay1 - self.y, ax0 - self.x : ax1 - self.x])
        value = tuple(float(v) for v in self.fill[:4])
        out = cv2.copyMakeBorder(
            part, ay0 - y0, y0 + h - ay1, ax0 - x0, x0 + w - ax1, cv2.BORDER_CONSTANT, value=value
        )
        return out if out.ndim == 3 else out[:, :, None]

    def whole(self) -> np.ndarray:
        return self.region(0, 0, self.width, self.height)

    def crop(self, bbox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CropImage: the pixels of the clipped box (offsets and sizes truncated to whole pixels)
        and the clipped box itself, the window the boxes are projected into."""
        c = clip(bbox)
        x0, y0 = c[0] * F32(self.width), c[1] * F32(self.height)
        x1, y1 = c[2] * F32(self.width), c[3] * F32(self.height)
        w, h = int(x1 - x0), int(y1 - y0)
        if w <= 0 or h <= 0:
            raise ModelLibsError(f"a sampled crop of {w}x{h} pixels is empty")
        return self.region(int(x0), int(y0), w, h), c


def resized_size(rp: caffe_pb2.ResizeParameter, h: int, w: int) -> tuple[int, int]:
    """(height, width) of an h x w image under the resize policy (InferNewSize)."""
    height, width = int(rp.height), int(rp.width)
    if rp.resize_mode == RP.FIT_SMALL_SIZE:
        orig_aspect = F32(w) / F32(h)
        if orig_aspect < F32(width) / F32(height):
            height = int(F32(width) / orig_aspect)
        else:
            width = int(orig_aspect * F32(height))
    return height, width


def apply_resize(img: np.ndarray, rp: caffe_pb2.ResizeParameter, rng: np.random.Generator) -> np.ndarray:
    """ApplyResize: WARP, FIT_SMALL_SIZE (shorter side to the target) or FIT_LARGE_SIZE_AND_PAD
    (longer side to the target, centred, padded), with an interpolation drawn uniformly from
    ``interp_mode`` (bilinear when none)."""
    interp = cv2.INTER_LINEAR
    if len(rp.interp_mode):
        interp = INTERP[rp.interp_mode[int(rng.integers(len(rp.interp_mode)))]]
    new_h, new_w = int(rp.height), int(rp.width)
    mode = rp.resize_mode
    if mode == RP.WARP:
        out = cv2.resize(img, (new_w, new_h), interpolation=interp)
    elif mode == RP.FIT_SMALL_SIZE:
        h, w = resized_size(rp, img.shape[0], img.shape[1])
        out = cv2.resize(img, (w, h), interpolation=interp)
    else:
        orig_aspect = F32(img.shape[1]) / F32(img.shape[0])
        pad_val = list(rp.pad_value) or [0.0]
        if len(pad_val) == 1:
            pad_val = pad_val * 3
        value = tuple(float(v) for v in pad_val[:3]) + (0.0,)
        border = PAD[rp.pad_mode]
        if orig_aspect > F32(new_w) / F32(new_h):
            h = math.floor(F32(new_w) / orig_aspect)
            out = cv2.resize(img, (new_w, h), interpolation=interp)
            pad = math.floor((new_h - h) / 2.0)
            out = cv2.copyMakeBorder(out, pad, new_h - h - pad, 0, 0, border, value=value)
        else:
            w = math.floor(orig_aspect * F32(new_h))
            out = cv2.resize(img, (w, new_h), interpolation=interp)
            pad = math.floor((new_w - w) / 2.0)
            out = cv2.copyMakeBorder(out, 0, 0, pad, new_w - w - pad, border, value=value)
    return out if out.ndim == 3 else out[:, :, None]


# ---------------------------------------------------------------- distortion

_LEVELS = np.arange(256, dtype=F32)
_IDENTITY = np.arange(256, dtype=np.uint8)


def _lut(alpha: float, beta: float) -> np.ndarray:
    """convertTo(alpha, beta) on 8-bit values: round half to even, saturate."""
    return np.clip(np.rint(_LEVELS * F32(alpha) + F32(beta)), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Distortion:
    """A drawn ApplyDistort, kept as steps to run later: every step acts on each pixel alone,
    so running them on a crop of the image gives that crop of the distorted image (the
    pixels a crop drops, and an expansion's mean fill, are never distorted).

    Steps: ("lut", table) for brightness and contrast (adjacent ones composed: each rounds to
    8 bits, so the composition is exact), ("hsv", channel, table) for saturation (1) and hue
    (0), ("order", permutation) for the channel order."""

    steps: tuple[tuple, ...]

    @staticmethod
    def draw(p: caffe_pb2.DistortionParameter, channels: int, rng: np.random.Generator) -> Distortion:
        """Brightness, then contrast-saturation-hue or saturation-hue-contrast (even odds), then a
        random channel order; each with its own probability (the project's patch 0003)."""
        steps: list[tuple] = []

        def lut(table: np.ndarray) -> None:
            if steps and steps[-1][0] == "lut":
                table = table[steps.pop()[1]]  # the later step reads the earlier one's output
            steps.append(("lut", table))

        def brightness() -> None:
            if rng.uniform(0.0, 1.0) < p.brightness_prob:
                lut(_lut(1.0, _uniform(rng, -p.brightness_delta, p.brightness_delta)))

        def contrast() -> None:
            if rng.uniform(0.0, 1.0) < p.contrast_prob:
                lut(_lut(_uniform(rng, p.contrast_lower, p.contrast_upper), 0.0))

        def saturation() -> None:
            if rng.uniform(0.0, 1.0) < p.saturation_prob and channels == 3:
                alpha = _uniform(rng, p.saturation_lower, p.saturation_upper)
                if abs(alpha - 1.0) > 1e-3:
                    steps.append(("hsv", 1, _lut(alpha, 0.0)))

        def hue() -> None:
            if rng.uniform(0.0, 1.0) < p.hue_prob and channels == 3:
                # OpenCV's 8-bit hue units (0..179); the shift wraps around the circle
                delta = int(np.rint(_uniform(rng, -p.hue_delta, p.hue_delta)))
                if delta != 0:
                    steps.append(("hsv", 0, ((np.arange(256) + delta) % 180).astype(np.uint8)))

        order = rng.uniform(0.0, 1.0)
        brightness()
        for step in (contrast, saturation, hue) if order > 0.5 else (saturation, hue, contrast):
            step()
        if rng.uniform(0.0, 1.0) < p.random_order_prob and channels > 1:
            steps.append(("order", rng.permutation(channels)))
        return Distortion(tuple(steps))

    def __call__(self, img: np.ndarray) -> np.ndarray:
        for step in self.steps:
            if step[0] == "lut":
                img = cv2.LUT(img, step[1])
                img = img if img.ndim == 3 else img[:, :, None]
            elif step[0] == "hsv":
                tables = np.repeat(_IDENTITY[:, None], 3, axis=1)
                tables[:, step[1]] = step[2]
                hsv = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_BGR2HSV), tables.reshape(256, 1, 3))
                img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
            else:
                img = np.ascontiguousarray(img[:, :, step[1]])
        return img


# ---------------------------------------------------------------- batch samplers


_KINDS = (
    ("min_jaccard_overlap", "max_jaccard_overlap"),
    ("min_sample_coverage", "max_sample_coverage"),
    ("min_object_coverage", "max_object_coverage"),
)


@dataclass(frozen=True)
class SamplerTable:
    """The batch samplers as one row per trial, so that an image's trials are drawn and tested
    together (GenerateBatchSamples). Per row: the sampler's ranges, its constraint and the
    index of its sampler (rows of one sampler are consecutive, in trial order)."""

    scale: np.ndarray  # (t, 2) min, max
    aspect: np.ndarray  # (t, 2) min, max
    kind: np.ndarray  # (t,) 0 no constraint, 1 jaccard, 2 sample coverage, 3 object coverage
    bounds: np.ndarray  # (t, 2) float32 lower, upper (-inf / inf when unset)
    sampler: np.ndarray  # (t,) index
    max_sample: np.ndarray  # (samplers,) int, -1 when unset

    @staticmethod
    def of(samplers: Sequence[caffe_pb2.BatchSampler]) -> SamplerTable | None:
        rows: list[tuple] = []
        max_sample = []
        for i, bs in enumerate(samplers):
            max_sample.append(bs.max_sample if bs.HasField("max_sample") else -1)
            if not bs.use_original_image:
                continue
            c, sp = bs.sample_constraint, bs.sampler
            # Caffe: an object failing the first kind of constraint that is set is skipped,
            # and once an object passes it the later kinds no longer matter.
            kind, lo, hi = 0, -np.inf, np.inf
            for k, (lo_f, hi_f) in enumerate(_KINDS, start=1):
                if c.HasField(lo_f) or c.HasField(hi_f):
                    kind = k
                    lo = getattr(c, lo_f) if c.HasField(lo_f) else -np.inf
                    hi = getattr(c, hi_f) if c.HasField(hi_f) else np.inf
                    break
            row = (sp.min_scale, sp.max_scale, sp.min_aspect_ratio, sp.max_aspect_ratio, kind, lo, hi, i)
            rows += [row] * bs.max_trials
        if not samplers:
            return None
        a = np.asarray(rows, np.float64).reshape(-1, 8)
        return SamplerTable(
            a[:, 0:2],
            a[:, 2:4],
            a[:, 4].astype(np.int8),
            a[:, 5:7].astype(F32),
            a[:, 7].astype(np.int64),
            np.asarray(max_sample, np.int64),
        )

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """SampleBBox for every row: a scale, an aspect ratio within [scale^2, 1/scale^2] and a
        place inside the unit square."""
        u = rng.random((len(self.kind), 4))
        scale = self.scale[:, 0] + (self.scale[:, 1] - self.scale[:, 0]) * u[:, 0]
        lo = np.maximum(self.aspect[:, 0], scale**2)
        hi = np.minimum(self.aspect[:, 1], 1 / scale**2)
        ar = np.sqrt(lo + (hi - lo) * u[:, 1])
        w, h = scale * ar, scale / ar
        x0, y0 = (1 - w) * u[:, 2], (1 - h) * u[:, 3]
        return np.stack([x0, y0, x0 + w, y0 + h], axis=1).astype(F32)

    def satisfied(self, boxes: np.ndarray, objects: np.ndarray) -> np.ndarray:
        """SatisfySampleConstraint of every row's box against the objects."""
        ok = self.kind == 0
        if len(objects) == 0:
            return ok
        measures = {
            1: jaccard,
            2: coverage,  # the share of the sample on an object
            3: lambda s, o: coverage(o, s),  # the share of an object in the sample
        }
        for kind, measure in measures.items():
            rows = self.kind == kind
            if rows.any():
                v = measure(boxes[rows][:, None, :], objects[None, :, :])
                lo, hi = self.bounds[rows, :1], self.bounds[rows, 1:]
                ok[rows] = ((v >= lo) & (v <= hi)).any(axis=1)
        return ok

    def generate(self, objects: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """GenerateBatchSamples: per sampler, of its ``max_trials`` boxes the first
        ``max_sample`` that satisfy its constraint (all of them when unset)."""
        if len(self.kind) == 0:
            return np.zeros((0, 4), F32)
        boxes = self.draw(rng)
        ok = self.satisfied(boxes, objects)
        limit = self.max_sample[self.sampler]
        # rank of each satisfying trial within its sampler (rows of a sampler are consecutive)
        count = np.cumsum(ok)
        first = np.searchsorted(self.sampler, self.sampler, side="left")
        before = np.where(first > 0, count[first - 1], 0)
        ok &= (limit < 0) | (count - before <= limit)
        return boxes[ok]


# ---------------------------------------------------------------- the label blob


def label_blob(per_item: Sequence[Boxes]) -> np.ndarray:
    """AnnotatedData's label top: (1, 1, G, 8) rows [item_id, group_label, instance_id, xmin,
    ymin, xmax, ymax, difficult]; one row of -1 when the batch has no box."""
    rows = [
        np.column_stack(
            [
                np.full(len(b), i, F32),
                b.label.astype(F32),
                b.instance.astype(F32),
                b.xyxy,
                b.difficult.astype(F32),
            ]
        )
        for i, b in enumerate(per_item)
        if len(b)
    ]
    if not rows:
        return np.full((1, 1, 1, 8), -1, F32)
    return np.concatenate(rows).astype(F32)[None, None]
