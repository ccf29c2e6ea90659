"""Turn a :class:`~model_libs.dsod.recipe.Recipe` into the four files of a DSOD job.

``train_net``, ``test_net`` and ``deploy_net`` return NetParameters named as the official
scripts name them; ``solver`` returns the SolverParameter; ``write_job_files`` writes
them all (atomically) with the official layout of text.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format

from ..fsutil import Output
from ..netspec import L, NetSpec, P, to_prototxt
from ..proto import caffe_pb2
from .bodies import gated_module, source_channels
from .data_layer import annotated_data_layer, test_transform, train_transform
from .heads import multibox_head
from .recipe import Recipe


def multibox_loss_param(r: Recipe) -> dict:
    return {
        "loc_loss_type": P.MultiBoxLoss.SMOOTH_L1,
        "conf_loss_type": P.MultiBoxLoss.SOFTMAX,
        "loc_weight": r.loc_weight,
        "num_classes": r.num_classes,
        "share_location": True,
        "match_type": P.MultiBoxLoss.PER_PREDICTION,
        "overlap_threshold": 0.5,
        "use_prior_for_matching": True,
        "background_label_id": 0,
        "use_difficult_gt": r.train_on_diff_gt,
        "mining_type": P.MultiBoxLoss.MAX_NEGATIVE,
        "neg_pos_ratio": r.neg_pos_ratio,
        "neg_overlap": 0.5,
        "code_type": P.PriorBox.CENTER_SIZE,
        "ignore_cross_boundary_bbox": False,
    }


def detection_output_param(r: Recipe) -> dict:
    return {
        "num_classes": r.num_classes,
        "share_location": True,
        "background_label_id": 0,
        "nms_param": {"nms_threshold": 0.45, "top_k": 400},
        "save_output_param": {
            "output_directory": r.output_result_dir,
            "output_name_prefix": r.output_name_prefix,
            "output_format": r.output_format,
            "label_map_file": r.label_map_file,
            "name_size_file": r.name_size_file,
            "num_test_image": r.num_test_image,
        },
        "keep_top_k": 200,
        "confidence_threshold": 0.01,
        "code_type": P.PriorBox.CENTER_SIZE,
    }


def detection_evaluate_param(r: Recipe) -> dict:
    return {
        "num_classes": r.num_classes,
        "background_label_id": 0,
        "overlap_threshold": 0.5,
        "evaluate_difficult_gt": False,
        "name_size_file": r.name_size_file,
    }


def _body_and_head(net: NetSpec, r: Recipe) -> list:
    sources = r.body(net, "data")
    if r.gated:
        channels = source_channels(r.body, r.resize)
        sources = gated_module(net, sources, [channels[s] for s in sources])
    return multibox_head(
        net, "data", sources, r.num_classes, r.priors, normalizations=r.normalizations, kernel_size=3, pad=1
    )


def _named(net: NetSpec, name: str) -> caffe_pb2.NetParameter:
    proto = net.to_proto()
    proto.name = name
    return proto


def train_net(r: Recipe, gpus: list[int] | None = None) -> caffe_pb2.NetParameter:
    """The training net: AnnotatedData with augmentation, body, head, MultiBoxLoss."""
    per_device, _ = r.split_batch(gpus or [])
    h, w = r.resize
    net = NetSpec()
    net.data, net.label = annotated_data_layer(
        r.train_data,
        per_device,
        train=True,
        label_map_file=r.label_map_file,
        transform_param=r.train_transform or train_transform(h, w, r.force_color),
        batch_sampler=r.batch_sampler,
    )
    mbox = _body_and_head(net, r)
    net.mbox_loss = L.MultiBoxLoss(
        *mbox,
        net.label,
        multibox_loss_param=multibox_loss_param(r),
        loss_param={"normalization": P.Loss.VALID},
        include=dict(phase=caffe_pb2.Phase.Value("TRAIN")),
        propagate_down=[True, True, False, False],
    )
    proto = _named(net, f"{r.model_name}_train")
    if r.bn_moving_average_fraction is not None:
        for layer in proto.layer:
            if layer.type == "BatchNorm":
                layer.batch_norm_param.moving_average_fraction = r.bn_moving_average_fraction
    return proto


def _test_spec(r: Recipe) -> NetSpec:
    h, w = r.resize
    net = NetSpec()
    net.data, net.label = annotated_data_layer(
        r.test_data,
        r.test_batch_size,
        train=False,
        label_map_file=r.label_map_file,
        transform_param=test_transform(h, w, r.force_color),
    )
    loc, conf, priorbox = _body_and_head(net, r)
    net.mbox_conf_reshape = L.Reshape(conf, shape=dict(dim=[0, -1, r.num_classes]))
    net.mbox_conf_softmax = L.Softmax(net.mbox_conf_reshape, axis=2)
    net.mbox_conf_flatten = L.Flatten(net.mbox_conf_softmax, axis=1)
    net.detection_out = L.DetectionOutput(
        loc,
        net.mbox_conf_flatten,
        priorbox,
        detection_output_param=detection_output_param(r),
        include=dict(phase=caffe_pb2.Phase.Value("TEST")),
    )
    net.detection_eval = L.DetectionEvaluate(
        net.detection_out,
        net.label,
        detection_evaluate_param=detection_evaluate_param(r),
        include=dict(phase=caffe_pb2.Phase.Value("TEST")),
    )
    return net


def test_net(r: Recipe) -> caffe_pb2.NetParameter:
    """The test net: AnnotatedData, body, head, softmax, DetectionOutput, DetectionEvaluate."""
    return _named(_test_spec(r), f"{r.model_name}_test")


def deploy_net(r: Recipe, batch: int = 1) -> caffe_pb2.NetParameter:
    """The test net without its data and evaluation layers, fed by an ``input`` blob."""
    proto = _test_spec(r).to_proto()
    del proto.layer[0]
    del proto.layer[-1]
    proto.name = f"{r.model_name}_deploy"
    proto.input.extend(["data"])
    proto.input_shape.extend([caffe_pb2.BlobShape(dim=[batch, 3, r.resize[0], r.resize[1]])])
    return proto


def solver(
    r: Recipe, train_net_file: str, test_net_file: str, snapshot_prefix: str, gpus: list[int] | None = None
) -> caffe_pb2.SolverParameter:
    """The SGD solver of the official scripts, with the batch split for ``gpus``."""
    gpus = gpus or []
    _, iter_size = r.split_batch(gpus)
    # SSD scales the per-image rate for VALID normalisation (x25 / loc_weight), DSOD by 10.
    base_lr = r.lr if r.lr is not None else 10 * r.base_lr * 25.0 / r.loc_weight
    params = dict(
        base_lr=base_lr,
        weight_decay=0.0005,
        lr_policy="multistep",
        stepvalue=list(r.stepvalue),
        gamma=0.1,
        momentum=0.9,
        iter_size=iter_size,
        max_iter=r.max_iter,
        snapshot=r.snapshot,
        display=r.display,
        average_loss=10,
        type="SGD",
        solver_mode=P.Solver.GPU if gpus else P.Solver.CPU,
        device_id=gpus[0] if gpus else 0,
        debug_info=False,
        snapshot_after_train=True,
        test_iter=[r.test_iter],
        test_interval=r.test_interval,
        eval_type="detection",
        ap_version=r.ap_version,
        test_initialization=r.test_initialization,
    )
    if r.show_per_class_result is not None:
        params["show_per_class_result"] = r.show_per_class_result
    if r.random_seed is not None:
        params["random_seed"] = r.random_seed
    return caffe_pb2.SolverParameter(
        train_net=train_net_file, test_net=[test_net_file], snapshot_prefix=snapshot_prefix, **params
    )


def net_text(proto: caffe_pb2.NetParameter) -> str:
    """Prototxt text laid out as the official scripts print it."""
    return to_prototxt(proto) + "\n"


def job_files(r: Recipe, out_dir: str | Path) -> dict[str, Path]:
    """Paths of the job's files under ``out_dir`` (nothing is written)."""
    out = Path(out_dir)
    return {
        "train": out / "train.prototxt",
        "test": out / "test.prototxt",
        "deploy": out / "deploy.prototxt",
        "solver": out / "solver.prototxt",
        "job": out / f"{r.model_name}.sh",
        "log": out / f"{r.model_name}.log",
        "snapshot_prefix": out / r.model_name,
    }


