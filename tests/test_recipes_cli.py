"""The example scripts' command line: files written, official fields, bad arguments."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format

from model_libs import caffe_pb2
from model_libs.__main__ import main as cli_main
from model_libs.dsod import recipe
from model_libs.recipes.cli import main
from model_libs.recipes.gpus import parse_gpus
from model_libs.recipes.job import list_snapshots, prune_snapshots

VOC_MODELS = ("DSOD300", "DSOD300_lite", "DSOD300_smallest", "DSOD512")
ROOT = Path(__file__).resolve().parents[1]


def _read(path, message):
    return text_format.Parse(Path(path).read_text(), message)


def test_dry_run_writes_the_official_files(tmp_path):
    out = tmp_path / "job"
    assert main(["--dry-run", "--gpus", "0,1,2,3,4,5,6,7", "--out", str(out)], "VOC0712", VOC_MODELS) == 0
    name = "DSOD300_VOC0712_DSOD300_300x300"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["train.prototxt", "test.prototxt", "deploy.prototxt", "solver.prototxt", f"{name}.sh"]
    )
    solver = _read(out / "solver.prototxt", caffe_pb2.SolverParameter())
    assert solver.train_net == str(out / "train.prototxt")
    assert solver.snapshot_prefix == str(out / name)
    assert solver.iter_size == 4 and solver.device_id == 0
    train = _read(out / "train.prototxt", caffe_pb2.NetParameter())
    assert train.name == f"{name}_train" and train.layer[0].data_param.batch_size == 4
    script = (out / f"{name}.sh").read_text()
    assert "train \\\n--solver=" in script and "--gpu 0,1,2,3,4,5,6,7" in script
    assert f"tee {out / name}.log" in script
    assert os.access(out / f"{name}.sh", os.X_OK)


def test_cpu_job_has_no_gpu_flag(tmp_path):
    assert main(["--dry-run", "--gpus", "cpu", "--out", str(tmp_path)], "VOC0712", VOC_MODELS) == 0
    solver = _read(tmp_path / "solver.prototxt", caffe_pb2.SolverParameter())
    assert solver.solver_mode == caffe_pb2.SolverParameter.CPU and solver.iter_size == 4
    assert "--gpu" not in next(tmp_path.glob("*.sh")).read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "YOLO"], "unknown model"),
        (["--gpus", "0,x"], "not a GPU id"),
        (["--gpus", "1,1"], "twice"),
        (["--size", "12"], "impossible"),
        (["--resume"], "no complete snapshot"),
    ],
)
def test_bad_arguments_fail_clearly_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(args + ["--dry-run", "--out", str(out)], "VOC0712", VOC_MODELS) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_out_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--dry-run", "--out", str(blocker / "sub")], "VOC0712", VOC_MODELS) == 2
    assert "cannot create job folder" in capsys.readouterr().err


def test_missing_lmdb_is_reported_before_training(tmp_path, capsys):
    code = main(
        [
            "--gpus",
            "cpu",
            "--out",
            str(tmp_path / "o"),
            "--data-root",
            str(tmp_path),
            "--caffe",
            "/bin/false",
        ],
        "VOC0712",
        VOC_MODELS,
    )
    assert code == 2
    err = capsys.readouterr().err
    lmdb = recipe("DSOD300", "VOC0712", data_root=str(tmp_path)).train_data
    assert str(tmp_path) in lmdb and err == f"error: {lmdb}: training LMDB not found\n"
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_gpu_parsing():
    assert parse_gpus("0, 1,3") == [0, 1, 3]
    assert parse_gpus("cpu") == [] and parse_gpus(None) is None


def test_snapshot_listing_and_pruning(tmp_path):
    prefix = tmp_path / "M"
    for it in (100, 2000, 300):
        (tmp_path / f"M_iter_{it}.solverstate").write_bytes(b"s")
        (tmp_path / f"M_iter_{it}.caffemodel").write_bytes(b"m")
    (tmp_path / "Other_iter_5.solverstate").write_bytes(b"s")
    assert [s[0] for s in list_snapshots(prefix)] == [100, 300, 2000]
    removed = prune_snapshots(prefix, keep=1)
    assert len(removed) == 4
    assert [s[0] for s in list_snapshots(prefix)] == [2000]
    assert (tmp_path / "Other_iter_5.solverstate").exists()


def test_example_scripts_run_as_scripts(tmp_path):
    for script, name in (
        ("examples/grp_dsod/GRP_DSOD320_pascal.py", "GRP_DSOD320_v2_gate"),
        ("examples/dsod/DSOD300_coco.py", "DSOD300_coco"),
        ("examples/dsod/DSOD300_pascal++.py", "DSOD300_VOC0712Plus"),
    ):
        out = tmp_path / Path(script).stem
        subprocess.run(
            [sys.executable, str(ROOT / script), "--dry-run", "--gpus", "0,1", "--out", str(out)],
            check=True,
            capture_output=True,
            cwd=tmp_path,
        )
        assert any(p.name.startswith(name) and p.suffix == ".sh" for p in out.iterdir())


def test_summary_command(tmp_path, capsys):
    main(["--dry-run", "--gpus", "cpu", "--out", str(tmp_path)], "VOC0712", VOC_MODELS)
    capsys.readouterr()
    assert cli_main(["summary", str(tmp_path / "deploy.prototxt")]) == 0
    out = capsys.readouterr().out
    assert "stored values: 14,795,828" in out and "prior boxes: 8,744" in out
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: 'x' type: 'Convolution' oops }")
    assert cli_main(["summary", str(bad)]) == 2
    assert "not a valid net prototxt" in capsys.readouterr().err


# Per-device batch and iter_size for uneven GPU counts, worked out by hand from the official
# scripts' rule: per_device = ceil(batch / n), iter_size = ceil(128 / (per_device * n)).
@pytest.mark.parametrize(
    "model, gpus, per_device, iter_size",
    [
        ("DSOD300", "0,1,2", 11, 4),  # batch 32: 33 images per step
        ("DSOD300", "3,4,5,6,7", 7, 4),  # 35 per step
        ("DSOD300", "0,1,2,3,4,5", 6, 4),  # 36 per step
        ("DSOD512", "0,1,2", 6, 8),  # batch 16: 18 per step
        ("DSOD512", "0,1,2,3,4", 4, 7),  # 20 per step
        ("GRP_DSOD320", "2,3,5", 16, 3),  # batch 48: 48 per step
        ("GRP_DSOD320", "0,1,2,3,4", 10, 3),  # 50 per step
        ("GRP_DSOD320", "0,1,2,3,4,5", 8, 3),  # 48 per step
    ],
)
def test_uneven_gpu_splits_as_the_official_scripts(tmp_path, model, gpus, per_device, iter_size):
    out = tmp_path / "job"
    models = ("GRP_DSOD320",) if model == "GRP_DSOD320" else VOC_MODELS
    assert main(["--model", model, "--gpus", gpus, "--dry-run", "--out", str(out)], "VOC0712", models) == 0
    train = _read(out / "train.prototxt", caffe_pb2.NetParameter())
    assert train.layer[0].data_param.batch_size == per_device
    solver = _read(out / "solver.prototxt", caffe_pb2.SolverParameter())
    assert solver.iter_size == iter_size
    assert solver.solver_mode == caffe_pb2.SolverParameter.GPU
    assert solver.device_id == int(gpus.split(",")[0])
    assert f"--gpu {gpus}" in next(out.glob("*.sh")).read_text()
    test = _read(out / "test.prototxt", caffe_pb2.NetParameter())
    assert test.layer[0].data_param.batch_size == 2  # the test batch is not split


def test_engine_torch_dry_run_and_refusals(tmp_path, capsys):
    """--engine torch writes the same job (the split for the GPUs given); torch-only options
    with --engine caffe, and missing LMDBs with --engine torch, stop before anything is written."""
    out = tmp_path / "t"
    args = ["--engine", "torch", "--gpus", "0,1", "--dry-run", "--out", str(out)]
    assert main(args, "VOC0712", VOC_MODELS) == 0
    same = tmp_path / "c"
    assert main(["--gpus", "0,1", "--dry-run", "--out", str(same)], "VOC0712", VOC_MODELS) == 0
    assert (out / "solver.prototxt").read_text() == (same / "solver.prototxt").read_text().replace(
        str(same), str(out)
    )
    capsys.readouterr()
    never = tmp_path / "never"
    assert main(["--amp", "bf16", "--dry-run", "--out", str(never)], "VOC0712", VOC_MODELS) == 2
    assert "--amp: only with --engine torch" in capsys.readouterr().err
    args = ["--engine", "torch", "--gpus", "cpu", "--out", str(never), "--data-root", str(tmp_path)]
    code = main(args, "VOC0712", VOC_MODELS)
    assert code == 2 and "training LMDB not found" in capsys.readouterr().err
    assert not never.exists()
