#!/usr/bin/env python3
"""Quickstart: the whole DSOD pipeline on the toolkit's own synthetic dataset, on the CPU.

1. make the synthetic shapes dataset (VOC layout) and its train/test LMDBs;
2. design a small DSOD-style detector with the public model_libs API (this part is the
   "design your own net" example: a dense stem, dense blocks with bottlenecks, transitions
   without pooling, the dense prediction structure and the BN multibox head);
3. train it with the project's Caffe (progress shown, raw log kept);
4. score the final snapshot the official way (Caffe's DetectionEvaluate mAP) and per class;
5. run the detection demo on held-out images and save pictures, plus a training plot.

The last line printed is ``mAP <value>`` on the synthetic test set.
"""

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout

from model_libs.dsod import Backbone, PriorConfig, Recipe, dsod_body
from model_libs.dsod.data_layer import ssd_batch_sampler, train_transform
from model_libs.errors import ModelLibsError

SIZE = 160  # network input; the synthetic images are 192-256 px


def design_net(data, out: Path, iters: int, batch: int, n_test: int) -> Recipe:
    """A DSOD for 2 CPU cores: DS/16-32-16-1 with 2-layer dense blocks, four sources."""
    backbone = Backbone(
        stem=(16, 16, 32),            # dense stem: 3x3/2, 3x3, 3x3 convolutions
        growth=16, bottleneck_width=2,  # each dense layer: 1x1 (32) -> 3x3 (16), concatenated
        blocks=(2, 2, 2, 2),
        second_channels=64,           # half learned, half re-used from the first scale
        extra_channels=(64, 64),      # two down-sampling "learning half" blocks
        sources=("First", "Second", "Third", "Fourth"))  # 20x20, 10x10, 5x5, 3x3
    priors = PriorConfig(                # shapes are 8-130 px in a 192-256 px image
        min_sizes=[16.0, 40.0, 72.0, 108.0], max_sizes=[40.0, 72.0, 108.0, 150.0],
        aspect_ratios=[[2], [2], [2], [2]], steps=[8, 16, 32, 64])
    augment = train_transform(SIZE, SIZE)  # SSD's augmentation, with a gentler zoom-out
    augment["expand_param"] = {"prob": 0.3, "max_expand_ratio": 1.5}
    return Recipe(
        model="DSOD_tiny", dataset="Synth", job_name=f"DSOD_tiny_{SIZE}x{SIZE}",
        model_name=f"DSOD_tiny_Synth_{SIZE}x{SIZE}", resize=(SIZE, SIZE), num_classes=6,
        body=functools.partial(dsod_body, bb=backbone), priors=priors, normalizations=[20] * 4,
        train_data=str(data.train_lmdb), test_data=str(data.test_lmdb),
        label_map_file=str(data.labelmap), name_size_file=str(data.name_size),
        output_result_dir=str(out / "results"), batch_sampler=ssd_batch_sampler(),
        train_transform=augment,
        batch_size=batch, accum_batch_size=batch, test_batch_size=10, num_test_image=n_test,
        lr=0.04, stepvalue=[int(iters * 0.7), int(iters * 0.9)], max_iter=iters, snapshot=iters,
        display=10, test_interval=max(iters // 4, 1), test_initialization=False,
        random_seed=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/quickstart", help="working folder (default runs/quickstart)")
    ap.add_argument("--iters", type=int, default=1200, help="training iterations (default 1200)")
    ap.add_argument("--batch", type=int, default=16, help="training batch (default 16)")
    ap.add_argument("--train", type=int, default=400, help="synthetic training images")
    ap.add_argument("--test", type=int, default=100, help="synthetic test images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demo-images", type=int, default=6)
    ap.add_argument("--verbose", action="store_true", help="print Caffe's raw log too")
    args = ap.parse_args(argv)
    from model_libs.recipes.quickstart import run

    try:
        result = run(design_net, Path(args.out), iters=args.iters, batch=args.batch,
                     n_train=args.train, n_test=args.test, seed=args.seed,
                     demo_images=args.demo_images, verbose=args.verbose)
    except ModelLibsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"mAP {result.caffe_map:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
