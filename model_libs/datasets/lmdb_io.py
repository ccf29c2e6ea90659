"""LMDB read/write in Caffe's layout (a folder holding ``data.mdb`` and ``lock.mdb``).

Writes go through :func:`model_libs.fsutil.atomic_dir`: the database is built in a temporary
folder beside the target and renamed into place only when complete, so a failed conversion
never leaves a partial LMDB behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import lmdb

from ..errors import ModelLibsError
from ..fsutil import atomic_dir

# Caffe's db_lmdb uses a 1 TB map; LMDB only grows the file as data is written.
MAP_SIZE = 1 << 40
COMMIT_EVERY = 1000  # records per transaction, as convert_annoset


def write_lmdb(
    path: str | os.PathLike,
    records: Iterable[tuple[str | bytes, bytes]],
    force: bool = False,
) -> int:
    """Write ``(key, value)`` pairs to a new LMDB at ``path``; returns the record count.

    Fails if ``path`` exists unless ``force``. Any exception while consuming ``records``
    removes the temporary database and leaves ``path`` as it was.
    """
    n = 0
    with atomic_dir(path, force=force) as tmp:
        env = lmdb.open(str(tmp), map_size=MAP_SIZE, subdir=True, lock=True, sync=False)
        try:
            txn = env.begin(write=True)
            try:
                for key, value in records:
                    k = key.encode("utf-8") if isinstance(key, str) else key
                    if not txn.put(k, value, overwrite=False):
                        raise ModelLibsError(f"{path}: duplicate key {k.decode(errors='replace')!r}")
                    n += 1
                    if n % COMMIT_EVERY == 0:
                        txn.commit()
                        txn = env.begin(write=True)
                txn.commit()
            except BaseException:
                txn.abort()
                raise
            env.sync(True)
        finally:
            env.close()
    return n


def open_lmdb(path: str | os.PathLike) -> lmdb.Environment:
    """Open an existing LMDB read-only (no lock file needed)."""
    p = Path(path)
    if not p.exists():
        raise ModelLibsError(f"{p}: LMDB not found")
    if p.is_dir() and not (p / "data.mdb").exists():
        raise ModelLibsError(f"{p}: not an LMDB folder (no data.mdb)")
    try:
        return lmdb.open(str(p), readonly=True, lock=False, subdir=p.is_dir(), readahead=False)
    except lmdb.Error as exc:
        raise ModelLibsError(f"{p}: cannot open LMDB ({exc})") from None


def count_records(path: str | os.PathLike) -> int:
    """Number of records in the LMDB."""
    env = open_lmdb(path)
    try:
        return int(env.stat()["entries"])
    finally:
        env.close()


def iter_records(path: str | os.PathLike, limit: int | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield ``(key, value)`` in key order (the order Caffe's DataLayer reads)."""
    env = open_lmdb(path)
    try:
        with env.begin() as txn:
            for i, (k, v) in enumerate(txn.cursor()):
                if limit is not None and i >= limit:
                    break
                yield bytes(k).decode("utf-8", errors="replace"), bytes(v)
    finally:
        env.close()
