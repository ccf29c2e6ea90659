"""caffemodel read/write/list/check."""

from __future__ import annotations

import numpy as np
import pytest
from _engines_fixtures import deploy, random_weights, weights_net

from model_libs import ModelLibsError
from model_libs.engines import caffemodel as cm
from model_libs.engines.init import init_weights
from model_libs.proto import caffe_pb2
from model_libs.summary import summarize


def test_round_trip_is_byte_stable(tmp_path):
    data = random_weights("DSOD300_smallest")
    p1 = tmp_path / "a.caffemodel"
    p1.write_bytes(data)
    net = cm.read_caffemodel(p1)
    p2 = cm.write_caffemodel(tmp_path / "b.caffemodel", net)
    assert p2.read_bytes() == data
    again = cm.write_caffemodel(tmp_path / "c.caffemodel", cm.read_caffemodel(p2))
    assert again.read_bytes() == data


def test_round_trip_legacy_form_is_byte_stable_and_same_values(tmp_path):
    d = deploy("DSOD300_smallest")
    legacy = init_weights(d, seed=5, legacy=True)
    modern = init_weights(d, seed=5)
    p = cm.write_caffemodel(tmp_path / "legacy.caffemodel", legacy)
    back = cm.read_caffemodel(p)
    assert cm.caffemodel_bytes(back) == p.read_bytes()
    a, b = cm.weights_dict(back), cm.weights_dict(modern)
    assert a.keys() == b.keys()
    for k in a:
        for x, y in zip(a[k], b[k]):
            # legacy blobs read back 4-D (Caffe's LegacyShape), same values
            assert x.shape == (1,) * (4 - y.ndim) + y.shape
            assert np.array_equal(x.ravel(), y.ravel())
    # In the file, a BatchNorm mean (C,) is stored as 1x1x1xC.
    bn = next(layer for layer in back.layer if layer.type == "BatchNorm")
    assert cm.is_legacy(bn.blobs[0])
    assert (bn.blobs[0].num, bn.blobs[0].channels, bn.blobs[0].height) == (1, 1, 1)
    assert cm.check(d, back).ok


def test_blob_shapes_and_values():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = cm.make_blob(a)
    assert cm.blob_shape(b) == [2, 3, 4] and not cm.is_legacy(b)
    assert np.array_equal(cm.blob_array(b), a)
    lb = cm.make_blob(a, legacy=True)
    assert cm.blob_shape(lb) == [1, 2, 3, 4] and cm.is_legacy(lb)
    assert cm.shape_matches(lb, [2, 3, 4]) and cm.shape_matches(lb, [1, 2, 3, 4])
    assert not cm.shape_matches(lb, [3, 2, 4])
    assert not cm.shape_matches(b, [1, 2, 3, 4])  # the shape form compares exactly
    d = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=2, double_data=[1.5, 2, 3, 4])
    assert cm.blob_array(d).dtype == np.float32 and cm.blob_array(d).shape == (1, 2, 1, 2)
    bad = caffe_pb2.BlobProto(data=[1, 2, 3])
    bad.shape.dim.extend([2, 2])
    with pytest.raises(ModelLibsError, match="holds 3 values"):
        cm.blob_array(bad)


def test_golden_dsod300_stored_values():
    w = init_weights(deploy("DSOD300"), seed=0)
    total = sum(info.array.size for info in cm.iter_blobs(w))
    assert total == summarize(deploy("DSOD300")).stored_values == 14_795_828


def test_weight_table_lists_blobs_and_totals():
    text = cm.weight_table(weights_net("DSOD300_smallest"), limit=3)
    assert "Convolution1" in text and "64x3x3x3" in text
    assert "stored values: 5,872,372" in text and "more blobs" in text


def test_check_reports_missing_extra_and_shape_mismatches():
    d = deploy("DSOD300_smallest")
    w = weights_net("DSOD300_smallest")
    assert cm.check(d, w).ok
    w.layer[0].name = "renamed_conv"  # Convolution1 missing + 1 extra
    conv = next(layer for layer in w.layer if layer.name == "Convolution2")
    conv.blobs[0].shape.dim[1] += 1  # shape mismatch
    conv.blobs[0].data.extend([0.0] * (len(conv.blobs[0].data) // (conv.blobs[0].shape.dim[1] - 1)))
    bn = next(layer for layer in w.layer if layer.type == "BatchNorm")
    del bn.blobs[2]  # blob count mismatch
    r = cm.check(d, w)
    assert not r.ok
    assert any("Convolution1" in m for m in r.missing)
    assert any("renamed_conv" in e for e in r.extra)
    assert any("Convolution2" in s and "blob 0" in s for s in r.shape_mismatch)
    assert any(bn.name in s for s in r.count_mismatch)
    with pytest.raises(ModelLibsError) as err:
        cm.require_match(d, w, "bad.caffemodel", limit=2)
    msg = str(err.value)
    assert msg.startswith("bad.caffemodel: does not match the deploy net")
    assert "missing layer 'Convolution1'" in msg and "more" in msg


def test_check_other_model_names_first_mismatches():
    r = cm.check(deploy("DSOD300"), weights_net("DSOD300_smallest"))
    assert not r.ok and r.shape_mismatch


@pytest.mark.parametrize("content", [b"", b"\xff\xff\xff\xff garbage", b"\x0a\x03abc"])
def test_corrupt_or_empty_caffemodel_is_a_clear_error(tmp_path, content):
    p = tmp_path / "bad.caffemodel"
    p.write_bytes(content)
    with pytest.raises(ModelLibsError, match=r"bad\.caffemodel"):
        cm.read_caffemodel(p)


def test_missing_caffemodel_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLibsError, match=r"nope\.caffemodel: caffemodel not found"):
        cm.read_caffemodel(tmp_path / "nope.caffemodel")


def test_v1_layers_are_read():
    net = caffe_pb2.NetParameter()
    layer = net.layers.add(name="conv", type=caffe_pb2.V1LayerParameter.CONVOLUTION)
    layer.blobs.append(cm.make_blob(np.ones((2, 1, 3, 3)), legacy=True))
    assert [(i.layer, i.type, i.shape) for i in cm.iter_blobs(net)] == [("conv", "CONVOLUTION", [2, 1, 3, 3])]
