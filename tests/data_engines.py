"""The two engines of the AnnotatedData layer behind one interface, for tests that hold both to
the same properties: the project's Caffe (pycaffe, an AnnotatedData-only net) and the PyTorch
data path (``model_libs.pytorch.data``).

A test module makes a fixture over both with ``ENGINES`` and :func:`make_engine`; the
:class:`Engine` it gives has ``blobs(net_path, batches)``, the raw ``(data, label)`` blobs of
the first ``batches`` batches, and ``draws``, the images (H x W x C) with each image's label
rows. The Caffe variant is marked ``caffe``, the PyTorch one ``torch``; each skips when its
engine is missing (and the suite's CI guard turns that skip into a failure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_libs.netspec import assign_proto, to_prototxt
from model_libs.proto import caffe_pb2
from model_libs.summary import load_net

SEED = 1234


def data_net(
    tmp: Path,
    lmdb: Path,
    transform: dict,
    sampler: list[dict] | None = None,
    batch: int = 64,
    phase: str = "TRAIN",
    name: str = "data.prototxt",
) -> Path:
    """A net with one AnnotatedData layer reading ``lmdb`` in ``phase``."""
    net = caffe_pb2.NetParameter(name="data_only")
    layer = net.layer.add(name="data", type="AnnotatedData", top=["data", "label"])
    layer.include.add(phase=caffe_pb2.Phase.Value(phase))
    layer.data_param.source = str(lmdb)
    layer.data_param.batch_size = batch
    layer.data_param.backend = caffe_pb2.DataParameter.LMDB
    assign_proto(layer, "transform_param", transform)
    assign_proto(layer.annotated_data_param, "batch_sampler", sampler or [])
    path = tmp / name
    path.write_text(to_prototxt(net) + "\n")
    return path


def data_layer(path: Path) -> caffe_pb2.LayerParameter:
    """The AnnotatedData layer of a net prototxt."""
    return next(layer for layer in load_net(path).layer if layer.type == "AnnotatedData")


def phase_of(path: Path) -> str:
    return caffe_pb2.Phase.Name(data_layer(path).include[0].phase)


class Engine:
    name = ""

    def blobs(self, path: Path, batches: int) -> list[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def draws(self, path: Path, batches: int = 8) -> tuple[np.ndarray, list[np.ndarray]]:
        """(images N x H x W x C float, per image an array of its label rows)."""
        imgs, labels = [], []
        for data, label in self.blobs(path, batches):
            lab = label.reshape(-1, 8)
            for i in range(data.shape[0]):
                imgs.append(data[i].transpose(1, 2, 0))
                labels.append(lab[lab[:, 0] == i])
        return np.stack(imgs), labels


class CaffeEngine(Engine):
    name = "caffe"

    def __init__(self, caffe) -> None:
        self.caffe = caffe  # pycaffe (the conftest fixture)
        self.caffe.set_random_seed(SEED)

    def blobs(self, path: Path, batches: int) -> list[tuple[np.ndarray, np.ndarray]]:
        phase = getattr(self.caffe, phase_of(path))
        net = self.caffe.Net(str(path), phase)
        out = []
        for _ in range(batches):
            net.forward()
            out.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
        return out


class TorchEngine(Engine):
    name = "torch"

    def __init__(self) -> None:
        pytest.importorskip("torch")
        from model_libs.pytorch.data import AnnotatedDataset

        self.dataset = AnnotatedDataset

    def blobs(self, path: Path, batches: int) -> list[tuple[np.ndarray, np.ndarray]]:
        ds = self.dataset(data_layer(path), phase_of(path), seed=SEED)
        return [tuple(t.numpy() for t in ds[b]) for b in range(batches)]


ENGINES = [
    pytest.param("caffe", marks=pytest.mark.caffe, id="caffe"),
    pytest.param("torch", marks=pytest.mark.torch, id="torch"),
]


def make_engine(request: pytest.FixtureRequest) -> Engine:
    """The engine of a fixture parametrised with ``ENGINES``."""
    if request.param == "caffe":
        return CaffeEngine(request.getfixturevalue("caffe"))
    return TorchEngine()
