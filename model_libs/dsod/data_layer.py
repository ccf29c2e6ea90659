"""The AnnotatedData input layer and the SSD data augmentation settings DSOD trains with."""

from __future__ import annotations

import copy

from ..netspec import L, P, Top
from ..proto import caffe_pb2


def ssd_batch_sampler() -> list[dict]:
    """SSD's seven batch samplers: the whole image, then crops of 0.3-1.0 scale and
    0.5-2 aspect ratio whose overlap with some object is at least 0.1/0.3/0.5/0.7/0.9,
    or at most 1.0 (any crop)."""
    samplers: list[dict] = [{"sampler": {}, "max_trials": 1, "max_sample": 1}]
    crop = {"min_scale": 0.3, "max_scale": 1.0, "min_aspect_ratio": 0.5, "max_aspect_ratio": 2.0}
    constraints = [{"min_jaccard_overlap": t} for t in (0.1, 0.3, 0.5, 0.7, 0.9)]
    constraints.append({"max_jaccard_overlap": 1.0})
    for c in constraints:
        samplers.append({"sampler": dict(crop), "sample_constraint": c, "max_trials": 50, "max_sample": 1})
    return samplers


MEAN_BGR = [104, 117, 123]


def train_transform(height: int, width: int, force_color: bool = False) -> dict:
    """Training transform: mirror, mean, warp resize with random interpolation, photometric
    distortion, 'zoom out' expansion up to 4x (p 0.5), centre-based annotation emission."""
    t: dict = {"mirror": True, "mean_value": list(MEAN_BGR)}
    if force_color:
        t["force_color"] = True
    t["resize_param"] = {
        "prob": 1,
        "resize_mode": P.Resize.WARP,
        "height": height,
        "width": width,
        "interp_mode": [P.Resize.LINEAR, P.Resize.AREA, P.Resize.NEAREST, P.Resize.CUBIC, P.Resize.LANCZOS4],
    }
    t["distort_param"] = {
        "brightness_prob": 0.5,
        "brightness_delta": 32,
        "contrast_prob": 0.5,
        "contrast_lower": 0.5,
        "contrast_upper": 1.5,
        "hue_prob": 0.5,
        "hue_delta": 18,
        "saturation_prob": 0.5,
        "saturation_lower": 0.5,
        "saturation_upper": 1.5,
        "random_order_prob": 0.0,
    }
    t["expand_param"] = {"prob": 0.5, "max_expand_ratio": 4.0}
    t["emit_constraint"] = {"emit_type": caffe_pb2.EmitConstraint.CENTER}
    return t


def test_transform(height: int, width: int, force_color: bool = False) -> dict:
    """Test transform: mean subtraction and a bilinear warp to the input size."""
    t: dict = {"mean_value": list(MEAN_BGR)}
    if force_color:
        t["force_color"] = True
    t["resize_param"] = {
        "prob": 1,
        "resize_mode": P.Resize.WARP,
        "height": height,
        "width": width,
        "interp_mode": [P.Resize.LINEAR],
    }
    return t


def annotated_data_layer(
    source: str,
    batch_size: int,
    train: bool,
    label_map_file: str,
    transform_param: dict,
    batch_sampler: list[dict] | None = None,
    anno_type: int | None = None,
) -> tuple[Top, Top]:
    """The AnnotatedData layer (named ``data``) reading an LMDB; returns (data, label)."""
    phase = caffe_pb2.Phase.Value("TRAIN" if train else "TEST")
    annotated = {
        "label_map_file": label_map_file,
        "batch_sampler": copy.deepcopy(batch_sampler) if batch_sampler else [{}],
    }
    if anno_type is not None:
        annotated["anno_type"] = anno_type
    return L.AnnotatedData(
        name="data",
        annotated_data_param=annotated,
        data_param=dict(batch_size=batch_size, backend=P.Data.LMDB, source=source),
        ntop=2,
        include=dict(phase=phase),
        transform_param=copy.deepcopy(transform_param),
    )
