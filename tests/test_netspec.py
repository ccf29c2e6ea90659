"""NetSpec follows pycaffe's net_spec rules: naming, parameter placement, in-place tops."""

import pytest

from model_libs import L, NetSpec, P, caffe_pb2, to_proto


def test_auto_names_follow_dependency_order():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    x = L.Convolution(n.data, num_output=4, kernel_size=3)
    y = L.Convolution(x, num_output=4, kernel_size=3)
    n.out = L.Concat(x, y, axis=1)
    proto = n.to_proto()
    assert [layer.name for layer in proto.layer] == ["data", "Convolution1", "Convolution2", "out"]
    assert list(proto.layer[3].bottom) == ["Convolution1", "Convolution2"]


def test_in_place_keeps_the_bottom_and_names_the_layer():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.relu = L.ReLU(n.data, in_place=True)
    layer = n.to_proto().layer[1]
    assert layer.name == "relu" and list(layer.top) == ["data"] == list(layer.bottom)


def test_parameter_placement():
    n = NetSpec()
    n.data, n.label = L.AnnotatedData(
        name="data",
        ntop=2,
        include=dict(phase=caffe_pb2.TRAIN),
        data_param=dict(batch_size=4, backend=P.Data.LMDB),
        transform_param=dict(mirror=True, mean_value=[1, 2, 3]),
        annotated_data_param=dict(batch_sampler=[{}, {"max_trials": 5}]),
    )
    n.conv = L.Convolution(
        n.data,
        num_output=2,
        kernel_size=1,
        param=[dict(lr_mult=1), dict(lr_mult=2)],
        weight_filler=dict(type="xavier"),
    )
    n.norm = L.Normalize(n.conv, across_spatial=False, scale_filler=dict(type="constant", value=20))
    p = n.to_proto()
    data, conv, norm = p.layer
    assert data.name == "data" and list(data.top) == ["data", "label"]
    assert data.include[0].phase == caffe_pb2.TRAIN
    assert data.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert list(data.transform_param.mean_value) == [1, 2, 3]
    assert len(data.annotated_data_param.batch_sampler) == 2
    assert data.annotated_data_param.batch_sampler[1].max_trials == 5
    assert [q.lr_mult for q in conv.param] == [1, 2]
    assert conv.convolution_param.weight_filler.type == "xavier"
    assert list(conv.convolution_param.kernel_size) == [1]
    assert norm.norm_param.scale_filler.value == 20  # Normalize uses norm_param


def test_types_without_own_param_message_take_layer_fields():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    n.up = L.Deconvolution(n.data, convolution_param=dict(num_output=2, kernel_size=2, stride=2))
    assert n.to_proto().layer[1].convolution_param.stride == [2]


def test_enum_access_and_ntop_zero():
    assert P.Resize.WARP == caffe_pb2.ResizeParameter.WARP
    assert P.PriorBox.CENTER_SIZE == 2
    assert P.Pooling.MAX == 0
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1]))
    silence = L.Silence(n.data, ntop=0)
    assert [layer.name for layer in to_proto(silence).layer] == ["Input1", "Silence1"]


def test_bad_input_is_a_type_error():
    with pytest.raises(TypeError, match="not a Top"):
        L.Convolution("data", num_output=1)


def test_unknown_param_message_is_named():
    with pytest.raises(AttributeError, match="NoSuchParameter"):
        _ = P.NoSuch.X
