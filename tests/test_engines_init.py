"""Weight initialisation from the net's fillers (Caffe semantics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _engines_fixtures import deploy

from model_libs import ModelLibsError
from model_libs.engines.caffemodel import weights_dict
from model_libs.engines.init import bilinear_kernel, fill, init_arrays, init_weights
from model_libs.proto import caffe_pb2


def _filler(**kw) -> caffe_pb2.FillerParameter:
    return caffe_pb2.FillerParameter(**kw)


def test_xavier_is_uniform_in_sqrt3_over_fan_in():
    rng = np.random.default_rng(0)
    shape = [64, 32, 3, 3]
    a = fill(_filler(type="xavier"), shape, rng)
    bound = math.sqrt(3 / (32 * 9))  # fan_in = count / num
    assert a.dtype == np.float32 and list(a.shape) == shape
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.99 * bound
    assert abs(a.std() - bound / math.sqrt(3)) < 0.02 * bound
    avg = fill(_filler(type="xavier", variance_norm=caffe_pb2.FillerParameter.AVERAGE), shape, rng)
    assert np.abs(avg).max() <= math.sqrt(3 / ((32 * 9 + 64 * 9) / 2))


def test_msra_gaussian_constant_uniform():
    rng = np.random.default_rng(1)
    a = fill(_filler(type="msra"), [128, 64, 3, 3], rng)
    assert abs(a.std() - math.sqrt(2 / (64 * 9))) < 0.01 * math.sqrt(2 / (64 * 9)) * 5
    g = fill(_filler(type="gaussian", std=0.01, mean=0.5), [1000, 10], rng)
    assert abs(g.std() - 0.01) < 5e-4 and abs(g.mean() - 0.5) < 1e-3
    assert np.all(fill(_filler(type="constant", value=20), [7], rng) == 20)
    assert np.all(fill(_filler(), [3], rng) == 0)  # Caffe's default filler: constant 0
    u = fill(_filler(type="uniform", min=-2, max=-1), [500], rng)
    assert u.min() >= -2 and u.max() <= -1
    with pytest.raises(ModelLibsError, match="unknown filler"):
        fill(_filler(type="nope"), [1], rng)


def test_sparse_gaussian_keeps_sparse_over_num_outputs():
    rng = np.random.default_rng(2)
    a = fill(_filler(type="gaussian", std=1, sparse=5), [20, 5000], rng)
    assert abs((a != 0).mean() - 5 / 20) < 0.01  # Caffe: Bernoulli(sparse / num) mask
    assert abs(a[a != 0].std() - 1) < 0.02


def test_bilinear_matches_caffe_formula():
    # Caffe's BilinearFiller for a 4x4 kernel (f=2, c=0.75): 1-D profile .25 .75 .75 .25
    k = bilinear_kernel([2, 3, 4, 4])
    profile = np.array([0.25, 0.75, 0.75, 0.25], dtype=np.float32)
    assert np.allclose(k[1, 2], np.outer(profile, profile))
    # 2x2 (GRP-DSOD's up-sampling): f=1, c=0 -> profile 1 0 (a stride-2 'nearest' copy)
    assert np.array_equal(bilinear_kernel([1, 1, 2, 2])[0, 0], [[1, 0], [0, 0]])
    # 1x1: f=1, c=0 -> 1
    assert np.array_equal(bilinear_kernel([1, 1, 1, 1]), [[[[1]]]])
    # 3x3: f=2, c=0.75 -> profile .25 .75 .75
    p3 = [0.25, 0.75, 0.75]
    assert np.allclose(bilinear_kernel([1, 1, 3, 3])[0, 0], np.outer(p3, p3))


def test_deploy_init_follows_layer_fillers_and_batchnorm_identity():
    d = deploy("GRP_DSOD320")
    w = init_arrays(d, seed=0)
    layers = {layer.name: layer for layer in d.layer}
    kinds = set()
    for name, arrays in w.items():
        layer = layers[name]
        kinds.add(layer.type)
        if layer.type == "BatchNorm":
            mean, var, factor = arrays
            assert np.all(mean == 0) and np.all(var == 1) and factor.tolist() == [1.0]
        elif layer.type == "Normalize":
            assert np.all(arrays[0] == layer.norm_param.scale_filler.value)
        elif layer.type == "Deconvolution":
            assert np.allclose(arrays[0], bilinear_kernel(list(arrays[0].shape)))
        elif layer.type == "Scale" and len(layer.bottom) == 1:
            assert np.all(arrays[0] == 1) and np.all(arrays[1] == 0)
        elif layer.type == "Convolution" and layer.convolution_param.weight_filler.type == "xavier":
            fan_in = arrays[0][0].size
            assert np.abs(arrays[0]).max() <= math.sqrt(3 / fan_in)
    assert {"BatchNorm", "Normalize", "Deconvolution", "Scale", "Convolution", "InnerProduct"} <= kinds
    gate_scales = [x.name for x in d.layer if x.type == "Scale" and len(x.bottom) == 2]
    assert gate_scales and not any(n in w for n in gate_scales)  # 2-bottom Scale stores nothing


def test_init_is_deterministic_by_seed_and_randomize_perturbs():
    d = deploy("DSOD300_smallest")
    a = weights_dict(init_weights(d, seed=3))
    b = weights_dict(init_weights(d, seed=3))
    c = weights_dict(init_weights(d, seed=4))
    assert all(np.array_equal(x, y) for k in a for x, y in zip(a[k], b[k]))
    assert not np.array_equal(a["Convolution1"][0], c["Convolution1"][0])
    r = init_arrays(d, seed=3, randomize=True)
    mean, var, factor = r["BatchNorm1"]
    assert mean.std() > 0.01 and 0.5 <= var.min() and var.max() <= 1.5 and factor.tolist() == [1.0]
