"""The AnnotatedData layer for PyTorch: an SSD LMDB read as the project's Caffe reads it.

:class:`AnnotatedDataset` is a map-style dataset whose item ``b`` is batch ``b`` of one DDP
rank, already in Caffe's blob formats: ``data`` (N, C, H, W) float32 and ``label``
(1, 1, G, 8) (see :func:`model_libs.pytorch.transform.label_blob`). :func:`make_loader` wraps
it in a ``DataLoader`` whose workers each build whole batches.

How records are read, as Caffe's ``DataReader`` does:

- in key order, without shuffling (SSD's converter shuffles when the LMDB is made), looping
  back to the first record after the last, batches running across the wrap;
- with ``world_size`` ranks, record ``k`` goes to rank ``k % world_size`` (Caffe hands records
  to its solvers in turn), so the ranks' shares are disjoint and together cover the LMDB.

``annotated_data_param.label_map_file`` is not read: Caffe's layer keeps it and never uses
it; labels are the records' group labels.

Randomness: batch ``b`` of rank ``r`` draws from a generator seeded with ``(seed, r, b)``, so
the same seed gives the same batches whatever the number of workers, and no two batches
(across workers, ranks or passes over the data) share their draws.

Speed: each worker uses one OpenCV and one torch thread; decoded images of the rank's share
are kept in memory up to ``cache_bytes`` (filled before the workers fork, so they share it).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import lmdb
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..datasets.annotated_datum import parse_annotated_datum
from ..datasets.lmdb_io import check_lmdb_pages, shared_env
from ..errors import ModelLibsError
from ..proto import caffe_pb2
from ..summary import included
from .transform import Boxes, TransformPlan, boxes_of, decode, label_blob

DEFAULT_CACHE_BYTES = 512 << 20
Record = tuple[np.ndarray, Boxes, int]  # image, boxes, datum label


class AnnotatedDataset(Dataset):
    """Batches of an AnnotatedData layer (``layer``: its ``LayerParameter``) for one rank.

    ``phase`` ("TRAIN" or "TEST") decides the ``crop_size`` offsets as in Caffe (random when
    training, centred when testing); every other step is as configured in either phase.
    ``source`` replaces ``data_param.source`` (the LMDB folder). A missing or unreadable LMDB,
    an empty share, an unsupported parameter or a corrupt record raises ModelLibsError naming
    the LMDB.
    """

    def __init__(
        self,
        layer: caffe_pb2.LayerParameter,
        phase: str = "TRAIN",
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        source: str | os.PathLike | None = None,
    ) -> None:
        dp = layer.data_param
        self.source = Path(source if source is not None else dp.source)
        if layer.type != "AnnotatedData":
            raise ModelLibsError(
                f"layer {layer.name!r}: an AnnotatedData layer is needed, not {layer.type!r}"
            )
        if dp.backend != caffe_pb2.DataParameter.LMDB:
            raise ModelLibsError(
                f"{self.source}: data_param.backend must be LMDB (the only backend read here)"
            )
        if dp.batch_size <= 0:
            raise ModelLibsError(f"layer {layer.name!r}: data_param.batch_size must be positive")
        if not (0 <= rank < world_size):
            raise ModelLibsError(f"rank {rank} is not in [0, world_size={world_size})")
        if seed < 0:
            raise ModelLibsError(f"seed must be non-negative, not {seed}")
        self.plan = TransformPlan.from_layer(layer, phase)
        self.batch_size = int(dp.batch_size)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.force = (layer.transform_param.force_color, layer.transform_param.force_gray)
        keys = self._keys()
        if not keys:
            raise ModelLibsError(f"{self.source}: the LMDB holds no records")
        self.keys = keys[rank::world_size]
        if not self.keys:
            raise ModelLibsError(
                f"{self.source}: {len(keys)} records leave none to rank {rank} of {world_size}"
            )
        self.num_records = len(keys)
        # Caffe decides from the first record (and the layer) whether labels are boxes.
        first = self._parse(self._get(self.keys[0]), self.keys[0])
        ap = layer.annotated_data_param
        self.has_anno_type = first.HasField("type") or ap.HasField("anno_type")
        anno_type = first.type if first.HasField("type") else ap.anno_type
        if self.has_anno_type and anno_type != caffe_pb2.AnnotatedDatum.BBOX:
            raise ModelLibsError(f"{self.source}: unknown annotation type {anno_type}")
        self.cache: dict[int, Record] = {}
        self._fill_cache(cache_bytes)

    # -- reading

    def _keys(self) -> list[bytes]:
        # every page and record inside the file, checked with plain reads before the memory
        # map is read (a damaged LMDB would otherwise end the process with SIGBUS)
        check_lmdb_pages(self.source)
        try:
            with shared_env(self.source).begin() as txn:
                return list(txn.cursor().iternext(keys=True, values=False))
        except lmdb.Error as exc:
            raise ModelLibsError(f"{self.source}: cannot read the LMDB ({exc})") from None

    def _get(self, key: bytes) -> bytes:
        # the process's shared environment: workers forked from here open their own
        try:
            with shared_env(self.source).begin() as txn:
                raw = txn.get(key)
        except lmdb.Error as exc:
            raise ModelLibsError(
                f"{self.source}: cannot read record {key.decode(errors='replace')} ({exc})"
            ) from None
        if raw is None:
            raise ModelLibsError(f"{self.source}: record {key.decode(errors='replace')} vanished")
        return raw

    def _parse(self, raw: bytes, key: bytes) -> caffe_pb2.AnnotatedDatum:
        return parse_annotated_datum(raw, f"{self.source}: record {key.decode(errors='replace')}")

    def _load(self, index: int) -> Record:
        key = self.keys[index]
        ad = self._parse(self._get(key), key)
        where = f"{self.source}: record {key.decode(errors='replace')}"
        img = decode(ad.datum, *self.force, where=where)
        return img, boxes_of(ad), int(ad.datum.label)

    def _record(self, index: int) -> Record:
        rec = self.cache.get(index)
        return rec if rec is not None else self._load(index)

    def _fill_cache(self, budget: int) -> None:
        used = 0
        for i in range(len(self.keys)):
            if used >= budget:
                break
            rec = self._load(i)
            used += rec[0].nbytes
            if used <= budget:
                self.cache[i] = rec

    # -- batches

    def __len__(self) -> int:
        """Batches in one pass over this rank's share (the stream itself never ends)."""
        return -(-len(self.keys) // self.batch_size)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if b < 0:
            raise IndexError(b)
        rng = np.random.default_rng([self.seed, self.rank, b])
        n, total = self.batch_size, len(self.keys)
        data: np.ndarray | None = None
        items: list[Boxes] = []
        labels = np.empty(n, np.float32)
        for i in range(n):
            img, boxes, label = self._record((b * n + i) % total)
            x, out_boxes = self.plan.apply(img, boxes, rng)
            shape = (x.shape[2], x.shape[0], x.shape[1])
            if data is None:
                data = np.empty((n, *shape), np.float32)
            elif shape != data.shape[1:]:
                raise ModelLibsError(
                    f"{self.source}: images of one batch give input shapes {data.shape[1:]} and {shape} "
                    "(use batch_size 1, or a WARP / FIT_LARGE_SIZE_AND_PAD resize)"
                )
            self.plan.to_blob(x, data[i])
            items.append(out_boxes)
            labels[i] = label
        assert data is not None
        label_top = label_blob(items) if self.has_anno_type else labels.reshape(n, 1, 1, 1)
        return torch.from_numpy(data), torch.from_numpy(label_top)


class BatchIndices(Sampler[int]):
    """Batch indices ``start``, ``start + 1``, ... (``count`` of them; endless when None)."""

    def __init__(self, start: int = 0, count: int | None = None) -> None:
        self.start, self.count = start, count

    def __iter__(self) -> Iterator[int]:
        if self.count is None:
            return itertools.count(self.start)
        return iter(range(self.start, self.start + self.count))

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError("an endless batch stream has no length")
        return self.count


def _worker_init(_: int) -> None:
    # Workers are the parallelism: inner thread pools would only fight over the cores (the
    # DataLoader already gives each worker one torch thread).
    cv2.setNumThreads(1)


# A process forked while OpenCV's thread pool runs inherits the pool without its threads, and
# its first pool operation (even setNumThreads) can wait forever for them: stop the pool
# around every fork of this process (DataLoader workers) and restore it in the parent.
_cv_threads: list[int] = []


def _before_fork() -> None:
    _cv_threads.append(cv2.getNumThreads())
    cv2.setNumThreads(1)


def _after_fork_in_parent() -> None:
    if _cv_threads:
        cv2.setNumThreads(_cv_threads.pop())


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent)


