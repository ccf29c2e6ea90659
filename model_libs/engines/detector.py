"""Images in, labelled boxes in pixels out: the inference API of the demo and of scoring.

::

    from model_libs.engines.detector import Detector
    det = Detector("deploy.prototxt", "DSOD300.caffemodel", labelmap="labelmap_voc.prototxt")
    print(det.engine_name, det.engine_reason)
    for d in det.detect(["a.jpg", "b.jpg"])[0]:          # one list per image
        print(d.label, d.name, d.score, d.box)          # box = (xmin, ymin, xmax, ymax) pixels

Preprocessing is the DSOD test transform the deploy net was trained with: a BGR uint8 image
(grayscale is replicated to three channels, alpha dropped) is warped to the net input with
``cv2.resize(..., INTER_LINEAR)`` (Caffe's WARP resize, LINEAR interpolation, on the 8-bit
image), converted to float32, the per-channel mean ``[104, 117, 123]`` subtracted and the
result multiplied by ``scale`` (1), then laid out as NCHW. ``mean``/``scale``/``input_size``
override this. Images are run ``batch_size`` at a time (default 1: on CPU, OpenCV DNN
gets no per-image gain from batching DSOD300 -- batch 8 measured slower per image than
batch 1 in ``bench/bench_deploy.py``, the dense blocks' working set outgrowing the caches).

Engine choice (``engine="auto"``) is a documented rule, not a per-call measurement: OpenCV
when it is importable, else Caffe. On CPU, OpenCV DNN ran the DSOD300 deploy net 1.9x faster
than a CPU Caffe build on 2 cores (the measurement in issue 6); ``bench/bench_deploy.py``
re-measures both side by side where Caffe is built. ``engine_reason`` says why an engine
was picked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..datasets.labelmap import label_to_display_name, load_labelmap
from ..errors import ModelLibsError
from ..proto import caffe_pb2
from .caffemodel import PathLike

DSOD_MEAN_BGR = (104.0, 117.0, 123.0)
ENGINES = ("auto", "opencv", "caffe", "torch")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Detection:
    """One detected object; ``box`` is (xmin, ymin, xmax, ymax) in pixels of the original
    image, clipped to it."""

    label: int
    name: str
    score: float
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["box"] = list(self.box)
        return d


def read_image(path: PathLike):
    """A BGR uint8 image from a file, or a :class:`ModelLibsError` (see :mod:`model_libs.inputs`:
    read as bytes, so any file name works)."""
    from ..inputs import read_image as _read

    return _read(path)


def num_classes(deploy: caffe_pb2.NetParameter) -> int | None:
    """``num_classes`` of the net's DetectionOutput (background included), if it has one."""
    for layer in deploy.layer:
        if layer.type == "DetectionOutput":
            return int(layer.detection_output_param.num_classes)
    return None


