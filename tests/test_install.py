"""A non-editable install needs no checkout: the schema and label maps ship in the package,
and every official job generates from an unrelated directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from google.protobuf import text_format

from model_libs.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[1]

# ``python -m model_libs job`` for every released model/dataset pair (in one process: the
# command's own entry point, called once per job).
GENERATE = """
import json, sys
import model_libs
from model_libs.__main__ import main
from model_libs.dsod.models import VARIANTS

jobs = []
for model, v in VARIANTS.items():
    for dataset in v.datasets:
        out = f"jobs/{model}_{dataset}"
        argv = ["job", "--model", model, "--dataset", dataset, "--gpus", "0,1,2,3", "--out", out]
        if main(argv) != 0:
            sys.exit(f"{model} {dataset} failed")
        jobs.append(out)
print(json.dumps({"package": model_libs.__file__, "jobs": jobs}))
"""


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
    return res


def test_installed_package_generates_every_official_job(tmp_path):
    # Build the wheel from a copy of the sources: setuptools writes build/ and *.egg-info
    # next to them, and the checkout's build/ is the Caffe build.
    src = tmp_path / "src"
    shutil.copytree(REPO / "model_libs", src / "model_libs", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "whl"), "."],
        cwd=src,
    )
    wheel = next((tmp_path / "whl").glob("model_libs-*.whl"))

    # A fresh virtualenv; the dependencies (protobuf, numpy) come from the running environment
    # by a path entry (offline), the package itself only from the wheel.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    site = next((venv / "lib").glob("python3.*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    # without the caller's PYTHONPATH: pip would take a checkout on it (with its egg-info) for
    # an installed model_libs and skip the wheel
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAFFE_ROOT")}
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], env=env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = _run([str(python), "-c", GENERATE], cwd=elsewhere, env=env)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).is_relative_to(site)
    assert len(report["jobs"]) == 13  # 4 DSOD variants x 3 datasets + GRP_DSOD320 on VOC0712

    for job in report["jobs"]:
        out = elsewhere / job
        texts = {p.name: p.read_text() for p in out.iterdir()}
        assert {"train.prototxt", "test.prototxt", "deploy.prototxt", "solver.prototxt"} <= set(texts)
        assert not any(str(REPO) in t for t in texts.values()), job  # nothing from the checkout
        train = text_format.Parse(texts["train.prototxt"], caffe_pb2.NetParameter())
        labelmap = Path(train.layer[0].annotated_data_param.label_map_file)
        assert labelmap.is_relative_to(site / "model_libs" / "data") and labelmap.is_file(), job
        assert train.layer[0].data_param.source.startswith("data/")  # --data-root's default, as given
        solver = text_format.Parse(texts["solver.prototxt"], caffe_pb2.SolverParameter())
        assert solver.train_net == str(out / "train.prototxt")

    # the installed schema and the summary command work from there too
    res = _run(
        [str(python), "-m", "model_libs", "summary", str(elsewhere / "jobs/DSOD300_VOC0712/deploy.prototxt")],
        cwd=elsewhere,
        env=env,
    )
    assert "stored values: 14,795,828" in res.stdout
    assert (site / "model_libs" / "proto" / "caffe.proto").is_file()
