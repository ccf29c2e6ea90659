"""A small Input-fed net (conv, BatchNorm, Scale, ReLU, a frozen conv, concat, pooling, inner
product, EuclideanLoss) and its solver, trained by pycaffe and by the torch trainer on the
same fixed batches; also the per-rank body of the DDP tests (run in spawned processes)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

NET = """
name: "small"
layer {{ name: "data" type: "Input" top: "data" top: "target"
  input_param {{ shape {{ dim: {n} dim: 3 dim: 12 dim: 12 }} shape {{ dim: {n} dim: 1 }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param {{ lr_mult: 1 decay_mult: 1 }}
  convolution_param {{ num_output: 6 kernel_size: 3 pad: 1 bias_term: false
    weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  param {{ lr_mult: 0 decay_mult: 0 }} param {{ lr_mult: 0 decay_mult: 0 }}
  param {{ lr_mult: 0 decay_mult: 0 }}
  batch_norm_param {{ moving_average_fraction: 0.9 eps: 0.001 }} }}
layer {{ name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
  param {{ lr_mult: 1 decay_mult: 0 }} param {{ lr_mult: 1 decay_mult: 0 }}
  scale_param {{ bias_term: true filler {{ type: "constant" value: 1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" param {{ lr_mult: 0 decay_mult: 1 }}
  convolution_param {{ num_output: 4 kernel_size: 1 bias_term: false weight_filler {{ type: "msra" }} }} }}
layer {{ name: "cat" type: "Concat" bottom: "conv1" bottom: "conv2" top: "cat" }}
layer {{ name: "pool" type: "Pooling" bottom: "cat" top: "pool"
  pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: 1 weight_filler {{ type: "gaussian" std: 0.05 }}
    bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }}
"""

SOLVER = """train_net: "{net}"
base_lr: 0.01
lr_policy: "multistep"
stepvalue: 1
stepvalue: 3
gamma: 0.2
momentum: 0.9
weight_decay: 0.001
iter_size: {iter_size}
max_iter: {max_iter}
display: {display}
average_loss: 2
snapshot: {snapshot}
snapshot_prefix: "{prefix}"
snapshot_after_train: true
solver_mode: CPU
random_seed: 1
"""


def write_job(
    folder: Path,
    name: str = "solver",
    batch: int = 4,
    iter_size: int = 2,
    max_iter: int = 3,
    display: int = 1,
    snapshot: int = 0,
) -> Path:
    """net + solver files in ``folder``; returns the solver path (snapshot prefix ``<name>``)."""
    folder.mkdir(parents=True, exist_ok=True)
    net = folder / f"{name}_net.prototxt"
    net.write_text(NET.format(n=batch))
    solver = folder / f"{name}.prototxt"
    solver.write_text(
        SOLVER.format(
            net=net,
            iter_size=iter_size,
            max_iter=max_iter,
            display=display,
            snapshot=snapshot,
            prefix=folder / name,
        )
    )
    return solver


def batches(n: int, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` fixed batches of ``n`` images and targets."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        x = rng.normal(size=(n, 3, 12, 12)).astype(np.float32)
        t = (x[:, 0].mean(axis=(1, 2))[:, None] * 3 + 0.5).astype(np.float32)
        out.append({"data": x, "target": t})
    return out


def torch_batches(arrays: list[dict[str, np.ndarray]]):
    """An endless iterator over the batches as tensors, in order."""
    import torch

    return itertools.cycle([{k: torch.from_numpy(v) for k, v in b.items()} for b in arrays])


def ddp_rank(rank: int, world: int, port: int, runs: list[tuple[str, str, str, bool]]) -> None:
    """One rank of a gloo job. For each run ``(solver, weights, out folder, sync_bn)``: train
    on batch ``rank`` of :func:`batches` (4 images), save the blobs as ``rank<r>.npz``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    import torch

    torch.set_num_threads(1)
    from model_libs.pytorch.distributed import DistContext
    from model_libs.pytorch.trainer import Trainer, TrainOptions
    from model_libs.recipes.solver_job import load_solver_job

    arrays = batches(4, 2)
    for solver, weights, out, sync_bn in runs:
        job = load_solver_job(solver)
        opts = TrainOptions(weights=weights, channels_last=False, sync_bn=sync_bn)
        trainer = Trainer(job, opts, ctx=DistContext.from_env(), train_batches=torch_batches([arrays[rank]]))
        trainer.step(job.max_iter)
        blobs = {f"{layer}/{i}": t.detach().numpy().copy() for layer, i, t, _, _ in trainer.net.named_blobs()}
        np.savez(Path(out) / f"rank{rank}.npz", **blobs)
    torch.distributed.destroy_process_group()


def tiny_dsod(folder: Path, lmdb: Path, labelmap: Path, num_classes: int, batch: int = 2, size: int = 64):
    """A small DSOD (dense stem, four 1-layer dense blocks, two sources at 1/8 and 1/16, BN
    multibox head) trained at ``size`` on ``lmdb`` without augmentation (whole image, warped,
    no mirror). Its smallest source keeps 16 values per channel per image: a BatchNorm over a
    handful of values turns float rounding into large relative differences."""
    import functools

    from model_libs import P
    from model_libs.dsod import Backbone, PriorConfig, Recipe, dsod_body
    from model_libs.dsod.data_layer import MEAN_BGR

    bb = Backbone(
        stem=(8, 8, 16),
        growth=8,
        bottleneck_width=2,
        blocks=(1, 1, 1, 1),
        second_channels=16,
        extra_channels=(),
        sources=("First", "Second"),
    )
    priors = PriorConfig(
        min_sizes=[f * size for f in (0.2, 0.5)],
        max_sizes=[f * size for f in (0.5, 0.9)],
        aspect_ratios=[[2], [2]],
        steps=[8, 16],
    )
    plain = {
        "mean_value": list(MEAN_BGR),
        "resize_param": {
            "prob": 1,
            "resize_mode": P.Resize.WARP,
            "height": size,
            "width": size,
            "interp_mode": [P.Resize.LINEAR],
        },
    }
    return Recipe(
        model="tiny",
        dataset="T",
        job_name="tiny",
        model_name="tiny",
        resize=(size, size),
        num_classes=num_classes,
        body=functools.partial(dsod_body, bb=bb),
        priors=priors,
        normalizations=[20] * 2,
        train_data=str(lmdb),
        test_data=str(lmdb),
        label_map_file=str(labelmap),
        name_size_file="",
        output_result_dir=str(folder / "results"),
        batch_sampler=[],
        train_transform=plain,
        batch_size=batch,
        accum_batch_size=batch * 2,
        test_batch_size=2,
        num_test_image=4,
        lr=0.01,
        stepvalue=[1],
        max_iter=2,
        snapshot=0,
        display=1,
        test_interval=1000,
        test_initialization=False,
        random_seed=1,
    )


def textured_detection_lmdb(path: Path, n: int = 8, size: int = 96, num_classes: int = 4, seed: int = 0):
    """``n`` PNG images with one or two boxes each, on noise. Flat images give many equal
    activations and losses (ties in max pooling, in hard-negative ranking) that rounding then
    breaks differently in two engines; measured here: flat images moved the stem's gradients
    by ~5e-3 between the engines, textured ones by ~1e-5."""
    from tests.caffe_support import annotated_datum, scene, write_lmdb

    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            x0, y0 = rng.uniform(0.05, 0.5, 2)
            bw, bh = rng.uniform(0.25, 0.45, 2)
            label = int(rng.integers(1, num_classes))
            boxes.append((label, float(x0), float(y0), float(x0 + bw), float(y0 + bh)))
        colors = {b[0]: tuple(int(v) for v in rng.integers(0, 256, 3)) for b in boxes}
        img = scene(size, size, boxes, colors=colors).astype(np.float32) + rng.normal(0, 20, (size, size, 3))
        records.append(annotated_datum(np.clip(img, 0, 255).astype(np.uint8), boxes, ext=".png"))
    return write_lmdb(path, records)
