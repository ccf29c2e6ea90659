"""End to end through the command line: the quickstart's net trained with
``python -m model_libs train --engine torch`` on the synthetic LMDBs (loss falls, the solver
tests, snapshots), its caffemodel loaded by OpenCV DNN and by Caffe; Caffe resumes the torch
snapshot (``--engine caffe --resume``) and the torch engine resumes Caffe's in turn.

Marked slow (about a minute on 2 cores); CI runs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests._engines_fixtures import detection_differences

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.torch, pytest.mark.caffe]
ITERS = 40


def _train(*args: str) -> subprocess.CompletedProcess:
    # One OpenMP thread: on a busy 2-core machine a second thread only spins (measured: 8 s
    # instead of 0.5 s per iteration of this net).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "model_libs", "train", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, caffe_bin):
    pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "examples" / "dsod"))
    from quickstart import design_net

    from model_libs.datasets.synthetic import build_synthetic_lmdbs
    from model_libs.recipes.job import write_job

    out = tmp_path_factory.mktemp("torch_e2e")
    data = build_synthetic_lmdbs(out / "data", seed=0, n_train=64, n_test=16, force=True, progress=None)
    r = design_net(data, out, ITERS, 8, 16)
    job = write_job(r, out / "job", gpus=[])
    proc = _train("--solver", str(job.files["solver"]), "--engine", "torch", "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job, data, proc


def test_loss_falls_tests_run_snapshots_written(trained):
    from model_libs.recipes.caffelog import parse_log

    job, _, _ = trained
    log = parse_log(job.files["log"])
    assert log.done
    first, last = log.loss[0][1], log.loss[-1][1]
    assert last < 0.7 * first, (first, last)
    assert [i for i, _ in log.maps] == [10, 20, 30, 40]  # test_interval = ITERS / 4
    assert all(0 <= m <= 1 for _, m in log.maps)
    prefix = job.snapshot_prefix
    for ext in ("caffemodel", "solverstate"):
        assert Path(f"{prefix}_iter_{ITERS}.{ext}").is_file()


def test_snapshot_loads_in_opencv_and_caffe(trained, caffe):
    """OpenCV DNN (through the toolkit's engine, which checks the caffemodel against the
    deploy net and rounds PriorBox sizes as Caffe does) and Caffe detect alike with it."""
    import cv2

    from model_libs.engines.caffe_engine import CaffeEngine
    from model_libs.engines.opencv_engine import OpenCVEngine

    job, data, _ = trained
    model = f"{job.snapshot_prefix}_iter_{ITERS}.caffemodel"
    images = sorted((data.source.root / data.source.dataset / "JPEGImages").glob("*.jpg"))[:2]
    mean = np.float32([104, 117, 123])
    x = np.stack([(cv2.resize(cv2.imread(str(p)), (128, 128)) - mean).transpose(2, 0, 1) for p in images])
    engines = [OpenCVEngine(job.files["deploy"], model), CaffeEngine(job.files["deploy"], model)]
    for i in range(2):
        ocv, ref = (e.forward(x[i : i + 1])["detection_out"] for e in engines)
        assert ocv.shape[-1] == 7 and (ref[..., 2] > 0.05).any()
        assert detection_differences(ocv, ref) == []


def test_engines_resume_each_other(trained):
    from model_libs.pytorch.solver import read_solverstate
    from model_libs.recipes.caffelog import parse_log

    job, _, _ = trained
    solver = str(job.files["solver"])
    # Caffe continues the torch snapshot for two iterations ...
    proc = _train("--solver", solver, "--engine", "caffe", "--resume", "--max-iter", str(ITERS + 2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = job.files["log"].read_text()
    assert f"Resuming from {job.snapshot_prefix}_iter_{ITERS}.solverstate" in text
    assert Path(f"{job.snapshot_prefix}_iter_{ITERS + 2}.solverstate").is_file()
    # ... and the torch engine continues Caffe's.
    proc = _train("--solver", solver, "--engine", "torch", "--resume", "--max-iter", str(ITERS + 4))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = parse_log(job.files["log"])
    assert Path(f"{job.snapshot_prefix}_iter_{ITERS + 4}.caffemodel").is_file()
    assert read_solverstate(f"{job.snapshot_prefix}_iter_{ITERS + 4}.solverstate").iter == ITERS + 4
    done = re.findall(r"solver\.cpp(?::\d+)?\] Optimization Done", job.files["log"].read_text())
    assert len(done) == 3  # torch, Caffe, torch
    # The rate after the stepvalues (0.7 and 0.9 of ITERS): base_lr * 0.1 ** 2.
    assert log.lr[-1][1] == pytest.approx(0.02 * 0.01)
