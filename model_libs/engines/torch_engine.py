"""Run a deploy net with the PyTorch engine (:mod:`model_libs.pytorch`), CPU or CUDA.

PyTorch is imported only when this engine is asked for; without it, :func:`import_torch`
raises one :class:`ModelLibsError` saying how to install it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ModelLibsError
from ..proto import caffe_pb2
from .base import DEFAULT_OUTPUTS, Blobs, check_batch, deploy_for_engines, input_name_and_shape, load_pair
from .caffemodel import PathLike, parse_caffemodel


def import_torch():
    """The ``torch`` module, or a :class:`ModelLibsError` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise ModelLibsError(
            f"the torch engine needs PyTorch, which is not installed ({exc}); "
            "pip install 'model_libs[torch]' (torch==2.13.0)"
        ) from None
    return torch


def torch_available() -> bool:
    """True when PyTorch can be imported."""
    try:
        import_torch()
    except ModelLibsError:
        return False
    return True


class TorchEngine:
    """A deploy net loaded into a :class:`~model_libs.pytorch.net.CaffeNet` (TEST phase).

    ``device``: ``cpu``, ``cuda``, ``cuda:1``... (default: CUDA when available, else CPU).
    ``channels_last``: run convolutions in NHWC memory order (faster on CPU).
    """

    name = "torch"

    def __init__(
        self,
        deploy: caffe_pb2.NetParameter | PathLike,
        weights: caffe_pb2.NetParameter | PathLike,
        verify: bool = True,
        device: str | None = None,
        channels_last: bool = True,
    ) -> None:
        torch = import_torch()
        from ..pytorch.net import CaffeNet
        from ..pytorch.weights import load_caffemodel

        self.deploy, data, self.weights_name = load_pair(deploy, weights, verify)
        self.input_blob, self._input_shape = input_name_and_shape(self.deploy)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = CaffeNet(deploy_for_engines(self.deploy), "TEST")
        load_caffemodel(self.net, parse_caffemodel(data, self.weights_name))
        self.net.to(self.device)
        if channels_last:
            self.net.set_channels_last()
        self.net.eval()
        self.version = torch.__version__

    @property
    def input_shape(self) -> list[int]:
        return list(self._input_shape)

    def forward(self, batch: np.ndarray, outputs: Sequence[str] = DEFAULT_OUTPUTS) -> Blobs:
        """Run ``batch`` and return the blobs named in ``outputs`` (Caffe blob names)."""
        torch = import_torch()
        b = check_batch(batch, self._input_shape)
        for o in outputs:
            if o not in self.net.blob_shapes:
                raise ModelLibsError(f"net {self.deploy.name!r} has no blob {o!r}")
        with torch.inference_mode():
            x = torch.from_numpy(b).to(self.device)
            out = self.net({self.input_blob: x}, list(outputs))
            return {o: out[o].float().cpu().numpy().copy() for o in outputs}
