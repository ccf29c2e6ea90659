"""Which snapshot a resume trusts (the newest complete pair), and why Caffe failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_libs.engines.caffemodel import make_blob
from model_libs.proto import caffe_pb2
from model_libs.recipes.caffelog import caffe_failure
from model_libs.recipes.snapshots import list_snapshots, newest_complete_snapshot
from model_libs.recipes.train import failure_message

SHAPES = {"conv1": [(4, 3, 3, 3), (4,)], "bn1": [(4,), (4,), (1,)]}


def _write_pair(prefix: Path, it: int, adam: bool = False) -> tuple[Path, Path]:
    model = caffe_pb2.NetParameter(name="n")
    history = []
    rng = np.random.default_rng(it)
    for name, shapes in SHAPES.items():
        layer = model.layer.add(name=name, type="Convolution" if name == "conv1" else "BatchNorm")
        for s in shapes:
            layer.blobs.append(make_blob(rng.standard_normal(s)))
            history.append(make_blob(np.zeros(s)))
    m = Path(f"{prefix}_iter_{it}.caffemodel")
    m.write_bytes(model.SerializeToString())
    state = caffe_pb2.SolverState(iter=it, learned_net=str(m), current_step=0)
    state.history.extend(history * (2 if adam else 1))
    s = Path(f"{prefix}_iter_{it}.solverstate")
    s.write_bytes(state.SerializeToString())
    return m, s


def test_newest_complete_pair_is_chosen(tmp_path):
    prefix = tmp_path / "job"
    for it in (10, 20, 30):
        _write_pair(prefix, it)
    choice = newest_complete_snapshot(prefix)
    assert choice.snapshot.iteration == 30 and not choice.skipped
    assert choice.describe() == f"iteration 30 ({prefix}_iter_30.solverstate)"
    _write_pair(tmp_path / "adam", 5, adam=True)
    assert newest_complete_snapshot(tmp_path / "adam").snapshot.iteration == 5


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("truncate_state", "solverstate is truncated or damaged"),
        ("cut_history", "history blobs for 5 parameter blobs"),
        ("no_state", "no state file"),
        ("truncate_model", "caffemodel is truncated or damaged"),
        ("empty_model", "caffemodel is empty"),
        ("wrong_iter", "holds iteration 20, its name says 30"),
        ("other_model", "belongs to"),
        ("missing_model_file", "does not exist"),
    ],
)
def test_damaged_newest_snapshot_is_skipped_with_the_reason(tmp_path, damage, reason):
    prefix = tmp_path / "job"
    _write_pair(prefix, 20)
    m, s = _write_pair(prefix, 30)
    if damage == "truncate_state":  # a kill while Caffe wrote the solverstate
        s.write_bytes(s.read_bytes()[: len(s.read_bytes()) // 2 + 3])
    elif damage == "cut_history":  # cut at a field boundary: parses, but too short
        st = caffe_pb2.SolverState.FromString(s.read_bytes())
        del st.history[-2:]
        s.write_bytes(st.SerializeToString())
    elif damage == "no_state":  # killed between the caffemodel and the solverstate
        s.unlink()
    elif damage == "truncate_model":
        m.write_bytes(m.read_bytes()[:-7])
    elif damage == "empty_model":
        m.write_bytes(b"")
    elif damage == "wrong_iter":
        s.write_bytes((tmp_path / "job_iter_20.solverstate").read_bytes())
    elif damage == "other_model":
        st = caffe_pb2.SolverState.FromString(s.read_bytes())
        st.learned_net = str(tmp_path / "job_iter_20.caffemodel")
        s.write_bytes(st.SerializeToString())
    elif damage == "missing_model_file":
        st = caffe_pb2.SolverState.FromString(s.read_bytes())
        st.learned_net = str(tmp_path / "gone.caffemodel")
        s.write_bytes(st.SerializeToString())
    choice = newest_complete_snapshot(prefix)
    assert choice.snapshot is not None and choice.snapshot.iteration == 20
    assert [k.iteration for k, _ in choice.skipped] == [30]
    assert reason in choice.skipped[0][1]
    assert "skipped newer damaged snapshots: iteration 30" in choice.describe()


def test_scoring_needs_only_a_complete_caffemodel(tmp_path):
    prefix = tmp_path / "job"
    _write_pair(prefix, 10)
    _, s = _write_pair(prefix, 20)
    s.unlink()
    assert newest_complete_snapshot(prefix, state_check=None).snapshot.iteration == 20
    assert newest_complete_snapshot(prefix).snapshot.iteration == 10


def test_no_snapshot_at_all(tmp_path):
    assert list_snapshots(tmp_path / "nothing" / "job") == []
    choice = newest_complete_snapshot(tmp_path / "job")
    assert choice.snapshot is None and choice.describe() == "no complete snapshot"


def test_list_snapshots_keeps_other_prefixes_apart(tmp_path):
    _write_pair(tmp_path / "job", 1)
    _write_pair(tmp_path / "job_b", 2)
    (tmp_path / "job_iter_3.caffemodel.tmp").write_bytes(b"")
    assert [s.iteration for s in list_snapshots(tmp_path / "job")] == [1]


FATAL = (
    "F1126 10:02:34.378959 25392 sgd_solver.cpp:316] Check failed: state.history_size() == "
    "history_.size() (180 vs. 232) Incorrect length of history blobs."
)
LOG = f"""I1126 10:02:33.0 25392 caffe.cpp:218] Using GPUs 0
I1126 10:02:34.378 25392 solver.cpp:60] Initializing solver
{FATAL}
*** Check failure stack trace: ***
    @     0x7f00 google::LogMessage::Fail()
F1126 10:02:34.5 25392 other.cpp:1] a second fatal line
"""


def test_caffe_failure_names_the_first_fatal_line():
    assert caffe_failure(LOG.splitlines()) == (
        "sgd_solver.cpp:316] Check failed: state.history_size() == history_.size() (180 vs. 232) "
        "Incorrect length of history blobs."
    )
    assert caffe_failure(["I0101 00:00:00.0 1 x.cpp:1] fine", "W0101 00:00:00.0 1 x.cpp:2] warn"]) is None
    newer_glog = "F20261126 10:02:34.378959 25392 solver.cpp:1] Check failed: x"  # glog >= 0.6: the year too
    assert (
        caffe_failure(["I20261126 10:02:33.0 25392 caffe.cpp:1] ok", newer_glog])
        == "solver.cpp:1] Check failed: x"
    )
    # an unformatted check line (pycaffe prints) is found too
    assert caffe_failure(["noise", "Check failed: a == b"]) == "Check failed: a == b"


def test_failure_message_reads_only_this_runs_lines(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("F1126 10:00:00.0 1 old.cpp:1] Check failed: an earlier run\n" + LOG)
    msg = failure_message(134, log, first_line=1)
    assert msg.startswith(f"{log}: caffe exited with status 134: sgd_solver.cpp:316] Check failed")
    assert "earlier run" not in msg and "\n" not in msg
    log.write_text("I1126 10:00:00.0 1 a.cpp:1] working\nI1126 10:00:00.0 1 a.cpp:2] last words\n")
    assert (
        failure_message(-9, log)
        == f"{log}: caffe was killed by SIGKILL: I1126 10:00:00.0 1 a.cpp:2] last words"
    )
