"""The torch engine's SGD solver against the project's Caffe: learning-rate policies (read
from Caffe's own log), the update rule (momentum, L1/L2 decay, multipliers, lr_mult 0,
iter_size, clip_gradients, a rate change) and the solverstate format, both ways."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from model_libs.errors import ModelLibsError
from model_libs.proto import caffe_pb2
from model_libs.recipes.caffelog import parse_log
from model_libs.recipes.solver_job import read_solver_file as read_solver

torch = pytest.importorskip("torch")
F = torch.nn.functional

from model_libs.pytorch.solver import (  # noqa: E402
    CaffeSGD,
    SolverBlob,
    learning_rate,
    read_solverstate,
)

pytestmark = pytest.mark.torch

# A tiny MLP fed by MemoryData (batches in order): ip1 (lr 1/decay 1, bias lr 2/decay 0) ->
# ReLU -> ip2 (weight lr_mult 0 / decay 1, bias lr 1 / decay 2) -> EuclideanLoss.
MLP = """
name: "mlp"
layer { name: "data" type: "MemoryData" top: "data" top: "label"
  memory_data_param { batch_size: 4 channels: 6 height: 1 width: 1 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 5 weight_filler { type: "xavier" }
    bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 0 decay_mult: 1 } param { lr_mult: 1 decay_mult: 2 }
  inner_product_param { num_output: 1 weight_filler { type: "xavier" }
    bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
BATCH, STEPS, ITER_SIZE = 4, 4, 2


def _solver_text(net: Path, **extra) -> str:
    fields = dict(
        train_net=f'"{net}"',
        base_lr=0.05,
        lr_policy='"multistep"',
        stepvalue=[1, 3],
        gamma=0.3,
        momentum=0.9,
        weight_decay=0.02,
        iter_size=ITER_SIZE,
        max_iter=STEPS,
        display=1,
        random_seed=3,
        solver_mode="CPU",
        snapshot_after_train="false",
    )
    fields.update(extra)
    lines = []
    for k, v in fields.items():
        for item in v if isinstance(v, list) else [v]:
            lines.append(f"{k}: {item}")
    return "\n".join(lines) + "\n"


def _mlp_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 1, 1)).astype(np.float32)
    y = (x[:, :3].sum(axis=1, keepdims=True) + 0.1).astype(np.float32)
    return x, y


def _torch_mlp_steps(
    param: caffe_pb2.SolverParameter, init: list[np.ndarray], x: np.ndarray, y: np.ndarray
) -> list[np.ndarray]:
    """Run the same MLP in torch with CaffeSGD; gradients by autograd."""
    tensors = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    mults = [(1, 1), (2, 0), (0, 1), (1, 2)]
    blobs = [SolverBlob(f"b{i}", t, lr, dm) for i, (t, (lr, dm)) in enumerate(zip(tensors, mults))]
    for b in blobs:
        b.tensor.requires_grad_(b.lr_mult != 0)
    solver = CaffeSGD(param, blobs)
    xs = torch.from_numpy(x.reshape(len(x), -1))
    ys = torch.from_numpy(y.reshape(len(y), -1))
    pos = 0
    for _ in range(param.max_iter):
        solver.zero_grad()
        for _ in range(param.iter_size):
            xb, yb = xs[pos : pos + BATCH], ys[pos : pos + BATCH]
            pos += BATCH
            h = F.relu(F.linear(xb, tensors[0], tensors[1]))
            out = F.linear(h, tensors[2], tensors[3])
            loss = ((out - yb) ** 2).sum() / (2 * BATCH)
            loss.backward()
        solver.apply_update()
        solver.iter += 1
    return [t.detach().numpy() for t in tensors]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"regularization_type": '"L1"'},
        {"clip_gradients": 0.05},
        {"lr_policy": '"inv"', "power": 0.75},
    ],
    ids=["L2-multistep", "L1", "clip", "inv"],
)
def test_update_rule_matches_caffe(caffe, tmp_path, extra):
    net = tmp_path / "mlp.prototxt"
    net.write_text(MLP)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(_solver_text(net, **extra))
    x, y = _mlp_data(BATCH * ITER_SIZE * STEPS)
    solver = caffe.get_solver(str(solver_file))
    solver.net.set_input_arrays(x, y.reshape(-1, 1, 1, 1))
    init = [b.data.copy() for name in ("ip1", "ip2") for b in solver.net.params[name]]
    solver.step(STEPS)
    caffe_out = [b.data.copy() for name in ("ip1", "ip2") for b in solver.net.params[name]]
    ours = _torch_mlp_steps(read_solver(solver_file), init, x, y)
    for i, (a, b, b0) in enumerate(zip(ours, caffe_out, init)):
        if i != 2:  # ip2's weight has lr_mult 0: it must not move in either engine
            assert _rel(b, b0) > 1e-3, f"blob {i} did not move in Caffe"
        assert _rel(a, b) < 1e-5, f"blob {i}: relative L2 difference {_rel(a, b):.2e}"
    assert np.array_equal(ours[2], init[2]) and np.array_equal(caffe_out[2], init[2])


