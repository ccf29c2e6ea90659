"""The one read-only LMDB environment per database that readers share in a process."""

from __future__ import annotations

import shutil

import lmdb

from model_libs.datasets.lmdb_io import count_records, iter_records


def _write(path, records: dict[str, bytes]) -> None:
    env = lmdb.open(str(path), map_size=1 << 20)  # with its lock.mdb, as Caffe's tools write
    with env.begin(write=True) as txn:
        for k, v in records.items():
            txn.put(k.encode(), v)
    env.close()


def test_a_database_moved_or_replaced_under_an_open_reader_is_read_afresh(tmp_path):
    """py-lmdb refuses to open files a live environment holds (keyed by inode): an
    environment kept for a database since moved or replaced must not block reading it, nor the
    new database, under either path (CI once failed this way after `--force` reruns)."""
    x, y = tmp_path / "x_lmdb", tmp_path / "y_lmdb"
    _write(x, {"a": b"1", "b": b"2"})
    assert [k for k, _ in iter_records(x)] == ["a", "b"]
    shutil.move(x, y)  # the files the shared environment of x holds are now y's
    assert [(k, bytes(v)) for k, v in iter_records(y)] == [("a", b"1"), ("b", b"2")]
    _write(x, {"c": b"3"})  # a new database where the old one was
    assert [(k, bytes(v)) for k, v in iter_records(x)] == [("c", b"3")]
    assert count_records(y) == 2 and count_records(x) == 1
    shutil.rmtree(y)
    _write(y, {"d": b"4", "e": b"5", "f": b"6"})
    assert count_records(y) == 3 and [k for k, _ in iter_records(x)] == ["c"]
