"""How the PyTorch engine runs a net: the fused BatchNorm+Scale+ReLU path computes what the
layer-by-layer path does, channels_last and devices change nothing, bfloat16 autocast
leaves BatchNorm in float32, and requested outputs free what is no longer needed."""

from __future__ import annotations

import pytest
from _torch_support import net_from_text, rel, require_torch

pytestmark = pytest.mark.torch
torch = require_torch()

from model_libs.pytorch.net import CaffeNet  # noqa: E402

BLOCK = """
layer { name: "c1" type: "Convolution" bottom: "x" top: "c1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 bias_term: false
    weight_filler { type: "xavier" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "b1" batch_norm_param { eps: 0.001 } }
layer { name: "s1" type: "Scale" bottom: "b1" top: "b1"
  scale_param { bias_term: true filler { type: "uniform" min: 0.5 max: 1.5 }
    bias_filler { type: "gaussian" std: 0.2 } } }
layer { name: "r1" type: "ReLU" bottom: "b1" top: "b1" }
layer { name: "c2" type: "Convolution" bottom: "b1" top: "c2"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: "msra" } } }
layer { name: "cat" type: "Concat" bottom: "b1" bottom: "c2" top: "cat" }
layer { name: "bn2" type: "BatchNorm" bottom: "cat" top: "cat" }
layer { name: "s2" type: "Scale" bottom: "cat" top: "cat" scale_param { bias_term: true } }
layer { name: "p" type: "Pooling" bottom: "cat" top: "p"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "n" type: "Normalize" bottom: "p" top: "n"
  norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 20 } } }
layer { name: "h" type: "Convolution" bottom: "n" top: "h"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "hp" type: "Permute" bottom: "h" top: "hp"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "hf" type: "Flatten" bottom: "hp" top: "out" }
"""


def _net():
    return net_from_text(BLOCK, {"x": (3, 3, 13, 11)})


def _run(net: CaffeNet, x: torch.Tensor, g: torch.Tensor):
    out = net({"x": x})["out"]
    (out * g).sum().backward()
    grads = {f"{layer}/{i}": t.grad.clone() for layer, i, t, _, _ in net.named_blobs() if t.requires_grad}
    stats = {f"{layer}/{i}": t.clone() for layer, i, t, _, _ in net.named_blobs() if not t.requires_grad}
    return out.detach(), grads, stats


def test_fused_batchnorm_scale_relu_equals_layer_by_layer():
    """In float64 (no float32 rounding to hide behind) the fused path gives the same tops,
    gradients and statistics as running each layer."""
    fused = CaffeNet(_net(), "TRAIN")
    plain = CaffeNet(_net(), "TRAIN", fuse=False)
    assert len(fused._steps) < len(plain._steps)  # bn1+s1+r1 and bn2+s2 became one step each
    x = torch.randn(3, 3, 13, 11, dtype=torch.float64) * 5
    g = torch.randn(3, 72, dtype=torch.float64)
    a = _run(fused.double(), x, g)
    b = _run(plain.double(), x, g)
    assert torch.allclose(a[0], b[0], rtol=1e-12, atol=1e-12)
    for k in b[1]:
        assert torch.allclose(a[1][k], b[1][k], rtol=1e-10, atol=1e-12), k
    for k in b[2]:
        assert torch.allclose(a[2][k], b[2][k], rtol=1e-12, atol=1e-14), k
    assert float(a[2]["bn1/2"]) == 1.0  # Caffe's factor: 0 * 0.999 + 1


def test_channels_last_and_test_phase_match_nchw():
    for phase in ("TRAIN", "TEST"):
        x = torch.randn(3, 3, 13, 11) * 5
        g = torch.randn(3, 72)
        a = _run(CaffeNet(_net(), phase).set_channels_last(), x, g)
        b = _run(CaffeNet(_net(), phase), x, g)
        assert rel(a[0].numpy(), b[0].numpy()) < 1e-5
        for k in b[1]:
            assert rel(a[1][k].numpy(), b[1][k].numpy()) < 1e-4, k


