"""DSOD nets against published facts: stored values, prior counts, head names, solvers."""

import dataclasses
import functools

import pytest
from google.protobuf import text_format

from model_libs import caffe_pb2
from model_libs.dsod import (
    MODELS,
    Backbone,
    PriorConfig,
    Recipe,
    deploy_net,
    dsod_body,
    recipe,
    solver,
    train_net,
)
from model_libs.dsod import test_net as build_test_net
from model_libs.dsod.models import VARIANTS
from model_libs.dsod.nets import write_nets
from model_libs.errors import ModelLibsError
from model_libs.summary import summarize


@pytest.fixture(scope="module")
def deploys():
    return {m: summarize(deploy_net(recipe(m))) for m in MODELS}


def test_dsod300_voc_matches_the_released_model(deploys):
    s = deploys["DSOD300"]
    # Official DSOD300 VOC0712 caffemodel: 59.2 MB, 14,795,828 floats.
    assert s.stored_values == 14_795_828
    assert s.learnable == 14_715_804
    assert s.statistics == 80_024
    assert s.priors == 8_744


def test_dsod300_coco_parameter_count():
    assert summarize(deploy_net(recipe("DSOD300", "coco"))).stored_values == 21_784_148


def test_small_variants_match_published_sizes(deploys):
    lite, smallest = deploys["DSOD300_lite"], deploys["DSOD300_smallest"]
    assert round(lite.stored_values / 1e6, 1) == 10.4
    assert round(smallest.stored_values / 1e6, 1) == 5.9
    # Released model files: 41.8 MB and 23.5 MB; the floats alone are just under that
    # (a caffemodel also holds layer names and parameters, tens of kB).
    assert 41.65 < lite.stored_values * 4 / 1e6 <= 41.8
    assert 23.4 < smallest.stored_values * 4 / 1e6 <= 23.5


def test_grp_dsod320_size_and_priors(deploys):
    s = deploys["GRP_DSOD320"]
    assert round(s.stored_values / 1e6, 2) == 15.96
    assert s.priors == 17_078
    per_layer = s.priors_by_layer()
    assert [per_layer[f"Recurrent{i}_gate_norm_mbox_priorbox"] for i in range(1, 7)] == [
        40 * 40 * 8,
        20 * 20 * 8,
        10 * 10 * 8,
        5 * 5 * 8,
        3 * 3 * 6,
        2 * 2 * 6,
    ]


def test_grp_gate_scales_take_their_scale_from_a_second_bottom():
    net = deploy_net(recipe("GRP_DSOD320"))
    s = {x.name: x for x in summarize(net).layers}
    gate_scales = [layer for layer in net.layer if layer.type == "Scale" and len(layer.bottom) == 2]
    assert len(gate_scales) == 12  # channel and global gate on six sources
    assert all(s[layer.name].blob_shapes == [] for layer in gate_scales)
    assert all(f"Recurrent{i}_gate" in {x.name for x in net.layer} for i in range(1, 7))


def test_dsod300_priors_per_source(deploys):
    per_layer = deploys["DSOD300"].priors_by_layer()
    assert per_layer == {
        "First_norm_mbox_priorbox": 38 * 38 * 4,
        "Second_norm_mbox_priorbox": 19 * 19 * 6,
        "Third_norm_mbox_priorbox": 10 * 10 * 6,
        "Fourth_norm_mbox_priorbox": 5 * 5 * 6,
        "Fifth_norm_mbox_priorbox": 3 * 3 * 4,
        "Sixth_norm_mbox_priorbox": 2 * 2 * 4,
    }


def test_dsod512_uses_ssd512_priors(deploys):
    s = deploys["DSOD512"]
    assert s.priors == 24_564  # SSD512's count
    assert list(s.priors_by_layer())[-3:] == [
        "Fifth__norm_mbox_priorbox",
        "Sixth__norm_mbox_priorbox",
        "Seventh__norm_mbox_priorbox",
    ]