def render_nets(r: Recipe, out_dir: str | Path, gpus: list[int] | None = None) -> dict[str, str]:
    """The text of train/test/deploy/solver prototxts for ``out_dir`` (nothing is written)."""
    files = job_files(r, out_dir)
    return {
        "train": net_text(train_net(r, gpus)),
        "test": net_text(test_net(r)),
        "deploy": net_text(deploy_net(r)),
        "solver": to_prototxt(
            solver(r, str(files["train"]), str(files["test"]), str(files["snapshot_prefix"]), gpus)
        )
        + "\n",
    }


def write_nets(r: Recipe, out_dir: str | Path, gpus: list[int] | None = None) -> dict[str, Path]:
    """Write train/test/deploy/solver prototxts into ``out_dir``; returns all job paths.

    Everything is built before anything is written, so a failure leaves no partial set.
    """
    texts = render_nets(r, out_dir, gpus)
    files = job_files(r, out_dir)
    with Output(out_dir, kind="folder", what="job folder", recognise=is_prototxt) as folder:
        for key, text in texts.items():
            folder.write_text(text, files[key].name)
    return files


def is_prototxt(path: Path) -> bool:
    """A net or solver text prototxt (what rewriting a job may replace)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    for message in (caffe_pb2.NetParameter(), caffe_pb2.SolverParameter()):
        try:
            text_format.Parse(text, message)
            return True
        except text_format.ParseError:
            continue
    return False
