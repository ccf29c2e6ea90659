"""The schema: bindings current, upstream SSD field numbers and defaults where DSOD relies on them."""

from pathlib import Path

import pytest
from google.protobuf import text_format

from model_libs.proto import caffe_pb2, regen


def test_bindings_are_generated_from_the_current_proto():
    assert regen.main(["--check"]) == 0


@pytest.mark.parametrize(
    "message, field, number",
    [
        ("TransformationParameter", "resize_param", 8),
        ("TransformationParameter", "noise_param", 9),
        ("TransformationParameter", "emit_constraint", 10),
        ("TransformationParameter", "distort_param", 13),
        ("TransformationParameter", "expand_param", 14),
        ("AnnotatedDataParameter", "anno_type", 3),
        ("DetectionEvaluateParameter", "resize_param", 6),
        ("SaveOutputParameter", "resize_param", 7),
        ("DetectionOutputParameter", "save_file", 12),
        ("LayerParameter", "annotated_data_param", 200),
        ("LayerParameter", "multibox_loss_param", 201),
        ("LayerParameter", "permute_param", 202),
        ("LayerParameter", "prior_box_param", 203),
        ("LayerParameter", "detection_output_param", 204),
        ("LayerParameter", "detection_evaluate_param", 205),
        ("LayerParameter", "norm_param", 206),
        ("SolverParameter", "eval_type", 41),
        ("SolverParameter", "ap_version", 42),
        ("BlobProto", "shape", 7),
        ("BlobProto", "num", 1),
        ("NetParameter", "layer", 100),
        ("AnnotatedDatum", "annotation_group", 3),
    ],
)
def test_upstream_field_numbers(message, field, number):
    assert getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[field].number == number


def test_upstream_defaults():
    assert caffe_pb2.PriorBoxParameter().clip is False  # the fork changed this to true
    assert caffe_pb2.PriorBoxParameter().flip is True
    assert caffe_pb2.ExpansionParameter().prob == 1
    assert caffe_pb2.ResizeParameter().resize_mode == caffe_pb2.ResizeParameter.WARP
    assert caffe_pb2.SolverParameter().ap_version == "Integral"
    assert caffe_pb2.MultiBoxLossParameter().code_type == caffe_pb2.PriorBoxParameter.CORNER
    assert [caffe_pb2.ResizeParameter.Interp_mode.Name(i) for i in range(1, 6)] == [
        "LINEAR",
        "AREA",
        "NEAREST",
        "CUBIC",
        "LANCZOS4",
    ]


def test_ssd_transform_text_parses():
    text = """
      mirror: true mean_value: 104 mean_value: 117 mean_value: 123
      resize_param { prob: 1 resize_mode: WARP height: 300 width: 300 interp_mode: LINEAR interp_mode: AREA }
      distort_param { brightness_prob: 0.5 brightness_delta: 32 hue_delta: 18 }
      expand_param { prob: 0.5 max_expand_ratio: 4 }
      emit_constraint { emit_type: CENTER }
    """
    t = text_format.Parse(text, caffe_pb2.TransformationParameter())
    assert t.resize_param.height == 300 and list(t.resize_param.interp_mode) == [1, 2]
    assert t.expand_param.max_expand_ratio == 4


def test_unknown_field_is_rejected():
    with pytest.raises(text_format.ParseError):
        text_format.Parse("old_resize_param { height: 3 }", caffe_pb2.TransformationParameter())


def test_one_protoc_runner():
    """caffe/build.py generates pycaffe's schema module through model_libs.proto.regen."""
    build = (Path(__file__).resolve().parents[1] / "caffe" / "build.py").read_text()
    assert "grpc_tools" not in build and "regen.generate(" in build
