"""The project's built Caffe runs the nets model_libs emits, unchanged.

Needs the Caffe built by ``scripts/setup.sh`` (or CAFFE_ROOT); skipped without one, except
under CI where that is a failure (the ``caffe`` fixture and CI guard of ``conftest.py``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_libs.caffe_env import PROJECT_INSTALL, find_caffe
from model_libs.dsod import nets, recipe
from model_libs.dsod.data_layer import test_transform as resize_only_transform
from model_libs.netspec import to_prototxt
from model_libs.proto import caffe_pb2
from tests.caffe_support import annotated_datum, scene, tiny_detection_lmdb, write_labelmap, write_lmdb

pytestmark = pytest.mark.caffe

REPO = Path(__file__).resolve().parents[1]
TRAIN_VARIANTS = ["DSOD300", "DSOD300_lite", "DSOD300_smallest", "DSOD512", "GRP_DSOD320"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny VOC-like LMDB (6 images, 21 classes), its label map and name/size list."""
    d = tmp_path_factory.mktemp("voc")
    lmdb_path, boxes = tiny_detection_lmdb(d / "train_lmdb", n=6)
    labelmap = write_labelmap(d / "labelmap.prototxt", 21)
    name_size = d / "name_size.txt"
    name_size.write_text("".join(f"img{i} 96 96\n" for i in range(len(boxes))))
    return {"lmdb": lmdb_path, "boxes": boxes, "labelmap": labelmap, "name_size": name_size, "dir": d}


def small_recipe(model: str, data: dict, batch: int = 2, size: int | None = None):
    """The official recipe for ``model`` pointed at the tiny LMDB, with a small batch."""
    r = recipe(model, "VOC0712", data_root=data["dir"], out_dir=data["dir"], size=size)
    return dataclasses.replace(
        r,
        train_data=str(data["lmdb"]),
        test_data=str(data["lmdb"]),
        label_map_file=str(data["labelmap"]),
        name_size_file=str(data["name_size"]),
        output_result_dir=str(data["dir"] / "results"),
        batch_size=batch,
        accum_batch_size=batch,
        test_batch_size=batch,
        num_test_image=len(data["boxes"]),
    )


def write(path: Path, msg) -> Path:
    path.write_text(to_prototxt(msg) + "\n")
    return path


