"""The conversion loop shared by the VOC, COCO and synthetic converters.

A converter turns its source into a list of :class:`Job` objects (key + a function that
reads one image and its boxes). :func:`convert_jobs` runs them on a small thread pool
(OpenCV decoding releases the GIL), writes the records in list order into an LMDB through a
temporary folder, shows a progress bar and optionally writes ``test_name_size.txt``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelLibsError
from ..fsutil import Output
from .annotated_datum import Box, build_annotated_datum
from .lmdb_io import fill_lmdb, lmdb_output


@dataclass(frozen=True)
class Record:
    """One converted image: its serialized AnnotatedDatum plus what the summary needs."""

    key: str
    value: bytes
    n_boxes: int
    name: str  # first column of test_name_size.txt
    height: int
    width: int


@dataclass(frozen=True)
class Job:
    """Key and a callable producing the record (run on a worker thread)."""

    key: str
    run: Callable[[], Record]


@dataclass(frozen=True)
class ConvertStats:
    """What a conversion produced."""

    out: Path
    images: int
    boxes: int
    seconds: float
    name_size: Path | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        return (
            f"{self.out}: {self.images} images, {self.boxes} boxes in {self.seconds:.2f}s "
            f"({self.images_per_second:.1f} images/s)"
        )


@dataclass(frozen=True)
class LoadedImage:
    """An image file read for conversion: bytes to store and its decoded size."""

    data: bytes
    height: int
    width: int
    shape: tuple[int, int, int] | None  # set when re-encoded (upstream then stores c/h/w)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(raw: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame header, or None if not found."""
    if raw[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(raw)
    while i + 4 <= n:
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seglen = int.from_bytes(raw[i + 2 : i + 4], "big")
        if marker in _SOF:
            if i + 9 > n:
                return None
            return int.from_bytes(raw[i + 5 : i + 7], "big"), int.from_bytes(raw[i + 7 : i + 9], "big")
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + seglen
    return None


def load_image(path: Path, encode_type: str = "jpg") -> LoadedImage:
    """Read ``path``; check it decodes; keep the original bytes when its extension matches
    ``encode_type`` (upstream ``matchExt``: jpg also matches .jpeg), else re-encode.

    For a JPEG kept as is, the size comes from its frame header and the check decodes the
    whole stream at 1/8 scale (every coefficient is still entropy-decoded, so a corrupt or
    truncated file fails), which is ~3x cheaper than a full decode.
    """
    import cv2

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelLibsError(f"{path}: image file not found") from None
    except OSError as exc:
        raise ModelLibsError(f"{path}: cannot read image ({exc.strerror})") from None
    ext = path.suffix.lower().lstrip(".")
    enc = encode_type.lower()
    keep = ext == enc or (enc == "jpg" and ext == "jpeg")
    buf = np.frombuffer(raw, np.uint8)
    size = jpeg_size(raw) if keep else None
    if size is not None and min(size) > 0:
        small = cv2.imdecode(buf, cv2.IMREAD_REDUCED_GRAYSCALE_8)
        h, w = size
        if small is not None and small.shape[:2] == (-(-h // 8), -(-w // 8)):
            return LoadedImage(raw, h, w, None)
        raise ModelLibsError(f"{path}: unreadable image (corrupt or truncated JPEG)")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if raw else None
    if img is None:
        raise ModelLibsError(f"{path}: unreadable image (not a valid JPEG/PNG or truncated)")
    h, w = img.shape[:2]
    if keep:
        return LoadedImage(raw, h, w, None)
    ok, out = cv2.imencode("." + enc, img)
    if not ok:
        raise ModelLibsError(f"{path}: cannot re-encode image as {enc}")
    return LoadedImage(out.tobytes(), h, w, (img.shape[2], h, w))


def make_record(key: str, name: str, image: LoadedImage, boxes: Sequence[Box]) -> Record:
    """Serialize one AnnotatedDatum."""
    ad = build_annotated_datum(image.data, boxes, image.shape)
    return Record(key, ad.SerializeToString(), len(boxes), name, image.height, image.width)


def record_key(index: int, relpath: str) -> str:
    """Upstream key: ``caffe::format_int(line_id, 8) + "_" + relative image path``."""
    return f"{index:08d}_{relpath}"


def shuffled(items: list, shuffle: bool, seed: int) -> list:
    """``items`` in a seeded random order (upstream shuffles the trainval list) or as is."""
    if not shuffle:
        return list(items)
    if seed < 0:
        raise ModelLibsError(f"--seed must be 0 or more (got {seed})")
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order]


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not enabled)


def _ordered_map(pool: ThreadPoolExecutor, jobs: Sequence[Job], window: int) -> Iterator[Record]:
    """Results in job order with at most ``window`` jobs in flight (bounded memory)."""
    pending: deque = deque()
    it = iter(jobs)
    try:
        for job in it:
            pending.append(pool.submit(job.run))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()


def _within(child: Path, parent: Path) -> bool:
    c, p = os.path.realpath(child), os.path.realpath(parent)
    return c == p or c.startswith(p.rstrip(os.sep) + os.sep)


def is_name_size_file(path: Path) -> bool:
    """True for a ``name height width`` list as the converters write (``--force`` may replace it)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    for ln in lines:
        parts = ln.split()
        if parts and (len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit())):
            return False
    return True


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def convert_jobs(
    jobs: Sequence[Job],
    out: str | os.PathLike,
    *,
    name_size: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool | None = None,
    workers: int | None = None,
    desc: str = "convert",
    source: str = "split",
    inputs: Iterable[str | os.PathLike | None] = (),
) -> ConvertStats:
    """Run ``jobs`` and write an LMDB at ``out`` (plus ``name_size`` lines ``name h w``).

    Both outputs are checked and locked before the first job runs; nothing is left at
    ``out`` or ``name_size`` unless every job succeeds. ``inputs`` (the source files and
    folders) may be neither output nor inside one that ``force`` would replace.
    """
    out = Path(out)
    if not jobs:
        raise ModelLibsError(f"{source}: empty split, no images to convert")
    if workers is not None and workers < 1:
        raise ModelLibsError(f"--workers must be at least 1 (got {workers})")
    inputs = list(inputs)
    ns_out = None
    if name_size is not None:
        if _within(Path(name_size), out):
            raise ModelLibsError(f"{name_size}: the name/size list must not lie inside the LMDB folder {out}")
        ns_out = Output(
            name_size,
            what="name/size list",
            inputs=[*inputs, out],
            recognise=is_name_size_file,
            force=force,
            needs_force=True,
        )
    sizes: list[str] = []
    boxes = 0
    t0 = time.perf_counter()
    bar = _progress(len(jobs), desc, progress)

    def records(pool: ThreadPoolExecutor) -> Iterator[tuple[str, bytes]]:
        nonlocal boxes
        for rec in _ordered_map(pool, jobs, 4 * (workers or default_workers())):
            boxes += rec.n_boxes
            sizes.append(f"{rec.name} {rec.height} {rec.width}\n")
            bar.update(1)
            yield rec.key, rec.value

    try:
        with contextlib.ExitStack() as stack:
            if ns_out is not None:
                stack.enter_context(ns_out)
            tmp = stack.enter_context(lmdb_output(out, force=force, inputs=inputs))
            with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
                n = fill_lmdb(tmp, records(pool), out)
            if ns_out is not None:  # before the LMDB is renamed in: both or neither
                ns_out.write_text("".join(sizes))
    finally:
        bar.close()
    return ConvertStats(out, n, boxes, time.perf_counter() - t0, Path(name_size) if name_size else None)