def test_head_layers_and_shapes():
    net = deploy_net(recipe("DSOD300"))
    layers = {x.name: x for x in net.layer}
    conf = layers["First_norm_mbox_conf"].convolution_param
    assert conf.num_output == 4 * 21 and list(conf.kernel_size) == [3] and not conf.bias_term
    assert layers["First_norm_mbox_loc"].convolution_param.num_output == 16
    assert layers["First_norm_mbox_conf_bn"].batch_norm_param.eps == pytest.approx(0.001)
    prior = layers["Second_norm_mbox_priorbox"].prior_box_param
    assert list(prior.min_size) == [60.0] and list(prior.max_size) == [111.0]
    assert list(prior.aspect_ratio) == [2.0, 3.0] and prior.flip and not prior.clip
    assert prior.step == 16
    shapes = summarize(net).blob_shapes
    assert shapes["First"] == [1, 800, 38, 38]  # 128 + 6*48 -> 416, + 8*48 = 800
    assert shapes["Second"] == [1, 512, 19, 19]
    assert shapes["mbox_loc"] == [1, 8744 * 4]
    assert shapes["mbox_conf_flatten"] == [1, 8744 * 21]
    assert net.input_shape[0].dim == [1, 3, 300, 300]
    assert net.layer[-1].type == "DetectionOutput"


def test_train_and_test_net_structure():
    r = recipe("DSOD300")
    train, test = train_net(r, gpus=list(range(8))), build_test_net(r)
    assert train.name == "DSOD300_VOC0712_DSOD300_300x300_train"
    data = train.layer[0]
    assert data.type == "AnnotatedData" and data.data_param.batch_size == 4
    tp = data.transform_param
    assert tp.mirror and tp.distort_param.hue_delta == 18 and tp.expand_param.max_expand_ratio == 4
    assert len(tp.resize_param.interp_mode) == 5
    assert len(data.annotated_data_param.batch_sampler) == 7
    loss = train.layer[-1]
    assert loss.type == "MultiBoxLoss" and list(loss.propagate_down) == [True, True, False, False]
    assert loss.multibox_loss_param.code_type == caffe_pb2.PriorBoxParameter.CENTER_SIZE
    assert [x.type for x in test.layer[-2:]] == ["DetectionOutput", "DetectionEvaluate"]
    assert test.layer[0].data_param.batch_size == 2
    assert len(test.layer[0].annotated_data_param.batch_sampler) == 1  # pycaffe's default [{}]


@pytest.mark.parametrize(
    "model,gpus,batch,iter_size",
    [
        ("DSOD300", list(range(8)), 4, 4),
        ("GRP_DSOD320", list(range(8)), 6, 3),
        ("DSOD300", [], 32, 4),
        ("DSOD300", [0, 1], 16, 4),
        ("GRP_DSOD320", [], 48, 2),
    ],
)
def test_batch_split_as_official_scripts(model, gpus, batch, iter_size):
    r = recipe(model)
    assert r.split_batch(gpus) == (batch, iter_size)
    s = solver(r, "train.prototxt", "test.prototxt", "snap", gpus)
    assert s.iter_size == iter_size
    assert s.solver_mode == (caffe_pb2.SolverParameter.GPU if gpus else caffe_pb2.SolverParameter.CPU)


def test_solver_fields_match_the_official_voc_script():
    s = solver(recipe("DSOD300"), "t", "v", "p", list(range(8)))
    assert s.base_lr == pytest.approx(0.1)
    assert list(s.stepvalue) == [20000, 40000, 60000, 80000, 100000]
    assert (s.max_iter, s.snapshot, s.display, s.average_loss) == (100000, 2000, 20, 10)
    assert (s.test_iter, s.test_interval) == ([2476], 2000)
    assert (s.eval_type, s.ap_version, s.type) == ("detection", "11point", "SGD")
    coco = solver(recipe("DSOD300", "coco"), "t", "v", "p", list(range(8)))
    assert coco.test_iter == [2500] and coco.max_iter == 320000


