"""bench/bench_data.py runs and reports images/s of both engines' data paths."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def test_bench_data_smoke(tmp_path, capsys, monkeypatch):
    # bench_data quiets glog through os.environ; keep that from leaking into later tests'
    # Caffe subprocesses (their logs would lose the INFO lines the log parser reads).
    monkeypatch.setenv("GLOG_minloglevel", "2")
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_data.py"
    spec = importlib.util.spec_from_file_location("bench_data", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "b.json"
    args = ["--records", "4", "--batches", "1", "--workers", "0", "--no-caffe", "--json", str(out)]
    assert mod.main(args) == 0
    assert "images/s" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert {(r["transform"], r["cache"]) for r in rows} == {
        (t, c) for t in ("ssd300", "light128") for c in (True, False)
    }
    assert all(r["images_per_s"] > 0 and r["engine"] == "torch" for r in rows)
