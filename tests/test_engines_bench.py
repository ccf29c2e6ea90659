"""bench/bench_deploy.py runs and reports images/s, GFLOP/s and the ratio to peak."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path


def test_bench_deploy_smoke(tmp_path, capsys):
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_deploy.py"
    spec = importlib.util.spec_from_file_location("bench_deploy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "b.json"
    assert (
        mod.main(
            [
                "--model",
                "DSOD300_smallest",
                "--batches",
                "1",
                "2",
                "--seconds",
                "0",
                "--engines",
                "opencv",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "images/s" in text and "GFLOP/s" in text and "peak" in text
    data = json.loads(out.read_text())
    assert data["cpu"]["peak_gflops"] > 0
    rows = [r for r in data["results"] if r["available"]]
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["images_per_s"] > 0 and 0 < r["peak_ratio"] < 1.5
        assert abs(r["gflops"] - r["images_per_s"] * data["gflops_per_image"]) < 1e-6