@pytest.mark.parametrize("model", MODELS)
def test_every_written_file_holds_its_net(model, tmp_path):
    """write_nets puts each net in its own file, strictly parseable under the schema, and
    the solver points at those files."""
    r = recipe(model)
    files = write_nets(r, tmp_path, gpus=[0, 1])
    read = {
        k: text_format.Parse(files[k].read_text(), caffe_pb2.NetParameter())
        for k in ("train", "test", "deploy")
    }
    assert read["train"] == train_net(r, [0, 1])
    assert read["test"] == build_test_net(r)
    assert read["deploy"] == deploy_net(r)
    types = {k: [layer.type for layer in net.layer] for k, net in read.items()}
    assert types["train"][0] == "AnnotatedData" and types["train"][-1] == "MultiBoxLoss"
    assert types["test"][0] == "AnnotatedData" and types["test"][-1] == "DetectionEvaluate"
    assert types["deploy"][-1] == "DetectionOutput" and "AnnotatedData" not in types["deploy"]
    assert list(read["deploy"].input_shape[0].dim) == [1, 3, *r.resize]
    s = text_format.Parse(files["solver"].read_text(), caffe_pb2.SolverParameter())
    assert (s.train_net, s.test_net) == (str(files["train"]), [str(files["test"])])
    assert s.snapshot_prefix == str(tmp_path / r.model_name)
    assert s == solver(r, s.train_net, s.test_net[0], s.snapshot_prefix, [0, 1])


def test_bad_model_and_size_are_rejected():
    with pytest.raises(ModelLibsError, match="unknown model"):
        recipe("DSOD9000")
    with pytest.raises(ModelLibsError, match="impossible"):
        recipe("DSOD300", size=10)
    with pytest.raises(ModelLibsError, match="unknown dataset"):
        recipe("DSOD300", "imagenet")


def test_grp_dsod320_solver_matches_the_official_script():
    # GRP_DSOD320_pascal.py: stepvalue 20k/40k/60k/80k (no step at 100k), max_iter 100k.
    s = solver(recipe("GRP_DSOD320"), "t", "v", "p", list(range(8)))
    assert list(s.stepvalue) == [20000, 40000, 60000, 80000]
    assert (s.max_iter, s.test_interval, s.test_initialization) == (100000, 2000, True)
    assert (s.iter_size, s.base_lr) == (3, pytest.approx(0.1))


def _gate_widths(net) -> dict[str, int]:
    """Source -> channels its channel gate restores (the InnerProduct fed by ``<src>_fc``)."""
    return {
        layer.bottom[0][: -len("_fc")]: layer.inner_product_param.num_output
        for layer in net.layer
        if layer.type == "InnerProduct"
        and layer.bottom[0].endswith("_fc")
        and layer.inner_product_param.num_output > 1
    }


def test_grp_gates_are_as_wide_as_their_sources():
    net = deploy_net(recipe("GRP_DSOD320"))
    shapes = summarize(net).blob_shapes
    widths = _gate_widths(net)
    assert widths == {f"Recurrent{i}": shapes[f"Recurrent{i}"][1] for i in range(1, 7)}
    # ... which are the widths the release lists by hand (channel_nums)
    assert list(widths.values()) == [1184, 513, 258, 258, 258, 256]
    squeeze = {x.name: x.inner_product_param.num_output for x in net.layer if x.name.endswith("_fc")}
    assert squeeze["Recurrent1_fc"] == 1184 // 16


def _small_recipe(**kw) -> Recipe:
    bb = Backbone(
        stem=(16, 16, 32),
        growth=16,
        bottleneck_width=2,
        blocks=(2, 2, 2, 2),
        second_channels=64,
        extra_channels=(64, 48),
        sources=("First", "Second", "Third", "Fourth"),
    )
    args = dict(
        model="mine",
        dataset="Synth",
        job_name="mine",
        model_name="mine",
        resize=(128, 128),
        num_classes=6,
        body=functools.partial(dsod_body, bb=bb),
        priors=PriorConfig(
            min_sizes=[16, 40, 72, 100],
            max_sizes=[40, 72, 100, 128],
            aspect_ratios=[[2]] * 4,
            steps=[8, 16, 32, 64],
        ),
        normalizations=[20] * 4,
    )
    args.update(kw)
    return Recipe(**args)


