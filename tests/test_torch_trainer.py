"""The torch trainer against pycaffe's solver on the same solver, net and fixed batches:
blobs after several iterations (momentum, weight decay, lr/decay multipliers, a frozen
blob, iter_size 2, a learning-rate change, BatchNorm statistics), snapshots that each engine
resumes from the other's, Caffe's log lines, and DDP (2 gloo ranks x batch b = 1 process x
batch b x iter_size 2)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from model_libs.recipes.caffelog import LogParser
from model_libs.recipes.solver_job import load_solver_job
from tests._train_support import batches, ddp_rank, torch_batches, write_job

torch = pytest.importorskip("torch")

from model_libs.pytorch.solver import read_solverstate  # noqa: E402
from model_libs.pytorch.trainer import CaffeLog, Trainer, TrainOptions  # noqa: E402

pytestmark = pytest.mark.torch
TOL = 1e-5  # relative L2 per blob, ||w - w_caffe|| / ||w_caffe||


@pytest.fixture(autouse=True)
def _one_thread():
    # Two cores shared by many processes: OpenMP's second thread only adds waiting here.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _caffe_solver(caffe, solver: Path, batch: dict[str, np.ndarray]):
    s = caffe.get_solver(str(solver))
    for k, v in batch.items():
        s.net.blobs[k].data[...] = v
    return s


def _torch_blobs(trainer: Trainer) -> dict[tuple[str, int], np.ndarray]:
    return {(layer, i): t.detach().numpy().copy() for layer, i, t, _, _ in trainer.net.named_blobs()}


def _compare(trainer: Trainer, caffe_net, moved_from: dict | None = None) -> dict[str, float]:
    """Every blob within TOL of Caffe's; returns the observed differences."""
    seen = {}
    for (layer, i), a in _torch_blobs(trainer).items():
        c = caffe_net.params[layer][i].data
        seen[f"{layer}/{i}"] = _rel(a.reshape(c.shape), c)
        if moved_from is not None and layer != "conv2":
            assert _rel(c, moved_from[(layer, i)].reshape(c.shape)) > 1e-4, f"{layer}/{i} did not change"
    worst = max(seen, key=seen.get)
    assert seen[worst] < TOL, f"{worst}: relative L2 difference {seen[worst]:.2e} (all: {seen})"
    return seen


def _require_bn_mask() -> None:
    """The project's Caffe masks BatchNorm statistics from the solver (patch 0011) only
    since that patch; an older build decays them and cannot match."""
    from model_libs.caffe_env import find_caffe

    inst = find_caffe()
    patches = inst.build_info.get("patches", []) if inst is not None and inst.origin == "project" else None
    if patches is not None and not any(p.startswith("0011-batchnorm") for p in patches):
        pytest.fail(f"the Caffe in use ({inst.root}) predates caffe/patches/0011-*: rebuild it")


@pytest.mark.caffe
def test_iterations_match_caffe(caffe, tmp_path):
    _require_bn_mask()
    solver = write_job(tmp_path, max_iter=4)
    batch = batches(4, 1)[0]
    s = _caffe_solver(caffe, solver, batch)
    init = tmp_path / "init.caffemodel"
    s.net.save(str(init))
    init_blobs = {(n, i): b.data.copy() for n in s.net.params for i, b in enumerate(s.net.params[n])}
    s.step(4)
    job = load_solver_job(solver)
    trainer = Trainer(
        job, TrainOptions(weights=str(init), channels_last=False), train_batches=torch_batches([batch])
    )
    trainer.step(4)
    assert trainer.iter == 4 and trainer.solver.current_step == 2
    _compare(trainer, s.net, init_blobs)
    # The frozen conv (lr_mult 0) stays put in both engines; BN statistics are not decayed.
    assert np.array_equal(s.net.params["conv2"][0].data, init_blobs[("conv2", 0)])
    bn_s = float(s.net.params["bn1"][2].data[0])
    assert bn_s == pytest.approx(sum(0.9**k for k in range(8)), rel=1e-6)  # 8 passes, maf 0.9


