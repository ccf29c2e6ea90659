"""State dict <-> caffemodel, one to one, and the clear errors of bad nets and weights."""

from __future__ import annotations

import numpy as np
import pytest
from _engines_fixtures import weights_net
from _torch_support import net_from_text, raw_deploy, require_torch

from model_libs.engines.caffemodel import read_caffemodel, weights_dict
from model_libs.errors import ModelLibsError
from model_libs.summary import summarize

pytestmark = pytest.mark.torch
torch = require_torch()

from model_libs.pytorch.layers import LAYERS  # noqa: E402
from model_libs.pytorch.net import CaffeNet  # noqa: E402
from model_libs.pytorch.weights import load_caffemodel, save_caffemodel, to_caffemodel  # noqa: E402


def test_caffemodel_round_trip_is_one_to_one(tmp_path):
    model = "DSOD300_smallest"
    src = weights_net(model)
    net = CaffeNet(raw_deploy(model), "TEST")
    load_caffemodel(net, src)
    out = to_caffemodel(net)
    a, b = weights_dict(src), weights_dict(out)
    assert a.keys() == b.keys()
    for k in a:
        assert [x.shape for x in a[k]] == [x.shape for x in b[k]]
        assert all(np.array_equal(x, y) for x, y in zip(a[k], b[k])), k
    # Blob shapes are Caffe's (as the shape inference lists them) and the state dict maps
    # one to one onto them.
    expected = {x.name: x.blob_shapes for x in summarize(raw_deploy(model)).layers if x.blob_shapes}
    assert {k: [list(x.shape) for x in v] for k, v in b.items()} == expected
    sd = net.state_dict()
    assert len(sd) == sum(len(v) for v in b.values())
    for k, v in b.items():
        for i, x in enumerate(v):
            assert np.array_equal(sd[f"layers.{k}.blob{i}"].numpy(), x)
    # Written to disk and read into a fresh net: the same state dict.
    path = tmp_path / "w.caffemodel"
    save_caffemodel(net, path)
    again = CaffeNet(raw_deploy(model), "TEST")
    load_caffemodel(again, path)
    for k, v in again.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert [x.name for x in read_caffemodel(path).layer] == [x.name for x in raw_deploy(model).layer]


def test_weights_of_another_net_is_one_clear_error(tmp_path):
    path = tmp_path / "dsod300.caffemodel"
    path.write_bytes(weights_net("DSOD300").SerializeToString())
    net = CaffeNet(raw_deploy("DSOD300_smallest"), "TEST")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ModelLibsError) as err:
        load_caffemodel(net, path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: does not match the net")
    assert "blob 0" in msg and "expects" in msg
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()), "half-loaded weights"


def test_missing_layer_is_an_error_unless_not_strict():
    src = weights_net("DSOD300_smallest")
    keep = [x for x in src.layer if x.name != "Convolution1"]
    del src.layer[:]
    src.layer.extend(keep)
    net = CaffeNet(raw_deploy("DSOD300_smallest"), "TEST")
    with pytest.raises(ModelLibsError, match="missing layer 'Convolution1'"):
        load_caffemodel(net, src)
    before = net.layer("Convolution1").blob0.clone()
    load_caffemodel(net, src, strict=False)
    assert torch.equal(net.layer("Convolution1").blob0, before)
    assert torch.equal(
        net.layer("Convolution2").blob0, torch.from_numpy(weights_dict(src)["Convolution2"][0])
    )


def test_unsupported_layer_type_names_the_layer():
    net = net_from_text('layer { name: "odd" type: "LRN" bottom: "x" top: "y" }', {"x": (1, 2, 3, 3)})
    with pytest.raises(ModelLibsError, match=r"layer 'odd' \(LRN\): layer type 'LRN' is not supported"):
        CaffeNet(net, "TEST")


@pytest.mark.parametrize(
    "text,problem",
    [
        ("pooling_param { pool: STOCHASTIC kernel_size: 2 }", "pool STOCHASTIC is not supported"),
        ("pooling_param { pool: MAX kernel_size: 2 pad: 2 }", "larger than half the kernel"),
        ("pooling_param { pool: MAX kernel_size: 1 stride: 3 }", "starts past the input"),
    ],
)
def test_unsupported_parameter_names_the_layer(text, problem):
    net = net_from_text(
        f'layer {{ name: "p1" type: "Pooling" bottom: "x" top: "y" {text} }}', {"x": (1, 2, 5, 5)}
    )
    with pytest.raises(ModelLibsError, match=rf"layer 'p1' \(Pooling\): .*{problem}"):
        CaffeNet(net, "TEST")


def test_registry_holds_the_dsod_layer_types():
    types = {x.type for m in ("DSOD300", "GRP_DSOD320") for x in raw_deploy(m).layer}
    assert types - {"Input"} <= set(LAYERS)


def test_phase_rules_and_losses():
    net = net_from_text(
        """
        layer { name: "a" type: "ReLU" bottom: "x" top: "a" include { phase: TRAIN } }
        layer { name: "b" type: "Sigmoid" bottom: "x" top: "b" exclude { phase: TRAIN } }
        layer { name: "l" type: "EuclideanLoss" bottom: "x" bottom: "t" top: "l" include { phase: TRAIN } }
        layer { name: "l2" type: "EuclideanLoss" bottom: "x" bottom: "t" top: "l2" loss_weight: 0.5 }
        layer { name: "st" type: "ReLU" bottom: "x" top: "st" include { stage: "deploy" } }
        """,
        {"x": (2, 3), "t": (2, 3)},
    )
    train, test = CaffeNet(net, "TRAIN"), CaffeNet(net, "TEST")
    assert [m.caffe_name for m in train.layers.values()] == ["a", "l", "l2"]
    assert [m.caffe_name for m in test.layers.values()] == ["b", "l2"]
    assert [m.caffe_name for m in CaffeNet(net, "TEST", stages=["deploy"]).layers.values()] == [
        "b",
        "l2",
        "st",
    ]
    assert train.losses == [("l", 1.0), ("l2", 0.5)]
    x, t = torch.randn(2, 3), torch.randn(2, 3)
    tops = train({"x": x, "t": t})
    assert torch.allclose(train.loss(tops), 1.5 * ((x - t) ** 2).sum() / 4)