POLICIES = {
    "fixed": {},
    "step": {"stepsize": 3},
    "exp": {},
    "inv": {"power": 0.75},
    "multistep": {"stepvalue": [2, 3, 7]},
    "poly": {"power": 1.5},
    "sigmoid": {"stepsize": 5},
}


def test_lr_policies_match_caffe_log(caffe_bin, tmp_path):
    """Every lr_policy: Caffe's logged rates equal ``learning_rate`` to the printed digits."""
    net = tmp_path / "mlp.prototxt"
    # DummyData instead of MemoryData: the caffe tool cannot feed arrays.
    net.write_text(
        MLP.replace(
            'layer { name: "data" type: "MemoryData" top: "data" top: "label"\n'
            "  memory_data_param { batch_size: 4 channels: 6 height: 1 width: 1 } }",
            'layer { name: "data" type: "DummyData" top: "data" top: "label"\n'
            "  dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 dim: 1 }\n"
            '    data_filler { type: "gaussian" } data_filler { type: "gaussian" } } }',
        )
    )
    for policy, extra in POLICIES.items():
        solver_file = tmp_path / f"{policy}.prototxt"
        solver_file.write_text(
            _solver_text(
                net, lr_policy=f'"{policy}"', gamma=0.8, max_iter=10, iter_size=1, **{"stepvalue": []} | extra
            )
        )
        log = tmp_path / f"{policy}.log"
        proc = subprocess.run([caffe_bin, "train", f"--solver={solver_file}"], capture_output=True, text=True)
        log.write_text(proc.stderr)
        assert proc.returncode == 0, proc.stderr[-2000:]
        caffe_lr = parse_log(log).lr
        assert [i for i, _ in caffe_lr] == list(range(10))
        param = read_solver(solver_file)
        step = 0
        for it, logged in caffe_lr:
            rate, step = learning_rate(param, it, step)
            # glog prints floats with 6 significant digits
            assert float(f"{rate:.6g}") == logged, (policy, it, rate, logged)


def test_multistep_advances_once_per_call_and_carries_over_resume():
    param = caffe_pb2.SolverParameter(base_lr=1.0, lr_policy="multistep", gamma=0.1, stepvalue=[3, 3, 5])
    step, rates = 0, []
    for it in range(7):
        rate, step = learning_rate(param, it, step)
        rates.append(rate)
    # Caffe moves one step per call: the repeated step value takes effect one iteration late.
    assert rates == pytest.approx([1, 1, 1, 0.1, 0.01, 0.001, 0.001])
    # Resumed at iteration 4 with Caffe's saved current_step 2: the same rates follow.
    assert learning_rate(param, 4, 2)[0] == pytest.approx(0.01)
    # A state without current_step (0) at iteration 6 catches up one step per iteration.
    assert learning_rate(param, 6, 0) == (pytest.approx(0.1), 1)


def test_solverstate_round_trip_with_caffe(caffe, tmp_path):
    """Caffe's snapshot restores into CaffeSGD (iter, current_step, history); the state
    CaffeSGD writes back restores in Caffe and both continue to the same weights."""
    net = tmp_path / "mlp.prototxt"
    net.write_text(MLP)
    prefix = tmp_path / "snap" / "mlp"
    prefix.parent.mkdir()
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(_solver_text(net, snapshot_prefix=f'"{prefix}"', max_iter=STEPS))
    x, y = _mlp_data(BATCH * ITER_SIZE * STEPS * 2)
    solver = caffe.get_solver(str(solver_file))
    solver.net.set_input_arrays(x, y.reshape(-1, 1, 1, 1))
    solver.step(2)
    solver.snapshot()
    state = read_solverstate(f"{prefix}_iter_2.solverstate")
    assert state.iter == 2 and state.current_step == 1 and len(state.history) == 4

    param = read_solver(solver_file)
    arrays = [b.data.copy() for n in ("ip1", "ip2") for b in solver.net.params[n]]
    weights = [torch.nn.Parameter(torch.from_numpy(a)) for a in arrays]
    mults = [(1, 1), (2, 0), (0, 1), (1, 2)]
    ours = CaffeSGD(param, [SolverBlob(f"b{i}", t, *m) for i, (t, m) in enumerate(zip(weights, mults))])
    ours.load_state_proto(state)
    assert ours.iter == 2 and ours.current_step == 1
    back = ours.state_proto(str(Path(f"{prefix}_iter_2.caffemodel")))
    assert back.SerializeToString() == state.SerializeToString()

    bad = caffe_pb2.SolverState(iter=1)
    bad.history.extend(state.history[:3])
    with pytest.raises(ModelLibsError, match="3 history blobs"):
        ours.load_state_proto(bad, "x.solverstate")
    (tmp_path / "junk.solverstate").write_bytes(b"\xff\xfe not a proto")
    with pytest.raises(ModelLibsError, match=r"junk\.solverstate"):
        read_solverstate(tmp_path / "junk.solverstate")
