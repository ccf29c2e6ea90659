"""Run a Caffe deploy net with OpenCV's DNN module (``cv2.dnn``, OpenCV 4.x).

OpenCV 4 reads Caffe prototxt + caffemodel including the SSD layers (PriorBox, Permute,
Normalize, DetectionOutput); OpenCV 5 removed the Caffe importer. The caffemodel is checked
against the deploy net first, so a mismatch is a clear :class:`ModelLibsError` rather than
an assertion deep inside OpenCV.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ModelLibsError
from ..proto import caffe_pb2
from .base import DEFAULT_OUTPUTS, Blobs, check_batch, deploy_for_engines, input_name_and_shape, load_pair
from .caffemodel import PathLike


def import_cv2():
    """The ``cv2`` module with a usable Caffe importer, or a :class:`ModelLibsError`."""
    try:
        import cv2
    except ImportError as exc:
        raise ModelLibsError(
            f"OpenCV is not installed ({exc}); pip install 'opencv-python-headless<5'"
        ) from None
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise ModelLibsError(
            f"OpenCV {cv2.__version__} has no Caffe importer (removed in OpenCV 5); "
            "install opencv-python-headless 4.x"
        )
    return cv2


def opencv_available() -> bool:
    """True when OpenCV with the Caffe importer can be imported."""
    try:
        import_cv2()
    except ModelLibsError:
        return False
    return True


def caffe_prior_sizes(deploy: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """``deploy`` with PriorBox sizes truncated to whole pixels, in place.

    SSD Caffe's PriorBox reads each min/max size into an ``int`` before making boxes (so
    GRP_DSOD320's 118.4 px prior is 118 px, DSOD512's 20.48 is 20); OpenCV keeps the
    fraction. Truncating here makes OpenCV reproduce the boxes the models were trained with.
    """
    for layer in deploy.layer:
        if layer.type == "PriorBox":
            p = layer.prior_box_param
            p.min_size[:] = [float(int(v)) for v in p.min_size]
            p.max_size[:] = [float(int(v)) for v in p.max_size]
    return deploy


def _producers(deploy: caffe_pb2.NetParameter) -> dict[str, str]:
    """blob name -> name of the last layer writing it (OpenCV addresses outputs by layer)."""
    out: dict[str, str] = {}
    for layer in deploy.layer:
        for top in layer.top:
            out[top] = layer.name
    return out


class OpenCVEngine:
    """A deploy net loaded into ``cv2.dnn`` (OpenCV backend, CPU target)."""

    name = "opencv"

    def __init__(
        self,
        deploy: caffe_pb2.NetParameter | PathLike,
        weights: caffe_pb2.NetParameter | PathLike,
        verify: bool = True,
        threads: int | None = None,
    ) -> None:
        cv2 = import_cv2()
        self.deploy, data, self.weights_name = load_pair(deploy, weights, verify)
        self.input_blob, self._input_shape = input_name_and_shape(self.deploy)
        self._producers = _producers(self.deploy)
        proto = str(caffe_prior_sizes(deploy_for_engines(self.deploy))).encode()
        if threads is not None:
            cv2.setNumThreads(threads)
        try:
            self.net = cv2.dnn.readNetFromCaffe(bufferProto=bytearray(proto), bufferModel=bytearray(data))
        except cv2.error as exc:
            raise ModelLibsError(
                f"{self.weights_name}: OpenCV could not load the net: {str(exc).strip().splitlines()[-1]}"
            ) from None
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.version = cv2.__version__

    @property
    def input_shape(self) -> list[int]:
        return list(self._input_shape)

    def forward(self, batch: np.ndarray, outputs: Sequence[str] = DEFAULT_OUTPUTS) -> Blobs:
        """Run ``batch`` and return the blobs named in ``outputs`` (Caffe blob names)."""
        cv2 = import_cv2()
        b = check_batch(batch, self._input_shape)
        layers = []
        for o in outputs:
            if o not in self._producers:
                raise ModelLibsError(f"net {self.deploy.name!r} has no blob {o!r}")
            layers.append(self._producers[o])
        self.net.setInput(b, self.input_blob)
        try:
            result = self.net.forward(layers)
        except cv2.error as exc:
            msg = str(exc).strip().splitlines()[-1]
            raise ModelLibsError(f"OpenCV failed to run the net: {msg}") from None
        return {o: np.array(r, copy=True) for o, r in zip(outputs, result)}
