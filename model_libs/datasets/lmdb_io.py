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


# py-lmdb allows one open environment per database and process, so readers share one.
_SHARED: dict[str, tuple[tuple[int, int], lmdb.Environment]] = {}


def _identity(p: Path) -> tuple[int, int]:
    st = (p / "data.mdb" if p.is_dir() else p).stat()
    return st.st_dev, st.st_ino


def shared_env(path: str | os.PathLike) -> lmdb.Environment:
    """This process's one read-only environment of the LMDB at ``path`` (opened on first use;
    reopened when the database was replaced, e.g. rebuilt with ``--force``). Do not close it.
    Every shared environment is closed before the process forks (an LMDB environment must
    not cross a fork); the next use reopens it."""
    p = Path(path)
    key = str(p.resolve())
    held = _SHARED.get(key)
    if held is not None:
        try:
            same = held[0] == _identity(p)
        except OSError:
            same = False
        if same:
            return held[1]
        held[1].close()
        del _SHARED[key]
    env = open_lmdb(p)
    _SHARED[key] = (_identity(p), env)
    return env


def _close_shared() -> None:
    while _SHARED:
        _SHARED.popitem()[1][1].close()


os.register_at_fork(before=_close_shared)


def count_records(path: str | os.PathLike) -> int:
    """Number of records in the LMDB."""
    return int(shared_env(path).stat()["entries"])


def iter_records(path: str | os.PathLike, limit: int | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield ``(key, value)`` in key order (the order Caffe's DataLayer reads)."""
    with shared_env(path).begin() as txn:
        for i, (k, v) in enumerate(txn.cursor()):
            if limit is not None and i >= limit:
                break
            yield bytes(k).decode("utf-8", errors="replace"), bytes(v)
