"""OpenCV DNN engine: Caffe layer semantics against a NumPy reference, and every DSOD
variant's deploy net with random weights."""

from __future__ import annotations

import numpy as np
import pytest
from _engines_fixtures import RAW_OUTPUTS, deploy, random_weights, weights_net
from google.protobuf import text_format

from model_libs import ModelLibsError
from model_libs.dsod import MODELS
from model_libs.engines.caffemodel import weights_net as make_weights_net
from model_libs.engines.init import init_arrays
from model_libs.engines.opencv_engine import OpenCVEngine
from model_libs.proto import caffe_pb2
from model_libs.summary import summarize

# The layer types of the DSOD family with parameters or broadcasting, in the forms GRP-DSOD
# uses them: conv+BN+Scale+ReLU, global AVE pooling, InnerProduct, Sigmoid, Scale with a
# second bottom (axis 0; per (n, c) and per n after a Reshape to [-1]), Eltwise,
# Deconvolution (k2 s2 and k1 s2) and SSD's Normalize.
TINY = """
name: "tiny"
input: "data"
input_shape { dim: 2 dim: 3 dim: 6 dim: 6 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 weight_filler { type: "xavier" }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { eps: 0.0001 } }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 4 } }
layer { name: "sig" type: "Sigmoid" bottom: "fc" top: "fc" }
layer { name: "gate" type: "Scale" bottom: "conv" bottom: "fc" top: "gate"
  scale_param { axis: 0 bias_term: false } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool" top: "fc1" inner_product_param { num_output: 1 } }
layer { name: "sig1" type: "Sigmoid" bottom: "fc1" top: "fc1" }
layer { name: "flat1" type: "Reshape" bottom: "fc1" top: "flat1" reshape_param { shape { dim: -1 } } }
layer { name: "ggate" type: "Scale" bottom: "gate" bottom: "flat1" top: "ggate"
  scale_param { axis: 0 bias_term: false } }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "ggate" top: "sum" }
layer { name: "up2" type: "Deconvolution" bottom: "sum" top: "up2"
  convolution_param { num_output: 4 kernel_size: 2 stride: 2 bias_term: false
                      weight_filler { type: "bilinear" } } }
layer { name: "up1" type: "Deconvolution" bottom: "sum" top: "up1"
  convolution_param { num_output: 4 kernel_size: 1 stride: 2 bias_term: false
                      weight_filler { type: "bilinear" } } }
layer { name: "norm" type: "Normalize" bottom: "up2" top: "norm"
  norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 20 } } }
"""


def _conv(x, w, b, pad):
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, o, h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i : i + out.shape[2], j : j + out.shape[3]]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out + b[None, :, None, None]


def _deconv(x, w, stride):
    n, _, h, wd = x.shape
    _, o, k, _ = w.shape
    out = np.zeros((n, o, stride * (h - 1) + k, stride * (wd - 1) + k))
    for y in range(h):
        for xx in range(wd):
            out[:, :, y * stride : y * stride + k, xx * stride : xx * stride + k] += np.einsum(
                "nc,cokl->nokl", x[:, :, y, xx], w
            )
    return out


def _reference(x, p):
    """What Caffe computes for TINY, written from the layer definitions."""
    w, b = p["conv"]
    conv = _conv(x, w, b, 1)
    mean, var, factor = p["bn"]
    mean, var = (mean / factor[0])[None, :, None, None], (var / factor[0])[None, :, None, None]
    conv = (conv - mean) / np.sqrt(var + 1e-4)
    s, sb = p["sc"]
    conv = np.maximum(conv * s[None, :, None, None] + sb[None, :, None, None], 0)
    pool = conv.mean(axis=(2, 3))
    fw, fb = p["fc"]
    fc = 1 / (1 + np.exp(-(pool @ fw.T + fb)))
    gate = conv * fc[:, :, None, None]
    f1w, f1b = p["fc1"]
    fc1 = 1 / (1 + np.exp(-(pool @ f1w.T + f1b)))  # (N, 1) -> Reshape [-1] -> (N,)
    ggate = gate * fc1.reshape(-1)[:, None, None, None]
    total = conv + ggate
    up2 = _deconv(total, p["up2"][0], 2)
    up1 = _deconv(total, p["up1"][0], 2)
    norm = up2 / np.sqrt((up2**2).sum(axis=1, keepdims=True) + 1e-10) * p["norm"][0][None, :, None, None]
    return {"gate": gate, "ggate": ggate, "sum": total, "up2": up2, "up1": up1, "norm": norm}