def make_loader(
    layer: caffe_pb2.LayerParameter,
    phase: str = "TRAIN",
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    num_workers: int = 2,
    start_batch: int = 0,
    num_batches: int | None = None,
    prefetch_factor: int = 2,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    pin_memory: bool = False,
    source: str | os.PathLike | None = None,
) -> DataLoader:
    """A DataLoader of ``(data, label)`` batches ``start_batch``, ``start_batch + 1``, ... of this
    rank (``num_batches`` of them, endless when None; resuming at iteration i is
    ``start_batch=i``), built in ``num_workers`` worker processes (0: in this process)."""
    ds = AnnotatedDataset(
        layer, phase, rank=rank, world_size=world_size, seed=seed, cache_bytes=cache_bytes, source=source
    )
    extra: dict = {}
    if num_workers > 0:
        extra = dict(worker_init_fn=_worker_init, persistent_workers=True, prefetch_factor=prefetch_factor)
        if "fork" in multiprocessing.get_all_start_methods():
            # forked workers share the decoded-image cache instead of pickling it
            extra["multiprocessing_context"] = "fork"
    return DataLoader(
        ds,
        batch_size=None,
        sampler=BatchIndices(start_batch, num_batches),
        num_workers=num_workers,
        pin_memory=pin_memory,
        **extra,
    )


