"""LMDB read/write in Caffe's layout (a folder holding ``data.mdb`` and ``lock.mdb``).

Writes go through :func:`model_libs.fsutil.atomic_dir`: the database is built in a temporary
folder beside the target and renamed into place only when complete, so a failed conversion
never leaves a partial LMDB behind; the target is locked against a second writer, and
``--force`` replaces only an existing LMDB (see :func:`is_lmdb_folder`).

Reads are the one way the toolkit opens an LMDB. LMDB maps the file into memory, and a page
beyond the end of a truncated file kills the process with SIGBUS instead of raising; so
:func:`check_lmdb_file` first reads the two meta pages with ordinary reads and checks that
the file holds every page the newest meta page counts, and :func:`iter_records` first walks
the B-tree with plain reads (:func:`check_lmdb_pages`), checking that every page and record
lies inside the file (a damaged record size or page link would point past its end). LMDB's
own errors (``MDB_CORRUPTED``, ``MDB_PAGE_NOTFOUND`` ...) become a
:class:`ModelLibsError` naming the database.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb

from ..errors import ModelLibsError
from ..fsutil import PathLike, atomic_dir, file_mode, shown

# Caffe's db_lmdb uses a 1 TB map; LMDB only grows the file as data is written.
MAP_SIZE = 1 << 40
COMMIT_EVERY = 1000  # records per transaction, as convert_annoset
LMDB_MAGIC = 0xBEEFC0DE
LMDB_FILES = frozenset({"data.mdb", "lock.mdb"})


def is_lmdb_folder(path: Path) -> bool:
    """True for a folder holding only an LMDB (``data.mdb`` with LMDB's magic, ``lock.mdb``):
    what ``--force`` may replace."""
    try:
        names = set(os.listdir(path))
    except OSError:
        return False
    if "data.mdb" not in names or not names <= LMDB_FILES:
        return False
    try:
        with open(path / "data.mdb", "rb") as f:
            head = f.read(24)
    except OSError:
        return False
    return len(head) >= 20 and struct.unpack_from("<I", head, 16)[0] == LMDB_MAGIC


def write_lmdb(
    path: PathLike,
    records: Iterable[tuple[str | bytes, bytes]],
    force: bool = False,
    inputs: Iterable[PathLike | None] = (),
) -> int:
    """Write ``(key, value)`` pairs to a new LMDB at ``path``; returns the record count.

    Fails if ``path`` exists unless ``force`` (and then only if it is an LMDB), or if it is
    or holds one of ``inputs``. Any exception while consuming ``records`` removes the
    temporary database and leaves ``path`` as it was.
    """
    with lmdb_output(path, force, inputs) as tmp:
        return fill_lmdb(tmp, records, path)


def lmdb_output(path: PathLike, force: bool = False, inputs: Iterable[PathLike | None] = ()):
    """:func:`~model_libs.fsutil.atomic_dir` for an LMDB: yields the empty temporary folder to
    fill with :func:`fill_lmdb`; ``--force`` replaces only an existing LMDB."""
    return atomic_dir(path, force=force, recognise=is_lmdb_folder, inputs=inputs, what="LMDB")


def fill_lmdb(folder: PathLike, records: Iterable[tuple[str | bytes, bytes]], name: PathLike = "") -> int:
    """Write ``records`` into a new LMDB in the empty ``folder``; returns the count."""
    n = 0
    env = lmdb.open(
        str(folder), map_size=MAP_SIZE, subdir=True, lock=True, sync=False, mode=file_mode() | 0o600
    )
    try:
        txn = env.begin(write=True)
        try:
            for key, value in records:
                k = key.encode("utf-8") if isinstance(key, str) else key
                if not txn.put(k, value, overwrite=False):
                    raise ModelLibsError(
                        f"{shown(name or folder)}: duplicate key {k.decode(errors='replace')!r}"
                    )
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


@dataclass(frozen=True)
class LmdbFile:
    """What the meta pages of a ``data.mdb`` say."""

    path: Path  # the data file
    page_size: int
    last_page: int
    file_size: int


def _meta(head: bytes, where: str) -> tuple[int, int, int]:
    """(page size, last page, txn id) of one meta page (LMDB's MDB_meta after the page header)."""
    if len(head) < 152:
        raise ModelLibsError(f"{where}: not an LMDB (file too short for its header)")
    magic, version = struct.unpack_from("<II", head, 16)
    if magic != LMDB_MAGIC:
        raise ModelLibsError(f"{where}: not an LMDB (no LMDB header)")
    if version != 1:
        raise ModelLibsError(f"{where}: LMDB format version {version} is not supported")
    psize = struct.unpack_from("<I", head, 40)[0]  # mm_psize lives in the free DB's md_pad
    last_pg, txnid = struct.unpack_from("<QQ", head, 136)
    return psize, last_pg, txnid


def check_lmdb_file(path: PathLike) -> LmdbFile:
    """Validate an LMDB's data file with plain reads, before anything maps it.

    Raises :class:`ModelLibsError` for a missing database, a file that is not an LMDB, and a
    truncated one (the case that would otherwise end in SIGBUS).
    """
    p = Path(path)
    if not p.exists():
        raise ModelLibsError(f"{shown(p)}: LMDB not found")
    data = p / "data.mdb" if p.is_dir() else p
    if p.is_dir() and not data.exists():
        raise ModelLibsError(f"{shown(p)}: not an LMDB folder (no data.mdb)")
    where = shown(data)
    try:
        with open(data, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head0 = f.read(256)
            psize = _meta(head0, where)[0]
            if psize < 512 or psize > 65536 or psize & (psize - 1):
                raise ModelLibsError(f"{where}: damaged LMDB (page size {psize})")
            f.seek(psize)
            head1 = f.read(256)
    except OSError as exc:
        raise ModelLibsError(f"{where}: cannot read LMDB ({exc.strerror})") from None
    metas = [_meta(head0, where), _meta(head1, where)]
    _, last_pg, _ = max(metas, key=lambda m: m[2])
    need = (last_pg + 1) * psize
    if size < need:
        raise ModelLibsError(
            f"{where}: truncated LMDB ({size:,} bytes; its header counts {last_pg + 1:,} pages "
            f"of {psize}, {need:,} bytes)"
        )
    return LmdbFile(data, psize, last_pg, size)


# LMDB 0.9 page and node layout (lmdb/mdb.c): a 16-byte page header (pgno, pad, flags,
# lower, upper), then 2-byte node offsets; a node is lo, hi, flags, key size, key, data.
_P_BRANCH, _P_LEAF, _P_OVERFLOW, _P_LEAF2 = 0x01, 0x02, 0x04, 0x20
_F_BIGDATA = 0x01
_NO_PAGE = 0xFFFFFFFFFFFFFFFF


def check_lmdb_pages(path: PathLike) -> int:
    """Walk the whole B-tree with plain reads and check every page and record lies inside the
    file; returns the number of records. Run before iterating values, so that a damaged
    record size or page number becomes an error instead of SIGBUS in the memory map."""
    info = check_lmdb_file(path)
    where = shown(info.path)
    ps, n_pages = info.page_size, info.last_page + 1
    with open(info.path, "rb") as f:
        fd = f.fileno()
        head = [os.pread(fd, 256, 0), os.pread(fd, 256, ps)]
        newest = max(head, key=lambda h: struct.unpack_from("<Q", h, 144)[0])
        entries, root = struct.unpack_from("<QQ", newest, 120)

        def bad(what: str) -> ModelLibsError:
            return ModelLibsError(f"{where}: damaged LMDB ({what})")

        records = 0
        seen: set[int] = set()
        stack = [] if root == _NO_PAGE else [root]
        while stack:
            pg = stack.pop()
            if pg < 2 or pg >= n_pages or pg in seen:
                raise bad(f"page {pg} is out of range or linked twice")
            seen.add(pg)
            page = os.pread(fd, ps, pg * ps)
            if len(page) < ps:
                raise bad(f"page {pg} is cut short")
            flags, lower, upper = struct.unpack_from("<HHH", page, 10)
            if not 16 <= lower <= upper <= ps:
                raise bad(f"page {pg} has a bad header")
            if flags & _P_LEAF2:
                raise bad(f"page {pg}: duplicate-key pages are not used by Caffe LMDBs")
            if not flags & (_P_BRANCH | _P_LEAF):
                raise bad(f"page {pg} is neither a branch nor a leaf")
            for i in range((lower - 16) >> 1):
                (off,) = struct.unpack_from("<H", page, 16 + 2 * i)
                if off < upper or off + 8 > ps:
                    raise bad(f"page {pg} node {i} lies outside the page")
                lo, hi, nflags, ksize = struct.unpack_from("<HHHH", page, off)
                data = off + 8 + ksize
                if data > ps:
                    raise bad(f"page {pg} node {i} key runs past the page")
                if flags & _P_BRANCH:
                    stack.append(lo | hi << 16 | nflags << 32)
                    continue
                records += 1
                size = lo | hi << 16
                if not nflags & _F_BIGDATA:
                    if data + size > ps:
                        raise bad(f"page {pg} node {i} value runs past the page")
                    continue
                if data + 8 > ps:
                    raise bad(f"page {pg} node {i} overflow link runs past the page")
                (opg,) = struct.unpack_from("<Q", page, data)
                if opg < 2 or opg >= n_pages:
                    raise bad(f"record value on page {opg}, outside the file")
                oflags, npages = struct.unpack_from("<HI", os.pread(fd, 16, opg * ps), 10)
                if not oflags & _P_OVERFLOW or opg + npages > n_pages or size > npages * ps - 16:
                    raise bad(f"record value of {size} bytes on page {opg} does not fit its pages")
        if records != entries:
            raise bad(f"the header counts {entries} records, the tree holds {records}")
    return records


def open_lmdb(path: PathLike) -> lmdb.Environment:
    """Open an existing LMDB read-only (no lock file needed), after :func:`check_lmdb_file`."""
    p = Path(path)
    check_lmdb_file(p)
    try:
        return lmdb.open(str(p), readonly=True, lock=False, subdir=p.is_dir(), readahead=False)
    except lmdb.Error as exc:
        raise ModelLibsError(f"{shown(p)}: cannot open LMDB ({exc})") from None


# py-lmdb allows one open environment per database and process, so readers share one.
_SHARED: dict[str, tuple[tuple[int, int], lmdb.Environment]] = {}


def _identity(p: Path) -> tuple[int, int]:
    st = (p / "data.mdb" if p.is_dir() else p).stat()
    return st.st_dev, st.st_ino


def shared_env(path: PathLike) -> lmdb.Environment:
    """This process's one read-only environment of the LMDB at ``path``, opened (after
    :func:`check_lmdb_file`) on first use and reopened when the database was replaced (e.g.
    rebuilt with ``--force``). Do not close it. Every shared environment is closed before the
    process forks (an LMDB environment must not cross a fork); the next use reopens it."""
    p = Path(path)
    key = str(p.resolve())
    held = _SHARED.get(key)
    if held is not None and _current(key, held[0]):
        return held[1]
    # py-lmdb refuses a second environment over files an open one holds, and keys them by
    # inode (data and lock file): an environment kept for a database since replaced can hold
    # the inode the new files now reuse, or the very files moved to another path. Close every
    # stale one before opening.
    for k, (ident, env) in list(_SHARED.items()):
        if k == key or not _current(k, ident):
            env.close()
            del _SHARED[k]
    env = open_lmdb(p)
    _SHARED[key] = (_identity(p), env)
    return env


def _current(key: str, ident: tuple[int, int]) -> bool:
    try:
        return _identity(Path(key)) == ident
    except OSError:
        return False


def _close_shared() -> None:
    while _SHARED:
        _SHARED.popitem()[1][1].close()


os.register_at_fork(before=_close_shared)


def count_records(path: PathLike) -> int:
    """Number of records in the LMDB."""
    try:
        return int(shared_env(path).stat()["entries"])
    except lmdb.Error as exc:
        raise ModelLibsError(f"{shown(path)}: damaged LMDB ({exc})") from None


def iter_records(path: PathLike, limit: int | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield ``(key, value)`` in key order (the order Caffe's DataLayer reads)."""
    check_lmdb_pages(path)
    where = shown(path)
    with shared_env(path).begin(buffers=True) as txn:
        cur = txn.cursor()
        i = 0
        try:
            ok = cur.first()
            while ok and (limit is None or i < limit):
                key = bytes(cur.key()).decode("utf-8", errors="replace")
                yield key, bytes(cur.value())
                i += 1
                ok = cur.next()
        except lmdb.Error as exc:
            raise ModelLibsError(f"{where}: damaged LMDB after {i} records ({exc})") from None