def test_bf16_autocast_computes_batchnorm_in_float32():
    """Under autocast the convolution gives bfloat16; BatchNorm's statistics are those of
    that output taken in float32 (computing them in bfloat16 would be ~1e-3 off)."""
    net = CaffeNet(_net(), "TRAIN")
    net.bf16 = True
    x = torch.randn(3, 3, 13, 11) * 5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c1 = net.layer("c1")(x)[0]
    assert c1.dtype == torch.bfloat16
    tops = net({"x": x})
    assert tops["out"].dtype == torch.bfloat16 and tops["b1"].dtype == torch.float32
    mean = c1.float().mean((0, 2, 3))
    var = c1.float().var((0, 2, 3), unbiased=True)
    bn = net.layer("bn1")
    assert all(t.dtype == torch.float32 for t in bn.blobs())
    assert torch.allclose(bn.blob0, mean, rtol=1e-6, atol=1e-6)
    assert torch.allclose(bn.blob1, var, rtol=1e-5, atol=1e-6)


def test_requested_outputs_only():
    net = CaffeNet(_net(), "TEST")
    x = torch.randn(3, 3, 13, 11)
    with torch.no_grad():
        all_tops = net({"x": x})
        some = net({"x": x}, ["out", "p"])
    assert set(some) == {"out", "p"} and torch.equal(some["out"], all_tops["out"])
    assert {"c1", "b1", "cat", "n"} <= set(all_tops)
    # TEST runs only what the outputs need; TRAIN runs every layer (statistics move).
    for phase, head_runs in (("TEST", 0), ("TRAIN", 1)):
        net = CaffeNet(_net(), phase)
        calls = []
        net.layer("h").register_forward_hook(lambda *a, calls=calls: calls.append(1))
        with torch.no_grad():
            p = net({"x": x}, ["p"])["p"]
        assert len(calls) == head_runs and p.shape == (3, 12, 4, 3)


def test_share_blobs_is_caffes_share_trained_layers():
    train, test = CaffeNet(_net(), "TRAIN", seed=1), CaffeNet(_net(), "TEST", seed=2)
    test.share_blobs(train)
    assert test.layer("c1").blob0 is train.layer("c1").blob0
    assert test.layer("bn1").blob1 is train.layer("bn1").blob1
    with torch.no_grad():
        train({"x": torch.randn(3, 3, 13, 11)})  # moves the statistics the test net reads
    assert float(test.layer("bn1").blob2) == 1.0


def test_batch_other_than_declared():
    """Engines feed any batch size (Caffe reshapes): a net declared for batch 1 gives, for a
    batch of 3, what it gives each image alone (GRP's gate: two-bottom Scale, Reshape -1)."""
    text = """
    layer { name: "pool" type: "Pooling" bottom: "x" top: "pool"
      pooling_param { pool: AVE global_pooling: true } }
    layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
      inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
    layer { name: "sig" type: "Sigmoid" bottom: "fc" top: "fc" }
    layer { name: "att" type: "Scale" bottom: "x" bottom: "fc" top: "att" scale_param { axis: 0 } }
    layer { name: "g" type: "InnerProduct" bottom: "pool" top: "g"
      inner_product_param { num_output: 1 weight_filler { type: "xavier" } } }
    layer { name: "gr" type: "Reshape" bottom: "g" top: "gr" reshape_param { shape { dim: -1 } } }
    layer { name: "gate" type: "Scale" bottom: "att" bottom: "gr" top: "gate" scale_param { axis: 0 } }
    layer { name: "sum" type: "Eltwise" bottom: "x" bottom: "gate" top: "out" }
    layer { name: "pb" type: "PriorBox" bottom: "x" bottom: "x" top: "pb" prior_box_param { min_size: 2 } }
    """
    net = CaffeNet(net_from_text(text, {"x": (1, 4, 5, 5)}), "TEST")
    x = torch.randn(3, 4, 5, 5)
    with torch.no_grad():
        both = net({"x": x})
        singles = [net({"x": x[i : i + 1]}) for i in range(3)]
    assert torch.allclose(both["out"], torch.cat([s["out"] for s in singles]), atol=1e-6)
    assert torch.equal(both["pb"], singles[0]["pb"])