def list_images(paths: Iterable[PathLike]) -> list[Path]:
    """Image files named in ``paths``; folders are expanded (sorted, non-recursive)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ModelLibsError(f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise ModelLibsError(f"{p}: no such image or folder")
    return out


def choose_engine(engine: str = "auto") -> tuple[str, str]:
    """(engine name, reason) for ``engine`` in ``auto``/``opencv``/``caffe``/``torch``
    (``auto`` never picks ``torch``: it is asked for by name)."""
    from .caffe_engine import caffe_available
    from .opencv_engine import opencv_available

    if engine not in ENGINES:
        raise ModelLibsError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    if engine != "auto":
        return engine, "requested"
    if opencv_available():
        also = "Caffe is also available but " if caffe_available() else ""
        return "opencv", (
            f"auto: {also}OpenCV DNN is faster than CPU Caffe "
            "(1.9x on DSOD300, 2 cores; see bench/bench_deploy.py)"
        )
    if caffe_available():
        return "caffe", "auto: OpenCV (4.x with the Caffe importer) is not available"
    raise ModelLibsError("no inference engine: install opencv-python-headless<5 or build Caffe")


def make_engine(name: str, deploy, weights, verify: bool = True):
    """An engine instance by name (``opencv``, ``caffe`` or ``torch``)."""
    if name == "opencv":
        from .opencv_engine import OpenCVEngine

        return OpenCVEngine(deploy, weights, verify=verify)
    if name == "caffe":
        from .caffe_engine import CaffeEngine

        return CaffeEngine(deploy, weights, verify=verify)
    if name == "torch":
        from .torch_engine import TorchEngine

        return TorchEngine(deploy, weights, verify=verify)
    raise ModelLibsError(f"unknown engine {name!r}")


def to_bgr(image: np.ndarray) -> np.ndarray:
    """A 3-channel uint8 BGR view of ``image`` (HxW gray or HxWx1/3/4)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ModelLibsError(f"an image must be HxW or HxWx1/3/4, got shape {list(a.shape)}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def preprocess(
    images: Sequence[np.ndarray],
    size: tuple[int, int],
    mean: Sequence[float] = DSOD_MEAN_BGR,
    scale: float = 1.0,
) -> np.ndarray:
    """NCHW float32 batch: warp each BGR image to ``size`` = (height, width) with
    INTER_LINEAR, subtract ``mean`` (BGR), multiply by ``scale``."""
    import cv2

    h, w = size
    out = np.empty((len(images), 3, h, w), dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
    for i, img in enumerate(images):
        resized = cv2.resize(to_bgr(img), (w, h), interpolation=cv2.INTER_LINEAR)
        out[i] = ((resized.astype(np.float32) - m) * np.float32(scale)).transpose(2, 0, 1)
    return out


def to_detections(
    rows: np.ndarray,
    n_images: int,
    sizes: Sequence[tuple[int, int]],
    names: dict[int, str] | None,
    threshold: float = 0.0,
) -> list[list[Detection]]:
    """Split DetectionOutput rows [image_id, label, score, xmin, ymin, xmax, ymax]
    (normalised) into per-image :class:`Detection` lists in pixels, sorted by score."""
    per: list[list[Detection]] = [[] for _ in range(n_images)]
    for r in np.asarray(rows, dtype=np.float64).reshape(-1, 7):
        image_id, label, score = int(r[0]), int(r[1]), float(r[2])
        if image_id < 0 or image_id >= n_images or label < 0 or score < threshold:
            continue  # Caffe's "no detection" row is all -1
        h, w = sizes[image_id]
        box = (
            float(np.clip(r[3] * w, 0, w)),
            float(np.clip(r[4] * h, 0, h)),
            float(np.clip(r[5] * w, 0, w)),
            float(np.clip(r[6] * h, 0, h)),
        )
        name = (names or {}).get(label, str(label))
        per[image_id].append(Detection(label, name, score, box))
    for dets in per:
        dets.sort(key=lambda d: -d.score)
    return per


class Detector:
    """A DSOD deploy net with weights, ready to detect objects in images.

    ``engine``: ``auto`` (see module docs), ``opencv``, ``caffe`` or ``torch``; the chosen one is
    ``engine_name`` and why is ``engine_reason``. ``labelmap``: a LabelMap prototxt path or a
    {label: name} dict. ``threshold``: minimum score kept (DetectionOutput's own
    confidence_threshold applies first). ``verify``: check the caffemodel against the deploy
    net before loading (clear error listing mismatches).
    """

    def __init__(
        self,
        deploy: caffe_pb2.NetParameter | PathLike,
        weights: caffe_pb2.NetParameter | PathLike,
        engine: str = "auto",
        labelmap: PathLike | dict[int, str] | None = None,
        mean: Sequence[float] = DSOD_MEAN_BGR,
        scale: float = 1.0,
        input_size: tuple[int, int] | None = None,
        batch_size: int = 1,
        threshold: float = 0.0,
        verify: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ModelLibsError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= threshold <= 1.0:  # also refuses NaN
            raise ModelLibsError(f"threshold must be from 0 to 1, got {threshold}")
        if not all(np.isfinite(v) for v in (*mean, scale)) or scale <= 0:
            raise ModelLibsError(f"mean {list(mean)} and scale {scale} must be finite, scale above 0")
        if len(mean) != 3:
            raise ModelLibsError(f"mean must have 3 values (B, G, R), got {list(mean)}")
        self.engine_name, self.engine_reason = choose_engine(engine)
        self.engine = make_engine(self.engine_name, deploy, weights, verify=verify)
        shape = self.engine.input_shape
        self.input_size = tuple(input_size) if input_size else (shape[2], shape[3])
        if tuple(self.input_size) != (shape[2], shape[3]):
            raise ModelLibsError(
                f"input_size {self.input_size} differs from the deploy net's "
                f"{shape[2]}x{shape[3]}; PriorBox geometry is fixed by the net"
            )
        # captions use each item's display name (its name where none is set)
        if isinstance(labelmap, dict):
            self.names: dict[int, str] | None = dict(labelmap)
        elif labelmap is not None:
            from ..datasets.labelmap import check_labelmap_fits

            lm = load_labelmap(labelmap)
            n = num_classes(self.engine.deploy)
            if n is not None:
                check_labelmap_fits(lm, n, os.fspath(labelmap), "the deploy net")
            self.names = label_to_display_name(lm)
        else:
            self.names = None
        self.mean = tuple(float(x) for x in mean)
        self.scale = float(scale)
        self.batch_size = batch_size
        self.threshold = threshold

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The NCHW float32 batch the net sees for ``images`` (BGR uint8)."""
        return preprocess(images, self.input_size, self.mean, self.scale)

    def detect(
        self, images: Sequence[np.ndarray | PathLike], threshold: float | None = None
    ) -> list[list[Detection]]:
        """Detections for each image (arrays in BGR, or file paths), in input order."""
        thr = self.threshold if threshold is None else threshold
        results: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [
                read_image(x) if isinstance(x, str | os.PathLike) else to_bgr(x)
                for x in images[start : start + self.batch_size]
            ]
            rows = self.engine.forward(self.preprocess(chunk))["detection_out"]
            results += to_detections(rows, len(chunk), [c.shape[:2] for c in chunk], self.names, thr)
        return results

    def detect_one(self, image: np.ndarray | PathLike, threshold: float | None = None) -> list[Detection]:
        """Detections for a single image."""
        return self.detect([image], threshold)[0]
