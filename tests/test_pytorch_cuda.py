"""The PyTorch engine on a CUDA device: the same numbers as on the CPU (TF32 off), and
bfloat16 autocast that keeps BatchNorm in float32. Marked ``cuda``: deselected where no GPU is
present (tests/conftest.py; CI has none), run on a GPU machine with ``pytest -m cuda``."""

from __future__ import annotations

import numpy as np
import pytest
from _torch_support import force_caffe_decisions, max_rel, raw_deploy, record_decisions, rel

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.cuda

from _engines_fixtures import weights_net  # noqa: E402

from model_libs.dsod import deploy_net, recipe  # noqa: E402
from model_libs.engines.init import init_weights  # noqa: E402
from model_libs.proto import caffe_pb2  # noqa: E402
from model_libs.pytorch.net import CaffeNet  # noqa: E402
from model_libs.pytorch.weights import load_caffemodel  # noqa: E402


@pytest.fixture(autouse=True)
def no_tf32():
    """Full float32 convolutions and matrix products, as the CPU and Caffe compute them."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _grp(batch: int):
    d = deploy_net(recipe("GRP_DSOD320"), batch=batch)
    net = caffe_pb2.NetParameter()
    net.CopyFrom(d)
    keep = [x for x in net.layer if x.type != "DetectionOutput"]
    del net.layer[:]
    net.layer.extend(keep)
    return net, init_weights(d, seed=1, randomize=True)


@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_deploy_outputs_equal_cpu(channels_last):
    model = "DSOD300"
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 60, (2, 3, 300, 300)).astype(np.float32))
    names = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]
    outs = []
    for device in ("cpu", "cuda"):
        net = CaffeNet(raw_deploy(model), "TEST")
        load_caffemodel(net, weights_net(model))
        net.to(device)
        if channels_last:
            net.set_channels_last()
        with torch.no_grad():
            outs.append({k: v.cpu().numpy() for k, v in net({"data": x.to(device)}, names).items()})
    for k in names:
        assert outs[1][k].shape == outs[0][k].shape
        assert max_rel(outs[1][k], outs[0][k]) < 1e-4, (k, max_rel(outs[1][k], outs[0][k]))


def _train_step(net, x, device):
    out = net({"data": x.to(device)}, ["mbox_loc", "mbox_conf_softmax"])
    g = torch.Generator().manual_seed(3)
    loss = sum((out[k].float() * torch.randn(out[k].shape, generator=g).to(device)).sum() for k in out)
    loss.backward()
    grads = {
        f"{layer}/{i}": t.grad.cpu().numpy() for layer, i, t, _, _ in net.named_blobs() if t.requires_grad
    }
    stats = {
        f"{layer}/{i}": t.cpu().numpy() for layer, i, t, _, _ in net.named_blobs() if not t.requires_grad
    }
    return grads, stats


def test_cuda_train_step_equals_cpu():
    """GRP_DSOD320 in TRAIN (gates, deconvolutions, BatchNorm on batch statistics): the same
    BatchNorm statistics and gradients on the GPU as on the CPU, the GPU's ReLUs and max
    poolings taking the CPU's decisions (see ``force_caffe_decisions``)."""
    net_p, w = _grp(2)
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 60, (2, 3, 320, 320)).astype(np.float32))
    cpu = CaffeNet(net_p, "TRAIN", fuse=False)
    load_caffemodel(cpu, w)
    decisions = record_decisions(cpu)
    g_cpu, s_cpu = _train_step(cpu, x, "cpu")
    gpu = CaffeNet(net_p, "TRAIN", fuse=False)
    load_caffemodel(gpu, w)
    gpu.to("cuda")
    force_caffe_decisions(gpu, decisions)
    g_gpu, s_gpu = _train_step(gpu, x, "cuda")
    assert g_cpu.keys() == g_gpu.keys() and len(g_cpu) > 200 and len(decisions) > 100
    errors = sorted(((rel(g_gpu[k], g_cpu[k]), k) for k in g_cpu), reverse=True)
    print("worst gradient differences CPU vs CUDA", errors[:3])
    assert errors[0][0] < 1e-3  # measured on an H100: 1.1e-4
    assert np.median([e for e, _ in errors]) < 1e-4  # measured: 1.6e-5
    assert max(rel(s_gpu[k], s_cpu[k]) for k in s_cpu) < 1e-4


def test_bf16_autocast_trains_with_float32_batchnorm():
    """bfloat16 autocast on the GPU: blobs stay float32, gradients finite, outputs and the
    first BatchNorm statistics close to float32's (bfloat16 keeps 8 bits of mantissa, so
    deep layers drift by a few percent)."""
    net_p, w = _grp(2)
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 60, (2, 3, 320, 320)).astype(np.float32))
    ref = CaffeNet(net_p, "TRAIN")
    load_caffemodel(ref, w)
    ref.to("cuda")
    g32, s32 = _train_step(ref, x, "cuda")
    net = CaffeNet(net_p, "TRAIN")
    load_caffemodel(net, w)
    net.to("cuda").set_channels_last()
    net.bf16 = True
    g16, s16 = _train_step(net, x, "cuda")
    for _, _, t, _, _ in net.named_blobs():
        assert t.dtype == torch.float32
    assert all(np.isfinite(v).all() for v in g16.values())
    first = [k for k in s32 if k.split("/")[0] in ("BatchNorm1", "BatchNorm2", "BatchNorm3")]
    stat_err = max(rel(s16[k], s32[k]) for k in first)
    grad_err = np.median([rel(g16[k], g32[k]) for k in g32])
    print("bf16 vs float32: first BatchNorm statistics", stat_err, "median gradient", grad_err)
    assert stat_err < 1e-2


def test_torch_engine_on_cuda_detects_as_on_cpu():
    from _engines_fixtures import RAW_OUTPUTS, blob_differences, deploy, detection_differences

    from model_libs.engines.torch_engine import TorchEngine

    model = "DSOD300"
    x = np.random.default_rng(1).normal(0, 60, (2, 3, 300, 300)).astype(np.float32)
    names = [*RAW_OUTPUTS, "detection_out"]
    gpu = TorchEngine(deploy(model), weights_net(model))
    assert gpu.device.type == "cuda"
    a = gpu.forward(x, names)
    b = TorchEngine(deploy(model), weights_net(model), device="cpu").forward(x, names)
    assert blob_differences({k: a[k] for k in RAW_OUTPUTS}, {k: b[k] for k in RAW_OUTPUTS}) == []
    assert len(b["detection_out"].reshape(-1, 7)) > 1
    assert detection_differences(a["detection_out"], b["detection_out"]) == []
