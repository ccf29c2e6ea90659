#!/usr/bin/env python3
"""Quickstart: the whole DSOD pipeline on the toolkit's own synthetic dataset, on the CPU.

1. make the synthetic shapes dataset (VOC layout) and its train/test LMDBs;
2. design a small DSOD-style detector with the public model_libs API (this part is the
   "design your own net" example: a dense stem, dense blocks with bottlenecks, transitions
   without pooling, the dense prediction structure and the BN multibox head);
3. train it with the fastest engine installed: the PyTorch engine (``--engine torch``, SSD
   Caffe's semantics, snapshots as .caffemodel), or the project's Caffe (``--engine caffe``);
4. score the final snapshot the official way with Caffe (DetectionEvaluate, 11-point mAP)
   and per class with the toolkit;
5. run the detection demo with OpenCV DNN on held-out images: one picture each (detections
   over faint ground truth) and a contact sheet of all of them;
6. plot the training log (loss, learning rate, test mAP).

The last line printed is ``mAP <value>`` on the synthetic test set. Needs the package
installed (``pip install -e .``; ``scripts/setup.sh`` does it in .venv).
"""

import functools
import sys
from pathlib import Path

from model_libs import P
from model_libs.cli import COUNT, NONNEGATIVE, SEED, bounded, make_parser, run
from model_libs.dsod import Backbone, PriorConfig, Recipe, dsod_body
from model_libs.dsod.data_layer import MEAN_BGR
from model_libs.recipes import quickstart as qs


def design_net(
    data, out: Path, iters: int, batch: int, n_test: int, size: int = 128, lr: float = 0.02
) -> Recipe:
    """A DSOD for 2 CPU cores: DS/16-32-16-1 with 2-layer dense blocks, four sources."""
    backbone = Backbone(
        stem=(16, 16, 32),  # dense stem: 3x3/2, 3x3, 3x3 convolutions
        growth=16,
        bottleneck_width=2,  # each dense layer: 1x1 (32) -> 3x3 (16), concatenated
        blocks=(2, 2, 2, 2),
        second_channels=64,  # half learned, half re-used from the first scale
        extra_channels=(64, 64),  # two down-sampling "learning half" blocks
        sources=("First", "Second", "Third", "Fourth"),
    )  # at 128: 16x16, 8x8, 4x4, 2x2
    priors = PriorConfig(  # the shapes span about 4-60 % of the image side
        min_sizes=[f * size for f in (0.1, 0.25, 0.45, 0.68)],
        max_sizes=[f * size for f in (0.25, 0.45, 0.68, 0.94)],
        aspect_ratios=[[2], [2], [2], [2]],
        steps=[8, 16, 32, 64],
    )
    # Light augmentation (mirror, whole image): measured on 2 cores, the full SSD
    # augmentation (crops, distortion, zoom-out) kept the loss on a plateau for the first
    # thousand iterations, more than a quickstart can afford.
    augment = {
        "mirror": True,
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
        model="DSOD_tiny",
        dataset="Synth",
        job_name=f"DSOD_tiny_{size}x{size}",
        model_name=f"DSOD_tiny_Synth_{size}x{size}",
        resize=(size, size),
        num_classes=6,
        body=functools.partial(dsod_body, bb=backbone),
        priors=priors,
        normalizations=[20] * 4,
        train_data=str(data.train_lmdb),
        test_data=str(data.test_lmdb),
        label_map_file=str(data.labelmap),
        name_size_file=str(data.name_size),
        output_result_dir=str(out / "results"),
        batch_sampler=[{}],
        train_transform=augment,
        batch_size=batch,
        accum_batch_size=batch,
        test_batch_size=10,
        num_test_image=n_test,
        lr=lr,
        stepvalue=[int(iters * 0.7), int(iters * 0.9)],
        max_iter=iters,
        snapshot=iters,
        display=10,
        test_interval=max(iters // 4, 1),
        test_initialization=False,
        bn_moving_average_fraction=0.9,  # BN statistics must follow a short training
        random_seed=1,
    )


def build_parser():
    ap = make_parser("quickstart.py", __doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/quickstart", help="working folder (default runs/quickstart)")
    ap.add_argument("--iters", type=COUNT, default=qs.ITERS, help=f"training iterations (default {qs.ITERS})")
    ap.add_argument("--batch", type=COUNT, default=qs.BATCH, help=f"training batch (default {qs.BATCH})")
    ap.add_argument(
        "--train", type=COUNT, default=qs.N_TRAIN, help=f"synthetic training images (default {qs.N_TRAIN})"
    )
    ap.add_argument(
        "--test", type=COUNT, default=qs.N_TEST, help=f"synthetic test images (default {qs.N_TEST})"
    )
    ap.add_argument(
        "--size", type=bounded(int, 64, 2048), default=128, help="network input size (default 128)"
    )
    ap.add_argument(
        "--lr", type=bounded(float, 0, lo_open=True), default=0.02, help="base learning rate (default 0.02)"
    )
    ap.add_argument("--seed", type=SEED, default=0)
    ap.add_argument("--demo-images", type=NONNEGATIVE, default=qs.DEMO_IMAGES)
    ap.add_argument(
        "--engine",
        choices=("auto", "torch", "caffe"),
        default="auto",
        help="training engine: torch (PyTorch, the fastest), caffe (the project's SSD Caffe), "
        "auto = torch when installed (default)",
    )
    ap.add_argument("--verbose", action="store_true", help="print the raw training log too")
    return ap


def quickstart(args) -> int:
    design = functools.partial(design_net, size=args.size, lr=args.lr)
    result = qs.run(
        design,
        Path(args.out),
        iters=args.iters,
        batch=args.batch,
        n_train=args.train,
        n_test=args.test,
        seed=args.seed,
        demo_images=args.demo_images,
        verbose=args.verbose,
        engine=args.engine,
    )
    print(result.summary())
    print(f"mAP {result.score.caffe_map:.4f}")
    return 0


def main(argv=None) -> int:
    return run(argv, build_parser, quickstart)


if __name__ == "__main__":
    sys.exit(main())
