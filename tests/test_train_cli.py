"""``python -m model_libs train``: bad input is one ``error:`` line, exit status 2, and
nothing written (no log, no snapshot), for either engine."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from model_libs.__main__ import main
from model_libs.engines.caffemodel import make_blob, write_caffemodel
from model_libs.proto import caffe_pb2
from tests._train_support import write_job

ANNOTATED = """
name: "annotated"
layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: TRAIN }
  data_param { source: "%s" batch_size: 2 backend: LMDB }
  annotated_data_param { label_map_file: "%s" } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 2 kernel_size: 1 } }
"""


def _run(capsys, *argv: str) -> str:
    rc = main(["train", *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def job(tmp_path) -> Path:
    return write_job(tmp_path / "job", snapshot=1)


@pytest.mark.parametrize("engine", ["caffe", "torch"])
def test_missing_files(capsys, tmp_path, job, engine):
    before = _files(tmp_path)
    msg = _run(capsys, "--solver", str(tmp_path / "nope.prototxt"), "--engine", engine)
    assert "nope.prototxt" in msg
    job.with_name("solver_net.prototxt").rename(tmp_path / "moved.prototxt")
    msg = _run(capsys, "--solver", str(job), "--engine", engine)
    assert "train net" in msg and "solver_net.prototxt" in msg and "not found" in msg
    lmdb = tmp_path / "no_lmdb"
    labelmap = tmp_path / "labelmap.prototxt"
    labelmap.write_text('item { name: "bg" label: 0 }\n')
    (tmp_path / "job" / "solver_net.prototxt").write_text(ANNOTATED % (lmdb, labelmap))
    msg = _run(capsys, "--solver", str(job), "--engine", engine)
    assert "LMDB" in msg and str(lmdb) in msg
    assert _files(tmp_path) == sorted({*before, "moved.prototxt", "labelmap.prototxt"})


@pytest.mark.parametrize("engine", ["caffe", "torch"])
def test_weights_of_another_net(capsys, tmp_path, job, engine):
    other = caffe_pb2.NetParameter(name="other")
    layer = other.layer.add(name="elsewhere", type="Convolution")
    layer.blobs.append(make_blob(np.zeros((3, 3, 1, 1), np.float32)))
    write_caffemodel(tmp_path / "other.caffemodel", other)
    wrong = caffe_pb2.NetParameter(name="small")
    layer = wrong.layer.add(name="conv1", type="Convolution")
    layer.blobs.append(make_blob(np.zeros((7, 3, 3, 3), np.float32)))
    write_caffemodel(tmp_path / "wrong.caffemodel", wrong)
    before = _files(tmp_path)
    args = ("--solver", str(job), "--engine", engine, "--weights")
    msg = _run(capsys, *args, str(tmp_path / "other.caffemodel"))
    assert "other.caffemodel" in msg and "no layer matches" in msg
    msg = _run(capsys, *args, str(tmp_path / "wrong.caffemodel"))
    assert "wrong.caffemodel" in msg and "conv1" in msg
    assert _files(tmp_path) == before


def test_option_mixes_and_resume_without_snapshot(capsys, tmp_path, job):
    before = _files(tmp_path)
    msg = _run(capsys, "--solver", str(job), "--engine", "caffe", "--amp", "bf16")
    assert "--amp" in msg and "--engine torch" in msg
    msg = _run(capsys, "--solver", str(job), "--engine", "torch", "--resume")
    assert "--resume" in msg and "no complete snapshot" in msg
    msg = _run(capsys, "--solver", str(job), "--resume", "--weights", "x.caffemodel")
    assert "exclude" in msg
    msg = _run(capsys, "--solver", str(job), "--engine", "torch", "--max-iter", "-1")
    assert "--max-iter" in msg
    os.chmod(job.parent, 0o555)
    try:
        if not os.access(job.parent, os.W_OK):  # root ignores the mode
            msg = _run(capsys, "--solver", str(job), "--engine", "torch")
            assert "not writable" in msg
    finally:
        os.chmod(job.parent, 0o755)
    assert _files(tmp_path) == before


@pytest.mark.torch
def test_cuda_without_cuda(capsys, tmp_path, job):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = _files(tmp_path)
    msg = _run(capsys, "--solver", str(job), "--engine", "torch", "--device", "cuda")
    assert "--device cuda" in msg and "CUDA" in msg
    msg = _run(capsys, "--solver", str(job), "--engine", "torch", "--gpus", "0,1")
    assert "CUDA" in msg
    assert _files(tmp_path) == before
