"""The one way outputs are written: checks before work, temp + rename, locks, stale temporaries,
--force only over what the toolkit wrote, the umask."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from model_libs.errors import ModelLibsError
from model_libs.fsutil import (
    Output,
    OutputLock,
    atomic_dir,
    atomic_write_bytes,
    check_output,
    clean_stale,
    lock_path,
    stale_temporaries,
    umask,
)


def test_umask_is_read_without_changing_it():
    old = os.umask(0o027)
    try:
        assert umask() == 0o027
        assert os.umask(0o027) == 0o027  # still set
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_outputs_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        f = atomic_write_bytes(tmp_path / "a.bin", b"x")
        s = atomic_write_bytes(tmp_path / "run.sh", b"#!/bin/sh\n", executable=True)
        with atomic_dir(tmp_path / "tree") as tmp:
            (tmp / "inner").write_text("y")
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == 0o666 & ~mask
    assert s.stat().st_mode & 0o777 == 0o777 & ~mask
    assert (tmp_path / "tree").stat().st_mode & 0o777 == 0o777 & ~mask


def test_check_output_refusals(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    folder = tmp_path / "dir"
    folder.mkdir()
    with pytest.raises(ModelLibsError, match=r"file/sub: cannot create output: .*file is a file"):
        check_output(blocker / "sub")
    with pytest.raises(ModelLibsError, match=r"dir: report should be a file but is a folder"):
        check_output(folder, what="report")
    with pytest.raises(ModelLibsError, match=r"file: LMDB should be a folder but is a file"):
        check_output(blocker, folder=True, what="LMDB")
    with pytest.raises(ModelLibsError, match="not valid UTF-8"):
        check_output(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))
    with pytest.raises(ModelLibsError, match="empty path"):
        check_output("")
    data = folder / "images"
    data.mkdir()
    with pytest.raises(ModelLibsError, match="holds the input"):
        check_output(folder, folder=True, inputs=[data])
    with pytest.raises(ModelLibsError, match="is also an input"):
        check_output(blocker, inputs=[blocker])
    # an output inside an input folder is fine (data/lmdb under data)
    assert check_output(data / "lmdb", folder=True, inputs=[data]) == data / "lmdb"
    assert not (data / "lmdb").exists()  # nothing created by a check


def test_force_replaces_only_what_the_recogniser_accepts(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "mine").write_text("1")
    with pytest.raises(ModelLibsError, match="already exists"):
        with atomic_dir(out):
            pass
    with pytest.raises(ModelLibsError, match="not a output folder this toolkit wrote"):
        with atomic_dir(out, force=True):
            pass
    with atomic_dir(out, force=True, recognise=lambda p: (p / "mine").exists()) as tmp:
        (tmp / "mine").write_text("2")
    assert (out / "mine").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary, no lock file left


def test_an_empty_folder_is_replaced_without_force(tmp_path):
    (tmp_path / "e").mkdir()
    with atomic_dir(tmp_path / "e") as tmp:
        (tmp / "x").write_text("x")
    assert (tmp_path / "e" / "x").exists()


def test_a_failure_leaves_the_old_output_and_no_temporary(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, force=True, recognise=lambda p: True) as tmp:
            (tmp / "v").write_text("new")
            raise RuntimeError("boom")
    assert (out / "v").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_removes_the_parents_it_created(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "a" / "b" / "out"):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_are_cleaned_by_the_next_writer_only(tmp_path):
    (tmp_path / ".out.abcd1234.tmp").mkdir()
    (tmp_path / ".out.abcd1234.tmp" / "junk").write_text("x")
    (tmp_path / ".out.b.abcd1234.tmp").mkdir()  # a temporary of "out.b", not of "out"
    (tmp_path / ".other.zz99zz99.tmp").write_text("x")
    assert [p.name for p in stale_temporaries(tmp_path, "out")] == [".out.abcd1234.tmp"]
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "x").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.zz99zz99.tmp", ".out.b.abcd1234.tmp", "out"]
    assert [p.name for p in clean_stale(tmp_path)] == [".other.zz99zz99.tmp", ".out.b.abcd1234.tmp"]


def test_a_second_writer_gets_a_clear_error(tmp_path):
    target = tmp_path / "out"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from model_libs.fsutil import OutputLock, lock_path
        with OutputLock(lock_path(Path({str(target)!r})), Path({str(target)!r})):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(ModelLibsError, match=rf"out: process {proc.pid} is writing this LMDB now"):
            with atomic_dir(target, what="LMDB"):
                pass
        with pytest.raises(ModelLibsError, match="is writing"):
            Output(target).open()
        # the running writer's temporary is not stale: a writer of the folder around it keeps it
        busy = tmp_path / ".out.abcd1234.tmp"
        busy.mkdir()
        with Output(tmp_path, kind="folder"):
            pass
        assert busy.exists()
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=30)
    assert not lock_path(target).exists()  # released and removed
    with atomic_dir(target) as tmp:  # free again; its dead writer's temporary is cleaned
        (tmp / "x").write_text("x")
    assert not (tmp_path / ".out.abcd1234.tmp").exists()
    with atomic_dir(target, force=True, recognise=lambda p: True) as tmp:
        (tmp / "x").write_text("x")


def test_a_lock_left_by_a_killed_writer_does_not_block(tmp_path):
    target = tmp_path / "out"
    lock_path(target).write_text("999999\n")  # its process is gone: no flock is held
    with OutputLock(lock_path(target), target):
        pass
    assert not lock_path(target).exists()


def test_output_file_replaces_only_its_own_kind(tmp_path):
    report = tmp_path / "r.json"
    report.write_text("{}")
    with Output(report, what="report", recognise=lambda p: p.read_text().startswith("{")) as o:
        o.write_text('{"mAP": 1}')
    assert report.read_text() == '{"mAP": 1}'
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(ModelLibsError, match=r"notes\.txt: exists and is not a report this toolkit wrote"):
        Output(notes, what="report", recognise=lambda p: p.read_text().startswith("{")).open()
    assert notes.read_text() == "my notes"
    with pytest.raises(ModelLibsError, match="use --force"):
        Output(report, recognise=lambda p: True, needs_force=True).open()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "r.json"]


def test_output_folder_never_overwrites_an_input(tmp_path):
    pic = tmp_path / "a.png"
    pic.write_bytes(b"\x89PNG\r\n\x1a\nimage")
    with Output(tmp_path, kind="folder", inputs=[pic]) as o:
        with pytest.raises(ModelLibsError, match="would overwrite an input"):
            o.write_bytes(b"x", "a.png")
        o.write_bytes(b"y", "b.png")
    assert pic.read_bytes().endswith(b"image")
    assert (tmp_path / "b.png").read_bytes() == b"y"


def test_job_files_follow_the_umask(tmp_path):
    """The job script was 0710 and the prototxts 0600 whatever the umask."""
    from model_libs.__main__ import main

    old = os.umask(0o022)
    try:
        assert (
            main(["job", "--model", "DSOD300_smallest", "--dataset", "VOC0712", "--out", str(tmp_path / "j")])
            == 0
        )
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "j").iterdir()}
    script = next(n for n in modes if n.endswith(".sh"))
    assert modes.pop(script) == 0o755
    assert set(modes.values()) == {0o644}, modes
    assert (tmp_path / "j").stat().st_mode & 0o777 == 0o755