def test_info_reports_the_build(caffe):
    inst = find_caffe(required=False)
    res = subprocess.run(
        [sys.executable, "-m", "model_libs", "info"], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 0, res.stderr
    assert str(inst.root) in res.stdout
    if inst.origin == "project":
        assert "CPU-only" in res.stdout
        info = json.loads((PROJECT_INSTALL / "BUILD_INFO.json").read_text())
        assert info["schema"] == "model_libs/proto/caffe.proto"
        # the engine was compiled from the project's schema, byte for byte
        assert (PROJECT_INSTALL / "caffe.proto").read_bytes() == (
            REPO / "model_libs" / "proto" / "caffe.proto"
        ).read_bytes()
    assert "opencv dnn:" in res.stdout


def test_pycaffe_uses_the_project_schema(caffe):
    from caffe.proto import caffe_pb2 as engine_pb2

    assert engine_pb2.TransformationParameter is caffe_pb2.TransformationParameter
    fields = caffe_pb2.TransformationParameter.DESCRIPTOR.fields_by_name
    assert fields["resize_param"].number == 8
    assert fields["distort_param"].number == 13
    assert fields["expand_param"].number == 14


@pytest.mark.parametrize("model", TRAIN_VARIANTS)
def test_emitted_train_net_constructs(caffe, data, tmp_path, model):
    r = small_recipe(model, data, batch=1)
    path = write(tmp_path / "train.prototxt", nets.train_net(r))
    net = caffe.Net(str(path), caffe.TRAIN)
    size = r.resize
    assert net.blobs["data"].data.shape == (1, 3, size[0], size[1])
    assert "mbox_loss" in net.blobs
    assert {"AnnotatedData", "MultiBoxLoss", "PriorBox", "Normalize", "Permute"} <= set(
        net.layer_dict[n].type for n in net._layer_names
    )


def test_one_training_iteration_gives_a_finite_loss(caffe, data, tmp_path):
    r = small_recipe("DSOD300_smallest", data, batch=2)
    train = write(tmp_path / "train.prototxt", nets.train_net(r))
    test = write(tmp_path / "test.prototxt", nets.test_net(r))
    sp = nets.solver(r, str(train), str(test), str(tmp_path / "snap"))
    sp.display, sp.snapshot = 1, 0
    sp.snapshot_after_train = False
    sp.ClearField("test_net")
    sp.ClearField("test_iter")
    sp.test_interval = 0
    sp.test_initialization = False
    sp.max_iter, sp.random_seed = 10, 7
    solver_path = write(tmp_path / "solver.prototxt", sp)
    s = caffe.get_solver(str(solver_path))
    # A random crop can hold no object (the label blob is then one row of -1 and the loss
    # 0): step until a batch carries ground truth, every loss on the way being finite.
    for _ in range(10):
        s.step(1)
        loss = float(s.net.blobs["mbox_loss"].data)
        assert math.isfinite(loss)
        label = s.net.blobs["label"].data.reshape(-1, 8)
        if (label[:, 0] >= 0).any():
            break
    assert (label[:, 0] >= 0).any(), "ten batches without a single ground-truth box"
    assert loss > 0
    # the label blob carries the LMDB's boxes: [item, label, instance, x0, y0, x1, y1, diff]
    assert (label[:, 1] >= 1).all() and (label[:, 1] < 21).all()
    assert ((label[:, 3:7] >= 0) & (label[:, 3:7] <= 1)).all()


def _short_solver(caffe, r, tmp_path):
    train = write(tmp_path / "train.prototxt", nets.train_net(r))
    sp = nets.solver(r, str(train), str(train), str(tmp_path / "snap"))
    sp.ClearField("test_net")
    sp.ClearField("test_iter")
    sp.test_interval, sp.test_initialization, sp.snapshot, sp.snapshot_after_train = 0, False, 0, False
    sp.max_iter, sp.random_seed, sp.display = 20, 5, 0
    sp.weight_decay = 0  # so that a parameter moves only where a gradient reached it
    return caffe.get_solver(str(write(tmp_path / "solver.prototxt", sp)))


def _moved(s, before: dict, name: str, blob: int = 0) -> bool:
    p = s.net.params[name][blob]
    return bool(np.abs(p.diff).sum() > 0) and not np.array_equal(p.data, before[name][blob])


def _deterministic(r, data: dict, tmp_path: Path):
    """``r`` fed two images whose boxes fill the frame and a corner, without augmentation, so
    that the largest and small priors of every net are matched on every step. (Two different
    images: at batch 1, BatchNorm over a 1x1 map outputs 0 and passes no gradient back.)"""
    boxes = [(3, 0.05, 0.05, 0.95, 0.95), (7, 0.1, 0.1, 0.35, 0.35)]
    images = [
        scene(96, 96, boxes, bg=bg, colors={3: fg, 7: (0, 0, 255)})
        for bg, fg in (((200,) * 3, (0, 180, 0)), ((40, 40, 40), (250, 120, 0)))
    ]
    lmdb = write_lmdb(tmp_path / "big_lmdb", [annotated_datum(img, boxes, ext=".jpg") for img in images])
    whole_image = [{"sampler": {}, "max_trials": 1, "max_sample": 1}]
    return dataclasses.replace(
        r, train_data=str(lmdb), train_transform=resize_only_transform(*r.resize), batch_sampler=whole_image
    )


def test_a_dsod512_training_step_reaches_its_deepest_source(caffe, data, tmp_path):
    r = _deterministic(small_recipe("DSOD512", data, batch=2, size=64), data, tmp_path)
    s = _short_solver(caffe, r, tmp_path)
    # the deepest source's head and L2 scale, the shallowest source, the very first convolution
    names = ["Seventh__norm_mbox_conf", "Seventh__norm", "First", "Convolution1"]
    before = {n: [b.data.copy() for b in s.net.params[n]] for n in names}
    s.step(1)
    assert np.isfinite(float(s.net.blobs["mbox_loss"].data)) and float(s.net.blobs["mbox_loss"].data) > 0
    for n in names:
        assert _moved(s, before, n), f"{n}: no gradient reached it"


@pytest.mark.slow  # ~10-20 s: GRP_DSOD320 trains only at its full 320x320
def test_a_grp_dsod320_training_step_runs_the_gates_backward(caffe, data, tmp_path):
    """GRP_DSOD320 (at its own 320x320; its pyramid fits no smaller input) trains in the
    project's Caffe, and the gates' backward pass runs.

    The release leaves the gates' InnerProducts without fillers, so Caffe starts them at 0:
    the squeeze layer's output is 0 and ReLU passes no gradient at 0, so the squeeze layer and
    the weights behind it never change; the channel and global gates learn through their
    biases (per-channel and per-source scales). This test holds both facts.
    """
    r = _deterministic(small_recipe("GRP_DSOD320", data, batch=2, size=320), data, tmp_path)
    s = _short_solver(caffe, r, tmp_path)
    gates = {}  # source -> (channel fc, global fc): auto-named, found by their bottom
    for layer in nets.train_net(r).layer:
        if layer.type == "InnerProduct" and layer.bottom[0].endswith("_fc"):
            src = layer.bottom[0][: -len("_fc")]
            gates.setdefault(src, {})[layer.inner_product_param.num_output == 1] = layer.name
    assert len(gates) == 6
    names = [f"{src}_fc" for src in gates] + [n for g in gates.values() for n in g.values()]
    names += ["Recurrent1_gate_norm_mbox_conf", "Convolution1"]  # a head on a gated source, the stem
    before = {n: [b.data.copy() for b in s.net.params[n]] for n in names}
    s.step(1)
    assert np.isfinite(float(s.net.blobs["mbox_loss"].data)) and float(s.net.blobs["mbox_loss"].data) > 0
    # The backward pass: a source's head passes gradient back only when one of its priors
    # was matched or mined; where it did, the gradient went on through both gates.
    reached = [src for src in gates if np.abs(s.net.blobs[f"{src}_gate"].diff).any()]
    assert "Recurrent1" in reached, reached
    for src in reached:
        for fc in gates[src].values():
            assert np.abs(s.net.blobs[fc].diff).any(), f"{src}: no gradient at the gate {fc}"
            assert _moved(s, before, fc, blob=1), f"{src}: the bias of gate {fc} did not learn"
    for src, g in gates.items():
        for fc in g.values():
            assert not s.net.params[fc][0].data.any()  # its weights see a 0 input
        assert not s.net.params[f"{src}_fc"][0].data.any() and not s.net.params[f"{src}_fc"][1].data.any()
    for n in ("Recurrent1_gate_norm_mbox_conf", "Convolution1"):
        assert _moved(s, before, n), f"{n}: no gradient reached it through the gates"


def test_test_net_detection_evaluate_runs(caffe, data, tmp_path):
    r = small_recipe("DSOD300_smallest", data, batch=2)
    path = write(tmp_path / "test.prototxt", nets.test_net(r))
    net = caffe.Net(str(path), caffe.TEST)
    out = net.forward()
    ev = out["detection_eval"].reshape(-1, 5)
    # first num_classes-1 rows: [-1, label, number of ground-truth boxes, -1, -1]
    n_gt = ev[:20]
    assert (n_gt[:, 0] == -1).all()
    assert list(n_gt[:, 1]) == list(range(1, 21))
    want = np.zeros(21)
    for boxes in data["boxes"][:2]:  # TEST phase reads the LMDB in order
        for b in boxes:
            want[b[0]] += 1
    assert list(n_gt[:, 2]) == list(want[1:])
    dets = ev[20:]
    assert np.isfinite(dets).all()
    # every detection row is [item, label, score, tp, fp] with tp + fp == 1
    if len(dets):
        assert ((dets[:, 3] + dets[:, 4]) == 1).all()


def test_caffe_tool_trains_and_tests_with_gpu_flag(caffe, data, tmp_path):
    inst = find_caffe()
    r = small_recipe("DSOD300_smallest", data, batch=1)
    train = write(tmp_path / "train.prototxt", nets.train_net(r))
    test = write(tmp_path / "test.prototxt", nets.test_net(r))
    sp = nets.solver(r, str(train), str(test), str(tmp_path / "snap"), gpus=[0])
    assert sp.solver_mode == caffe_pb2.SolverParameter.GPU
    sp.max_iter, sp.display, sp.snapshot = 1, 1, 0
    # the solver's own detection test (eval_type: detection) runs after the iteration
    assert sp.eval_type == "detection"
    sp.test_interval = 1
    del sp.test_iter[:]
    sp.test_iter.append(1)
    sp.test_initialization = False
    solver_path = write(tmp_path / "solver.prototxt", sp)
    env = dict(os.environ, GLOG_logtostderr="1")
    res = subprocess.run(
        [str(inst.binary), "train", f"--solver={solver_path}", "--gpu=0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    if inst.origin == "project":
        assert "built CPU-only" in res.stderr
    assert "Testing net (#0)" in res.stderr
    assert "Test net output #0: detection_eval = " in res.stderr, res.stderr[-2000:]
    snaps = list(tmp_path.glob("snap_iter_1.caffemodel"))
    assert snaps, res.stderr[-2000:]
    # --weights loads the caffemodel into the train and test nets (fine-tuning)
    res = subprocess.run(
        [str(inst.binary), "train", f"--solver={solver_path}", f"--weights={snaps[0]}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"Finetuning from {snaps[0]}" in res.stderr
    res = subprocess.run(
        [str(inst.binary), "test", f"--model={test}", f"--weights={snaps[0]}", "--iterations=1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "detection_eval" in res.stderr


def test_venv_has_caffe_on_path(caffe):
    """The venv running the tests (the set-up's .venv) has the project's Caffe linked in."""
    inst = find_caffe(required=False)
    if inst.origin != "project":
        pytest.skip(f"Caffe comes from {inst.origin} ({inst.root}), not the project's build")
    venv = Path(sys.prefix)
    if venv == Path(sys.base_prefix):
        pytest.skip(f"the tests do not run in a virtual environment ({sys.executable})")
    assert (venv / "bin" / "caffe").resolve() == (PROJECT_INSTALL / "bin" / "caffe").resolve()
    res = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import caffe, model_libs; print(caffe.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert res.returncode == 0, res.stderr
    # resolved: in a git worktree build/ may be a link to the main checkout's build
    assert Path(res.stdout.strip()).resolve().is_relative_to(PROJECT_INSTALL.resolve())
