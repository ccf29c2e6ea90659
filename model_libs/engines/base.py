"""What every inference engine provides, and helpers the engines share."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..errors import ModelLibsError
from ..proto import caffe_pb2
from ..summary import summarize
from .caffemodel import PathLike, caffemodel_bytes, load_deploy, load_weights, require_match

DEFAULT_OUTPUTS = ("detection_out",)
Blobs = dict[str, np.ndarray]


class Engine(Protocol):
    """A loaded deploy net that maps a preprocessed NCHW float32 batch to named blobs."""

    name: str
    deploy: caffe_pb2.NetParameter

    @property
    def input_shape(self) -> list[int]:
        """The deploy net's declared input shape (N, C, H, W)."""
        ...

    def forward(self, batch: np.ndarray, outputs: Sequence[str] = DEFAULT_OUTPUTS) -> Blobs:
        """Run ``batch`` (N, C, H, W float32) and return the named blobs (copies)."""
        ...


def input_name_and_shape(deploy: caffe_pb2.NetParameter) -> tuple[str, list[int]]:
    """The single input blob of a deploy net and its shape."""
    if len(deploy.input):
        name = deploy.input[0]
    else:
        inputs = [layer for layer in deploy.layer if layer.type == "Input"]
        if not inputs:
            raise ModelLibsError(f"net {deploy.name!r}: no input blob; is this a deploy net?")
        name = inputs[0].top[0]
    return name, summarize(deploy).blob_shapes[name]


def deploy_for_engines(deploy: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of ``deploy`` without DetectionOutput's ``save_output_param``: at inference
    nothing is saved, and Caffe would otherwise create the output folder and insist on
    reading the name-size file named there."""
    net = caffe_pb2.NetParameter()
    net.CopyFrom(deploy)
    for layer in net.layer:
        if layer.type == "DetectionOutput":
            layer.detection_output_param.ClearField("save_output_param")
    return net


def load_pair(
    deploy: caffe_pb2.NetParameter | PathLike, weights: caffe_pb2.NetParameter | PathLike, verify: bool = True
) -> tuple[caffe_pb2.NetParameter, bytes, str]:
    """(deploy net, caffemodel bytes, weights name), after checking they match."""
    deploy_p = load_deploy(deploy)
    if isinstance(weights, caffe_pb2.NetParameter):
        model = weights
        name = "caffemodel"
        data = caffemodel_bytes(model)
    else:
        name = os.fspath(weights)
        model = load_weights(weights)
        with open(weights, "rb") as f:
            data = f.read()
    if verify:
        require_match(deploy_p, model, name)
    return deploy_p, data, name


def check_batch(batch: np.ndarray, shape: list[int]) -> np.ndarray:
    """``batch`` as contiguous float32 NCHW with the net's C, H, W."""
    b = np.ascontiguousarray(batch, dtype=np.float32)
    if b.ndim != 4 or list(b.shape[1:]) != list(shape[1:]):
        raise ModelLibsError(
            f"input batch has shape {list(b.shape)}; the net expects Nx" + "x".join(map(str, shape[1:]))
        )
    return b