def test_opencv_matches_caffe_semantics_on_the_dsod_layer_types():
    net = text_format.Parse(TINY, caffe_pb2.NetParameter())
    params = init_arrays(net, seed=7, randomize=True)
    # make the up-sampling kernels non-trivial too (they are fixed bilinear in DSOD)
    rng = np.random.default_rng(0)
    params["up2"] = [params["up2"][0] + rng.normal(0, 0.3, params["up2"][0].shape).astype(np.float32)]
    eng = OpenCVEngine(net, make_weights_net(net, params))
    x = rng.normal(0, 1, (2, 3, 6, 6)).astype(np.float32)
    names = ["gate", "ggate", "sum", "up2", "up1", "norm"]
    got = eng.forward(x, names)
    ref = _reference(x.astype(np.float64), {k: [a.astype(np.float64) for a in v] for k, v in params.items()})
    shapes = summarize(net).blob_shapes
    for n in names:
        assert list(got[n].shape) == shapes[n], n
        np.testing.assert_allclose(got[n], ref[n], rtol=1e-4, atol=1e-5, err_msg=n)
    # the two gates really vary per image and per channel
    assert np.ptp(ref["ggate"] / np.where(ref["gate"] == 0, 1, ref["gate"]), axis=0).max() > 1e-3


@pytest.mark.parametrize("model", MODELS)
def test_opencv_runs_every_dsod_variant(model):
    """Random weights for the variant's deploy net; OpenCV loads and runs it, with the head
    shapes shape inference predicts, finite values and proper DetectionOutput rows."""
    d = deploy(model)
    eng = OpenCVEngine(d, weights_net(model))
    s = summarize(d)
    shape = s.blob_shapes["data"]
    x = np.random.default_rng(0).normal(0, 60, [2, *shape[1:]]).astype(np.float32)
    out = eng.forward(x, [*RAW_OUTPUTS, "detection_out"])
    n_priors = s.priors
    assert out["mbox_loc"].shape == (2, n_priors * 4)
    assert out["mbox_priorbox"].shape == (1, 2, n_priors * 4)
    conf = out["mbox_conf_flatten"].reshape(2, n_priors, -1)
    np.testing.assert_allclose(conf.sum(axis=2), 1, rtol=1e-5)  # softmax over classes
    for k, v in out.items():
        assert np.all(np.isfinite(v)), k
    assert np.std(out["mbox_loc"]) > 1e-3 and np.ptp(conf) > 1e-3  # non-trivial head
    rows = out["detection_out"].reshape(-1, 7)
    assert set(np.unique(rows[:, 0])) <= {0.0, 1.0}
    assert np.all(rows[:, 1] >= 1) and np.all(rows[:, 2] >= 0.01)  # no background, threshold


def test_mismatched_caffemodel_is_a_clear_error_not_an_opencv_crash(tmp_path):
    p = tmp_path / "other.caffemodel"
    p.write_bytes(random_weights("DSOD300_smallest"))
    with pytest.raises(ModelLibsError) as err:
        OpenCVEngine(deploy("DSOD300_lite"), p)
    msg = str(err.value)
    assert "other.caffemodel: does not match the deploy net" in msg and "blob 0: deploy expects" in msg


def test_wrong_input_shape_is_a_clear_error():
    eng = OpenCVEngine(deploy("DSOD300_smallest"), weights_net("DSOD300_smallest"))
    with pytest.raises(ModelLibsError, match="net expects Nx3x300x300"):
        eng.forward(np.zeros((1, 3, 320, 320), np.float32))
    with pytest.raises(ModelLibsError, match="no blob"):
        eng.forward(np.zeros((1, 3, 300, 300), np.float32), ["nope"])