def data_layer(net: caffe_pb2.NetParameter, phase: str) -> caffe_pb2.LayerParameter:
    """The net's AnnotatedData layer in ``phase`` (Caffe's include/exclude rules)."""
    for layer in net.layer:
        if layer.type == "AnnotatedData" and included(layer, caffe_pb2.Phase.Value(phase)):
            return layer
    raise ModelLibsError(f"net {net.name!r}: no AnnotatedData layer for the {phase} phase")


def batches(
    net: caffe_pb2.NetParameter,
    phase: str = "TRAIN",
    *,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    workers: int = 2,
    base: str | os.PathLike | None = None,
    start: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """The endless batches of ``net``'s AnnotatedData layer for ``phase`` as ``{top name:
    tensor}`` (the trainer's input), from batch ``start`` on. A relative LMDB source is taken
    as given (Caffe's view, from the working folder), else beside ``base`` when it is there.
    The loader is built now, so a bad LMDB or parameter raises here."""
    layer = data_layer(net, phase)
    source = Path(layer.data_param.source)
    if (
        base is not None
        and not source.is_absolute()
        and not source.exists()
        and (Path(base) / source).exists()
    ):
        source = Path(base) / source
    loader = make_loader(
        layer,
        phase,
        rank=rank,
        world_size=world,
        seed=seed,
        num_workers=workers,
        start_batch=start,
        source=source,
    )
    return _named(loader, list(layer.top))


def _named(loader: DataLoader, tops: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    for data, label in loader:
        yield dict(zip(tops, (data, label)))
