"""Run a deploy net with the project's pycaffe (``model_libs.caffe_env.import_caffe``).

Caffe is imported lazily: through ``model_libs.caffe_env.import_caffe`` when that module
exists, else a plain ``import caffe``; without either, :func:`import_caffe` raises a
:class:`ModelLibsError` and :func:`caffe_available` is False.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ModelLibsError
from ..proto import caffe_pb2
from .base import DEFAULT_OUTPUTS, Blobs, check_batch, deploy_for_engines, input_name_and_shape, load_pair
from .caffemodel import PathLike


def import_caffe():
    """The pycaffe module, or a :class:`ModelLibsError` saying it is not built."""
    try:
        env = importlib.import_module("model_libs.caffe_env")
    except ImportError:
        env = None
    if env is not None and hasattr(env, "import_caffe"):
        return env.import_caffe()
    try:
        import caffe
    except ImportError as exc:
        raise ModelLibsError(f"Caffe (pycaffe) is not available: {exc}") from None
    return caffe


def caffe_available() -> bool:
    """True when pycaffe can be imported."""
    try:
        import_caffe()
    except (ModelLibsError, ImportError, OSError):
        return False
    return True


class CaffeEngine:
    """A deploy net loaded into pycaffe in CPU mode (TEST phase)."""

    name = "caffe"

    def __init__(
        self,
        deploy: caffe_pb2.NetParameter | PathLike,
        weights: caffe_pb2.NetParameter | PathLike,
        verify: bool = True,
    ) -> None:
        caffe = import_caffe()
        self.deploy, data, self.weights_name = load_pair(deploy, weights, verify)
        self.input_blob, self._input_shape = input_name_and_shape(self.deploy)
        caffe.set_mode_cpu()
        # pycaffe loads from files; write both (the deploy without save_output_param).
        with tempfile.TemporaryDirectory(prefix="model_libs_caffe_") as tmp:
            proto = Path(tmp, "deploy.prototxt")
            proto.write_text(str(deploy_for_engines(self.deploy)))
            model = Path(tmp, "weights.caffemodel")
            model.write_bytes(data)
            self.net = caffe.Net(os.fspath(proto), os.fspath(model), caffe.TEST)
        self._batch = None

    @property
    def input_shape(self) -> list[int]:
        return list(self._input_shape)

    def forward(self, batch: np.ndarray, outputs: Sequence[str] = DEFAULT_OUTPUTS) -> Blobs:
        """Run ``batch`` and return the blobs named in ``outputs``."""
        b = check_batch(batch, self._input_shape)
        for o in outputs:
            if o not in self.net.blobs:
                raise ModelLibsError(f"net {self.deploy.name!r} has no blob {o!r}")
        data = self.net.blobs[self.input_blob]
        if tuple(data.data.shape) != b.shape:
            data.reshape(*b.shape)
            self.net.reshape()
        data.data[...] = b
        self.net.forward()
        return {o: np.array(self.net.blobs[o].data, copy=True) for o in outputs}