def test_gates_of_a_designed_net_follow_its_body():
    net = deploy_net(_small_recipe(gated=True))
    # First: 32 + 2*16 = 64 -> 64 + 2*16 = 96; Second: 64 + 64; Third/Fourth: 2 * 64, 2 * 48
    assert _gate_widths(net) == {"First": 96, "Second": 128, "Third": 128, "Fourth": 96}
    assert [x.name for x in net.layer if x.type == "Eltwise"] == [
        f"{s}_gate" for s in ("First", "Second", "Third", "Fourth")
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(resize=(16, 16)), "too small"),
        (dict(resize=300), "resize must be"),
        (dict(num_classes=1), "num_classes"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(batch_size=64, accum_batch_size=32), "smaller than batch_size"),
        (dict(num_test_image=0), "num_test_image"),
        (dict(stepvalue=[40000, 20000]), "stepvalue"),
        (dict(ap_version="12point"), "ap_version"),
        (dict(normalizations=[20] * 3), "normalizations has 3 entries for 4"),
        (
            dict(priors=PriorConfig([16, 40], [10, 72], [[2], [2]], [8, 16]), normalizations=[20] * 2),
            "max_size",
        ),
        (dict(body="DSOD300"), "body must be a function"),
        (dict(bn_moving_average_fraction=1.5), "bn_moving_average_fraction"),
    ],
)
def test_a_hand_built_recipe_is_validated_on_construction(change, message):
    with pytest.raises(ModelLibsError, match=message) as err:
        _small_recipe(**change)
    assert "recipe 'mine'" in str(err.value)


def test_replacing_a_field_validates_again():
    r = _small_recipe()
    with pytest.raises(ModelLibsError, match="test_batch_size"):
        dataclasses.replace(r, test_batch_size=-1)


@pytest.mark.parametrize("model", MODELS)
def test_each_variant_row_is_consistent_with_its_body(model):
    v = VARIANTS[model]
    r = recipe(model, v.datasets[0])
    s = summarize(deploy_net(r))
    heads = [x.name for x in s.layers if x.type == "PriorBox"]
    assert len(heads) == len(v.steps) == len(v.aspect_ratios)
    assert r.resize == (v.native_size, v.native_size) and r.priors.steps[-1] == v.native_size
    assert r.batch_size == v.batch_size


def test_models_are_refused_for_datasets_they_were_not_released_for():
    with pytest.raises(ModelLibsError, match="GRP_DSOD320 is released for VOC0712 only"):
        recipe("GRP_DSOD320", "coco")


def _pool_net(side: int, kernel: int, stride: int) -> str:
    return (
        'layer { name: "data" type: "Input" top: "data" '
        f"input_param {{ shape {{ dim: 1 dim: 2 dim: {side} dim: {side} }} }} }}\n"
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
        f"pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} }} }}\n"
    )


def test_pooling_with_a_kernel_wider_than_its_input_follows_caffe():
    """Caffe sizes pooling as ceil((h + 2p - k) / s) + 1 and clips windows to the input, so a 2x2
    kernel over 1x1 gives 1x1 (DSOD300_smallest's Pooling7 at 64x64, which Caffe trains);
    only a size below 1 is impossible."""
    net = text_format.Parse(_pool_net(1, 2, 2), caffe_pb2.NetParameter())
    assert summarize(net).blob_shapes["pool"] == [1, 2, 1, 1]
    assert summarize(deploy_net(recipe("DSOD300_smallest", size=64))).blob_shapes["Pooling7"][2:] == [1, 1]
    with pytest.raises(ModelLibsError, match="too small for this pooling"):
        summarize(text_format.Parse(_pool_net(1, 3, 2), caffe_pb2.NetParameter()))