@pytest.mark.caffe
def test_snapshots_resume_across_engines(caffe, tmp_path):
    _require_bn_mask()
    batch = batches(4, 1)[0]
    t_solver = write_job(tmp_path / "t", name="torch", max_iter=3, snapshot=2)
    c_solver = write_job(tmp_path / "c", name="caffe", max_iter=3, snapshot=2)
    s = _caffe_solver(caffe, c_solver, batch)
    init = tmp_path / "init.caffemodel"
    s.net.save(str(init))

    # torch: 2 iterations, snapshot; Caffe resumes the torch snapshot for the third.
    lines: list[str] = []
    job = load_solver_job(t_solver)
    t = Trainer(
        job,
        TrainOptions(weights=str(init), channels_last=False),
        log=CaffeLog([lines.append]),
        train_batches=torch_batches([batch]),
    )
    t.step(2)
    model, state = tmp_path / "t" / "torch_iter_2.caffemodel", tmp_path / "t" / "torch_iter_2.solverstate"
    assert model.is_file() and state.is_file()
    assert read_solverstate(state).iter == 2 and read_solverstate(state).current_step == 1
    c2 = _caffe_solver(caffe, c_solver, batch)
    c2.restore(str(state))
    assert c2.iter == 2
    c2.step(1)
    t.step(1)
    _compare(t, c2.net)

    # Caffe: 2 iterations, snapshot; torch resumes the Caffe snapshot for the third.
    s.step(2)
    s.snapshot()
    c_state = tmp_path / "c" / "caffe_iter_2.solverstate"
    lines.clear()
    resumed = Trainer(
        load_solver_job(c_solver),
        TrainOptions(resume=str(c_state), channels_last=False),
        log=CaffeLog([lines.append]),
        train_batches=torch_batches([batch]),
    )
    assert resumed.iter == 2 and resumed.solver.current_step == 1
    resumed.step(1)
    s.step(1)
    _compare(resumed, s.net)
    parser = LogParser()
    for line in lines:
        parser.feed(line)
    # Iteration 2 runs at the rate of step 1 (0.01 * 0.2), restored from Caffe's state.
    assert parser.log.lr == [(2, pytest.approx(0.002))]
    assert any("Restoring previous solver status from" in line for line in lines)


def test_solve_log_reads_as_caffe_log(tmp_path):
    solver = write_job(tmp_path, max_iter=4, display=2, snapshot=2)
    lines: list[str] = []
    trainer = Trainer(
        load_solver_job(solver),
        TrainOptions(channels_last=False),
        log=CaffeLog([lines.append]),
        train_batches=torch_batches(batches(4, 3)),
    )
    trainer.solve()
    parser = LogParser()
    kinds = [parser.feed(line) for line in lines]
    log = parser.log
    assert [i for i, _ in log.loss] == [0, 2, 4]  # the last one from Solve's final forward pass
    assert log.lr == [(0, pytest.approx(0.01)), (2, pytest.approx(0.002))]
    assert log.done and kinds[-1] == "done"
    names = sorted(Path(p).name for p in log.snapshots)
    assert names == [f"solver_iter_{i}.{e}" for i in (2, 4) for e in ("caffemodel", "solverstate")]
    for p in log.snapshots:
        assert Path(p).is_file()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
    assert all(line.startswith("I") and "] " in line for line in lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> dict:
    """Both DDP configurations in one pair of gloo processes (starting them is the slow part):

    - ``plain``: 2 ranks x batch 4, iter_size 1, against 1 process x batch 4 x iter_size 2
      over the same two batches;
    - ``sync``: 2 ranks x batch 4 with ``--sync-bn``, against 1 process x batch 8.
    """
    import torch.multiprocessing as mp

    from model_libs.pytorch.weights import save_caffemodel

    tmp = tmp_path_factory.mktemp("ddp")
    arrays = batches(4, 2)
    whole = {k: np.concatenate([arrays[0][k], arrays[1][k]]) for k in arrays[0]}
    singles, runs = {}, []
    for name, batch, iter_size, data in (("plain", 4, 2, arrays), ("sync", 8, 1, [whole])):
        one = Trainer(
            load_solver_job(write_job(tmp / name / "single", batch=batch, iter_size=iter_size, max_iter=2)),
            TrainOptions(channels_last=False),
            train_batches=torch_batches(data),
        )
        init = tmp / name / "init.caffemodel"
        save_caffemodel(one.net, init)
        singles["init"] = _torch_blobs(one)
        one.step(2)
        singles[name] = _torch_blobs(one)
        ranked = write_job(tmp / name / "ranked", batch=4, iter_size=1, max_iter=2)
        runs.append((str(ranked), str(init), str(tmp / name), name == "sync"))
    mp.spawn(ddp_rank, args=(2, _free_port(), runs), nprocs=2)
    ranks = {name: [dict(np.load(tmp / name / f"rank{r}.npz")) for r in (0, 1)] for name in ("plain", "sync")}
    out = {name: (singles[name], *ranks[name]) for name in ranks}
    out["init"] = singles["init"]
    return out


def test_ddp_two_ranks_equal_one_process_with_iter_size_2(ddp):
    one, r0, r1 = ddp["plain"]
    for (layer, i), a in one.items():
        key = f"{layer}/{i}"
        if layer == "bn1":
            # Rank 0's statistics, from its own batch (as Caffe's root solver keeps them),
            # broadcast to rank 1 before every forward pass.
            continue
        assert np.array_equal(r0[key], r1[key]), key
        assert _rel(r0[key], a) < TOL, f"{key}: {_rel(r0[key], a):.2e}"
    assert _rel(r0["conv1/0"], ddp["init"][("conv1", 0)]) > 1e-3  # training moved the weights


def test_sync_bn_two_ranks_equal_one_process_with_the_whole_batch(ddp):
    one, r0, r1 = ddp["sync"]
    for (layer, i), a in one.items():
        key = f"{layer}/{i}"
        # BatchNorm statistics too: every rank normalised with the global batch's moments.
        assert _rel(r0[key], a) < TOL, f"{key}: {_rel(r0[key], a):.2e}"
        assert _rel(r1[key], a) < TOL, f"{key}: {_rel(r1[key], a):.2e}"
