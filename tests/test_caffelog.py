"""Caffe log parsing and plotting (lines in the formats Caffe's solver prints)."""

import io

import pytest

from model_libs.errors import ModelLibsError
from model_libs.recipes.caffelog import LogParser, log_table, parse_log, plot_log
from model_libs.recipes.plot import main as plot_main
from model_libs.recipes.train import run_caffe

LOG = """\
I1125 10:00:00.000 1 solver.cpp:58] Solving DSOD_tiny
I1125 10:00:01.000 1 solver.cpp:337] Iteration 0, Testing net (#0)
I1125 10:00:02.000 1 solver.cpp:538]     Test net output #0: detection_eval = 0.0012
I1125 10:00:03.000 1 solver.cpp:228] Iteration 0, loss = 21.5
I1125 10:00:03.000 1 solver.cpp:244]     Train net output #0: mbox_loss = 21.5 (* 1 = 21.5 loss)
I1125 10:00:03.000 1 sgd_solver.cpp:106] Iteration 0, lr = 0.04
I1125 10:00:09.000 1 solver.cpp:228] Iteration 10 (1.6 iter/s, 6.1s/10 iters), loss = 9.25
I1125 10:00:09.000 1 sgd_solver.cpp:106] Iteration 10, lr = 0.04
I1125 10:00:15.000 1 solver.cpp:454] Snapshotting to binary proto file run/M_iter_20.caffemodel
I1125 10:00:15.000 1 solver.cpp:337] Iteration 20, Testing net (#0)
I1125 10:00:16.000 1 solver.cpp:538]     Test net output #0: detection_eval = 0.4321
I1125 10:00:16.000 1 solver.cpp:228] Iteration 20, loss = 5.5
I1125 10:00:16.000 1 sgd_solver.cpp:106] Iteration 20, lr = 0.004
I1125 10:00:16.000 1 solver.cpp:322] Optimization Done.
"""


def test_parser_reads_loss_lr_map_and_snapshots():
    p = LogParser()
    kinds = [p.feed(line) for line in LOG.splitlines()]
    log = p.log
    assert log.loss == [(0, 21.5), (10, 9.25), (20, 5.5)]
    assert log.lr == [(0, 0.04), (10, 0.04), (20, 0.004)]
    assert log.maps == [(0, 0.0012), (20, 0.4321)]
    assert log.snapshots == ["run/M_iter_20.caffemodel"]
    assert log.done and log.last_iter == 20
    assert kinds.count("test") == 2  # the Train net output line is not a test result


def test_table_plot_and_command(tmp_path, capsys):
    path = tmp_path / "train.log"
    path.write_text(LOG)
    log = parse_log(path)
    table = log_table(log)
    assert "0.4321" in table and table.count("\n") == 3
    png = plot_log(log, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert plot_main([str(path), "--out", str(tmp_path / "q.png")]) == 0
    assert capsys.readouterr().out == f"{table}\nwrote {tmp_path / 'q.png'}\n"
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_main([str(tmp_path / "missing.log")]) == 2
    assert "missing.log: log not found" in capsys.readouterr().err


def test_runner_tees_the_log_and_reports_failures(tmp_path):
    script = tmp_path / "fake_caffe.sh"
    script.write_text('#!/bin/sh\ncat "$1"\nexit $2\n')
    script.chmod(0o755)
    src = tmp_path / "src.log"
    src.write_text(LOG)
    stream = io.StringIO()
    log = run_caffe([str(script), str(src), "0"], tmp_path / "out.log", max_iter=20, stream=stream)
    assert (tmp_path / "out.log").read_text() == LOG
    assert log.maps[-1] == (20, 0.4321)
    assert "iter 20/20 (100.0%)" in stream.getvalue() and "mAP 0.4321" in stream.getvalue()
    with pytest.raises(ModelLibsError, match="exited with status 3"):
        run_caffe([str(script), str(src), "3"], tmp_path / "bad.log", max_iter=20, stream=io.StringIO())
