"""The PyTorch engine's layers against the project's Caffe on small shapes: forward tops,
input gradients and parameter gradients (Caffe tests; under CI they cannot skip)."""

from __future__ import annotations

import numpy as np
import pytest
from _torch_support import max_rel, net_from_text, rel, require_torch, run_both

pytestmark = [pytest.mark.caffe, pytest.mark.torch]

TOL = 1e-5


def _check(text, inputs, tmp_path, phase="TEST", grads=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {k: rng.normal(0, 1, s).astype(np.float32) for k, s in inputs.items()}
    net = net_from_text(text, inputs)
    tt, ct, tg, cg, tnet, cnet = run_both(net, arrays, phase, tmp_path, seed=seed)
    assert tt.keys() == ct.keys() and tt
    for k in ct:
        assert tt[k].shape == ct[k].shape, k
        assert max_rel(tt[k], ct[k]) < TOL, (k, max_rel(tt[k], ct[k]))
    if grads:
        assert tg.keys() == cg.keys()
        for k in cg:
            assert rel(tg[k], cg[k]) < TOL, (k, rel(tg[k], cg[k]))
    return tt, ct, tg, cg, tnet, cnet


POOLING = [
    # (input H, W, pool, kernel, stride, pad): odd sizes, ceil rounding, padding cut-off
    (7, 9, "MAX", 2, 2, 0),
    (7, 9, "AVE", 2, 2, 0),
    (7, 7, "MAX", 3, 2, 1),
    (7, 7, "AVE", 3, 2, 1),
    (6, 6, "AVE", 3, 2, 1),
    (5, 8, "AVE", 2, 2, 1),
    (5, 8, "MAX", 2, 2, 1),
    (9, 9, "AVE", 3, 3, 1),
    (10, 11, "MAX", 4, 4, 0),
]


@pytest.mark.parametrize("h,w,pool,k,s,p", POOLING)
def test_pooling_rounding_and_padding(h, w, pool, k, s, p, tmp_path):
    text = f"""layer {{ name: "p" type: "Pooling" bottom: "x" top: "y"
      pooling_param {{ pool: {pool} kernel_size: {k} stride: {s} pad: {p} }} }}"""
    tt, ct, *_ = _check(text, {"x": (2, 3, h, w)}, tmp_path)
    assert tt["y"].shape[2:] == ct["y"].shape[2:]


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_global_pooling(pool, tmp_path):
    text = f"""layer {{ name: "p" type: "Pooling" bottom: "x" top: "y"
      pooling_param {{ pool: {pool} global_pooling: true }} }}"""
    _check(text, {"x": (2, 4, 5, 7)}, tmp_path)


@pytest.mark.parametrize("across,shared", [(False, False), (True, False), (False, True), (True, True)])
def test_normalize_variants(across, shared, tmp_path):
    text = f"""layer {{ name: "n" type: "Normalize" bottom: "x" top: "y"
      norm_param {{ across_spatial: {str(across).lower()} channel_shared: {str(shared).lower()}
        scale_filler {{ type: "gaussian" mean: 10 std: 2 }} eps: 0.01 }} }}"""
    _, _, _, _, tnet, _ = _check(text, {"x": (2, 5, 4, 3)}, tmp_path)
    assert list(tnet.layer("n").blob0.shape) == ([] if shared else [5])


PRIORS = [
    "min_size: 30 max_size: 60 aspect_ratio: 2 flip: true clip: false step: 8 offset: 0.5",
    "min_size: 30.7 max_size: 61.9 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: true",
    "min_size: 20 aspect_ratio: 2 aspect_ratio: 0.5 flip: false clip: false variance: 0.1",
    "min_size: 16 min_size: 33.3 max_size: 40 max_size: 70 aspect_ratio: 3 flip: true clip: true "
    "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step_h: 9 step_w: 7 offset: 0.3",
    "min_size: 118.4 aspect_ratio: 2 flip: true img_size: 320 step: 64",
    "min_size: 12 img_h: 50 img_w: 60 aspect_ratio: 1 aspect_ratio: 2",
]


@pytest.mark.parametrize("params", PRIORS)
def test_priorbox(params, tmp_path):
    text = f"""layer {{ name: "pb" type: "PriorBox" bottom: "f" bottom: "img" top: "y"
      prior_box_param {{ {params} }} }}"""
    net = net_from_text(text, {"f": (1, 2, 5, 7), "img": (1, 3, 43, 57)})
    rng = np.random.default_rng(0)
    arrays = {
        "f": rng.normal(size=(1, 2, 5, 7)).astype(np.float32),
        "img": np.zeros((1, 3, 43, 57), np.float32),
    }
    tt, ct, *_ = run_both(net, arrays, "TEST", tmp_path)
    assert tt["y"].shape == ct["y"].shape
    assert np.abs(tt["y"] - ct["y"]).max() < 1e-6


SHAPE_LAYERS = [
    ("Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 3 } }", (2, 6, 2, 3)),
    ("Reshape", "reshape_param { shape { dim: -1 } }", (4, 1)),
    ("Reshape", "reshape_param { shape { dim: 3 dim: 2 } axis: 1 num_axes: 1 }", (2, 6, 5)),
    ("Reshape", "reshape_param { shape { dim: 2 dim: -1 } axis: -2 }", (2, 3, 4)),
    ("Reshape", "reshape_param { shape { dim: 0 dim: 2 dim: -1 } axis: 1 }", (2, 3, 4)),
    ("Flatten", "", (2, 3, 4, 5)),
    ("Flatten", "flatten_param { axis: 2 end_axis: 3 }", (2, 3, 4, 5, 2)),
    ("Permute", "permute_param { order: 0 order: 2 order: 3 order: 1 }", (2, 3, 4, 5)),
    ("Permute", "permute_param { order: 1 order: 0 }", (2, 3, 4)),
]


@pytest.mark.parametrize("type_,params,shape", SHAPE_LAYERS)
def test_reshape_flatten_permute(type_, params, shape, tmp_path):
    _check(f'layer {{ name: "l" type: "{type_}" bottom: "x" top: "y" {params} }}', {"x": shape}, tmp_path)


def test_conv_deconv_inner_product_scale_eltwise(tmp_path):
    text = """
    layer { name: "c" type: "Convolution" bottom: "x" top: "c"
      convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 group: 2
        weight_filler { type: "xavier" } bias_filler { type: "gaussian" std: 0.1 } } }
    layer { name: "d" type: "Deconvolution" bottom: "c" top: "d" param { lr_mult: 0 decay_mult: 0 }
      convolution_param { num_output: 6 kernel_size: 2 stride: 2 bias_term: false group: 2
        weight_filler { type: "bilinear" } } }
    layer { name: "d2" type: "Deconvolution" bottom: "c" top: "d2"
      convolution_param { num_output: 4 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1
        weight_filler { type: "msra" } bias_filler { type: "constant" value: 0.3 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "c" top: "ip"
      inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 }
        bias_filler { type: "uniform" } } }
    layer { name: "ipt" type: "InnerProduct" bottom: "c" top: "ipt"
      inner_product_param { num_output: 4 transpose: true weight_filler { type: "xavier" } } }
    layer { name: "sg" type: "Sigmoid" bottom: "ipt" top: "ipt" }
    layer { name: "s" type: "Scale" bottom: "c" top: "s"
      scale_param { bias_term: true filler { type: "uniform" min: 0.5 max: 1.5 }
        bias_filler { type: "gaussian" std: 1 } } }
    layer { name: "s0" type: "Scale" bottom: "c" bottom: "g" top: "s0" scale_param { axis: 0 } }
    layer { name: "e1" type: "Eltwise" bottom: "s" bottom: "s0" top: "e1"
      eltwise_param { coeff: 0.5 coeff: -2 } }
    layer { name: "e2" type: "Eltwise" bottom: "s" bottom: "s0" top: "e2"
      eltwise_param { operation: PROD } }
    layer { name: "e3" type: "Eltwise" bottom: "s" bottom: "s0" bottom: "c" top: "e3"
      eltwise_param { operation: MAX } }
    layer { name: "r" type: "ReLU" bottom: "e3" top: "e3" relu_param { negative_slope: 0.1 } }
    layer { name: "sm" type: "Softmax" bottom: "e1" top: "sm" softmax_param { axis: 1 } }
    """
    tt, _, tg, _, *_ = _check(text, {"x": (2, 4, 7, 6), "g": (2, 6)}, tmp_path, phase="TRAIN")
    assert {"c/0", "c/1", "d2/0", "ip/0", "ipt/0", "s/1", "input:g"} <= tg.keys()
    assert tt["d"].shape == (2, 6, 8, 6)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_batchnorm_statistics_and_gradients(phase, tmp_path):
    text = """
    layer { name: "bn" type: "BatchNorm" bottom: "x" top: "b"
      batch_norm_param { eps: 0.001 moving_average_fraction: 0.9 } }
    layer { name: "sc" type: "Scale" bottom: "b" top: "b" scale_param { bias_term: true } }
    layer { name: "r" type: "ReLU" bottom: "b" top: "b" }
    layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "b2" }
    layer { name: "bn3" type: "BatchNorm" bottom: "v" top: "b3" }
    """
    rng = np.random.default_rng(3)
    inputs = {"x": (3, 4, 5, 2), "v": (1, 6, 1, 1)}
    arrays = {k: rng.normal(0.5, 2, s).astype(np.float32) for k, s in inputs.items()}
    net = net_from_text(text, inputs)

    def prepare(tnet):  # non-trivial stored statistics, as a trained net has them
        for name in ("bn", "bn2", "bn3"):
            m = tnet.layer(name)
            c = m.blob0.shape[0]
            m.blob0.copy_(torch.from_numpy(rng.normal(0, 1, c).astype(np.float32)))
            m.blob1.copy_(torch.from_numpy(rng.uniform(0.5, 2, c).astype(np.float32)))
            m.blob2.fill_(float(rng.uniform(1, 5)) if name != "bn3" else 0.0)  # 0: Caffe's 1/s -> 0

    torch = require_torch()
    tt, ct, tg, cg, tnet, cnet = run_both(net, arrays, phase, tmp_path, prepare=prepare)
    for k in ct:
        assert max_rel(tt[k], ct[k]) < TOL, k
    for k in cg:
        assert rel(tg[k], cg[k]) < TOL, k
    for name in ("bn", "bn2", "bn3"):
        for i in range(3):
            a = tnet.layer(name).blob(i).numpy()
            assert np.allclose(a, cnet.params[name][i].data, rtol=1e-5, atol=1e-6), (name, i)
    if phase == "TRAIN":
        assert float(tnet.layer("bn3").blob2[0]) == pytest.approx(1.0)  # 0 * maf + 1
    else:
        assert float(tnet.layer("bn3").blob2[0]) == 0.0  # TEST leaves the statistics alone
