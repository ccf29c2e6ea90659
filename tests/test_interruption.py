"""kill -9 at random moments of convert, synthetic and Caffe training, then a re-run; and two
converters racing for one output.

What must hold after every kill: no partial output is visible (an output is absent, the old
one, or complete), the re-run succeeds and leaves no stale temporary or lock, and training
resumes from the newest *complete* snapshot (a kill during a snapshot leaves a truncated
caffemodel or solverstate, which the chooser passes over). Delays are drawn from seeded
generators; the counts are printed for the report. Marked slow (about 2-3 minutes on 2 cores).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_libs.datasets.lmdb_io import count_records, is_lmdb_folder, iter_records
from model_libs.datasets.synthetic import is_synthetic_folder, make_synthetic
from model_libs.fsutil import stale_temporaries

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
N_IMAGES = 240
KILLS, KILL_ROUNDS = 8, 14  # kills per command (24 in all), and the rounds allowed to land them


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "model_libs", *map(str, args)]


def _leftovers(folder: Path) -> list[str]:
    """Temporaries and lock files of killed writers in ``folder``."""
    names = [p.name for p in stale_temporaries(folder)]
    return names + [n for n in os.listdir(folder) if n.endswith(".lock")]


def _kill_at(cmd: list[str], delay: float) -> int | None:
    """Start ``cmd``, SIGKILL it after ``delay`` seconds; its exit status if it ended first."""
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return None


def _timed(cmd: list[str]) -> float:
    t = time.monotonic()
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return time.monotonic() - t


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "voc"
    make_synthetic(root, seed=5, n_train=N_IMAGES, n_test=2)
    return root


def test_kill_convert_then_rerun(tmp_path, voc_root, capsys):
    out, ns = tmp_path / "db", tmp_path / "ns.txt"
    args = ["convert", "voc", "--root", voc_root, "--sets", "Synth:trainval", "--out", out, "--name-size", ns]
    args += ["--labelmap", voc_root / "labelmap_synth.prototxt", "--no-progress", "--workers", "2"]
    ref, ref_ns = tmp_path / "ref", tmp_path / "ref_ns.txt"
    full = _timed(_cmd(*args[:7], ref, "--name-size", ref_ns, *args[10:]))
    want = list(iter_records(ref))
    rng = random.Random(1)
    stats = {"killed": 0, "finished first": 0, "left temporaries": 0, "output visible after kill": 0}
    for k in range(KILL_ROUNDS):
        if stats["killed"] == KILLS:
            break
        if k % 2 == 0:  # half the kills replace an existing output, half make a new one
            shutil.rmtree(out, ignore_errors=True)
            ns.unlink(missing_ok=True)
        rc = _kill_at(_cmd(*args, "--force"), rng.uniform(0.25, 0.95 * full))
        stats["killed" if rc is None else "finished first"] += 1
        stats["left temporaries"] += bool(_leftovers(tmp_path))
        if out.exists():  # visible: then complete, never partial
            stats["output visible after kill"] += 1
            assert is_lmdb_folder(out) and count_records(out) == N_IMAGES
        if ns.exists():
            assert len(ns.read_text().splitlines()) == N_IMAGES
        p = subprocess.run(_cmd(*args, "--force"), env=ENV, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert _leftovers(tmp_path) == [], "the re-run left stale temporaries or locks"
        assert list(iter_records(out)) == want
        assert ns.read_text() == ref_ns.read_text()
    with capsys.disabled():
        print(f"\nconvert ({full:.1f}s uninterrupted): {stats}")
    assert stats["killed"] == KILLS


def test_kill_synthetic_then_rerun(tmp_path, capsys):
    out = tmp_path / "syn"
    args = ["synthetic", "--out", out, "--train", 40, "--test", 10, "--seed", 2]
    ref = tmp_path / "ref"
    full = _timed(_cmd("synthetic", "--out", ref, *args[3:]))
    want = list(iter_records(ref / "lmdb" / "synth_trainval_lmdb"))
    rng = random.Random(2)
    stats = {"killed": 0, "finished first": 0, "left temporaries": 0, "output visible after kill": 0}
    for k in range(KILL_ROUNDS):
        if stats["killed"] == KILLS:
            break
        if k % 2 == 0:  # half the kills replace an existing output, half make a new one
            shutil.rmtree(out, ignore_errors=True)
        rc = _kill_at(_cmd(*args, "--force"), rng.uniform(0.25, 0.95 * full))
        stats["killed" if rc is None else "finished first"] += 1
        stats["left temporaries"] += bool(_leftovers(tmp_path))
        if out.exists():
            stats["output visible after kill"] += 1
            assert is_synthetic_folder(out)
            assert count_records(out / "lmdb" / "synth_trainval_lmdb") == 40
            assert count_records(out / "lmdb" / "synth_test_lmdb") == 10
            assert len((out / "test_name_size.txt").read_text().splitlines()) == 10
        p = subprocess.run(_cmd(*args, "--force"), env=ENV, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert _leftovers(tmp_path) == []
        assert list(iter_records(out / "lmdb" / "synth_trainval_lmdb")) == want
    with capsys.disabled():
        print(f"\nsynthetic ({full:.1f}s uninterrupted): {stats}")
    assert stats["killed"] == KILLS


def test_two_converters_on_one_output(tmp_path, voc_root, capsys):
    """Exactly one wins; the other says why; the output is complete."""
    args = ["convert", "voc", "--root", voc_root, "--sets", "Synth:trainval", "--no-progress"]
    args += ["--labelmap", voc_root / "labelmap_synth.prototxt", "--workers", "1"]
    _timed(_cmd(*args, "--out", tmp_path / "ref"))
    want = list(iter_records(tmp_path / "ref"))
    reasons = []
    for trial in range(6):
        out = tmp_path / f"db{trial}"
        procs = [
            subprocess.Popen(
                _cmd(*args, "--out", out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(2)
        ]
        results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
        codes = sorted(rc for rc, _ in results)
        assert codes == [0, 2], results
        err = next(e for rc, e in results if rc == 2)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}:"), err
        assert "is writing this LMDB now" in err or "already exists" in err, err
        reasons.append("locked" if "is writing" in err else "exists")
        assert list(iter_records(out)) == want
        assert _leftovers(tmp_path) == []
    with capsys.disabled():
        print(f"\ntwo converters, 6 trials: the loser was refused because the output was {reasons}")


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory, caffe_bin):
    sys.path.insert(0, str(ROOT / "examples" / "dsod"))
    from quickstart import design_net

    from model_libs.datasets.synthetic import build_synthetic_lmdbs

    base = tmp_path_factory.mktemp("train")
    data = build_synthetic_lmdbs(base / "data", seed=1, n_train=16, n_test=4)
    r = design_net(data, base, iters=80, batch=2, n_test=4, size=64)
    r.snapshot, r.test_interval, r.display, r.test_initialization = 2, 1000, 1, False
    return r, base


def _train(caffe_bin, solver, snapshot, log: Path, after: tuple[str, int] | None, delay: float) -> bool:
    """Run Caffe; with ``after=(what, n)`` kill it ``delay`` s after its ``n``-th line of
    ``what`` ("snapshot": "Snapshotting to binary proto file"; "iteration": a logged loss).
    Counting lines, not seconds, makes a kill land as far into the run on a fast machine as on
    a slow one. Returns True when it ran to its end."""
    marker = {
        "snapshot": re.compile("Snapshotting to binary proto file"),
        "iteration": re.compile(r"Iteration \d+.*, loss = "),
    }
    cmd = [caffe_bin, "train", f"--solver={solver}"] + ([f"--snapshot={snapshot}"] if snapshot else [])
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        seen = 0
        for line in p.stdout:
            f.write(line)
            if after is not None and marker[after[0]].search(line):
                seen += 1
                if seen >= after[1]:
                    time.sleep(delay)
                    p.send_signal(signal.SIGKILL)
                    break
        p.wait()
    return p.returncode == 0


def _first_iteration(log: Path) -> int | None:
    m = re.search(r"Iteration (\d+)(?: \([^)]*\))?, loss", log.read_text())
    return int(m.group(1)) if m else None


def test_kill_training_then_resume_from_the_newest_complete_snapshot(tiny_job, caffe_bin, tmp_path, capsys):
    from model_libs.errors import ModelLibsError
    from model_libs.recipes.cli import resume_snapshot
    from model_libs.recipes.job import write_job
    from model_libs.recipes.snapshots import check_snapshot, list_snapshots, newest_complete_snapshot

    r, _ = tiny_job
    job = write_job(r, tmp_path / "job", gpus=[], caffe_bin=caffe_bin)
    prefix = job.snapshot_prefix
    rng = random.Random(3)
    stats = {"kills": 0, "kills that left a damaged newest snapshot": 0, "resumes": 0}
    snapshot, started_at = None, {}  # run -> the iteration its snapshot holds
    for k in range(KILL_ROUNDS):
        if stats["kills"] == KILLS:
            break
        # half the kills land just after a "Snapshotting" line (0-4 ms: while Caffe writes
        # the caffemodel or the solverstate), half at a random moment of a random iteration
        at_snapshot = k % 2 == 0
        delay = rng.uniform(0, 0.004) if at_snapshot else rng.uniform(0, 0.05)
        after = ("snapshot", rng.randint(1, 3)) if at_snapshot else ("iteration", rng.randint(1, 6))
        if _train(caffe_bin, job.files["solver"], snapshot, tmp_path / f"run{k}.log", after, delay):
            break  # it reached the end before the kill
        stats["kills"] += 1
        choice = newest_complete_snapshot(prefix)
        stats["kills that left a damaged newest snapshot"] += bool(choice.skipped)
        # the chooser passed over only damaged snapshots: everything newer than its pick fails
        for s in list_snapshots(prefix):
            if choice.snapshot is None or s.iteration > choice.snapshot.iteration:
                with pytest.raises(ModelLibsError):
                    check_snapshot(s)
        if choice.snapshot is None:
            snapshot = None  # killed before the first complete snapshot: start again
            continue
        snapshot = resume_snapshot(prefix).state  # what --resume uses
        assert snapshot == choice.snapshot.state
        stats["resumes"] += 1
        started_at[k + 1] = choice.snapshot.iteration
    final = newest_complete_snapshot(prefix).snapshot
    log = tmp_path / "final.log"
    assert _train(caffe_bin, job.files["solver"], final.state if final else None, log, None, 600)
    assert "Optimization Done" in log.read_text()
    assert _first_iteration(log) == (final.iteration if final else 0)
    for k, it in started_at.items():  # every resumed run continued from its snapshot
        if (tmp_path / f"run{k}.log").exists() and _first_iteration(tmp_path / f"run{k}.log") is not None:
            assert _first_iteration(tmp_path / f"run{k}.log") == it
    last = newest_complete_snapshot(prefix)
    assert last.snapshot.iteration == r.max_iter and not last.skipped
    with capsys.disabled():
        print(f"\ntraining: {stats}")
    assert stats["kills"] == KILLS and stats["resumes"] >= KILLS // 2


def test_resume_passes_over_a_truncated_solverstate_with_real_caffe(tiny_job, caffe_bin, tmp_path):
    """A kill during a snapshot, made certain: the newest solverstate is cut short. Caffe
    itself would abort on it; the chooser takes the previous pair and Caffe resumes."""
    import copy

    from model_libs.recipes.cli import resume_snapshot
    from model_libs.recipes.job import write_job
    from model_libs.recipes.train import run_caffe

    r = copy.copy(tiny_job[0])
    r.max_iter = 6
    job = write_job(r, tmp_path / "job", gpus=[], caffe_bin=caffe_bin)
    cmd = [caffe_bin, "train", f"--solver={job.files['solver']}"]
    run_caffe(cmd, tmp_path / "first.log", r.max_iter)
    newest = Path(f"{job.snapshot_prefix}_iter_6.solverstate")
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    from model_libs.errors import ModelLibsError

    with pytest.raises(
        ModelLibsError,
        match=r"caffe was killed by SIGABRT: sgd_solver\.cpp:\d+\] Check failed: state\.history_size",
    ):  # what Caffe does with it
        run_caffe([*cmd, f"--snapshot={newest}"], tmp_path / "bad.log", r.max_iter)
    chosen = resume_snapshot(job.snapshot_prefix)
    assert chosen.iteration == 4
    log = run_caffe([*cmd, f"--snapshot={chosen.state}"], tmp_path / "resumed.log", r.max_iter)
    assert log.loss[0][0] == 4 and log.done
