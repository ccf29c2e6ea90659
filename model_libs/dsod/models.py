"""The DSOD family: official model/dataset presets and the derived small variants.

Sources of the numbers:
- DSOD300 (VOC0712, VOC0712Plus, COCO) and GRP_DSOD320 (VOC0712): the official release
  scripts (DSOD300_pascal.py, DSOD300_pascal++.py, DSOD300_coco.py, GRP_DSOD320_pascal.py
  with model_libs.py) - body, head, priors, batch and solver settings. GRP_DSOD320's solver
  steps at 20k/40k/60k/80k only (DSOD300's also at 100k); its gate channels
  (1184, 513, 258, 258, 258, 256 in the release) are what the body's sources carry.
- DSOD512: the official code has the body only (DSOD512_V3_Body: one more down-sampling
  block, sources First..Fourth, Fifth_, Sixth_, Seventh_). Priors follow SSD512
  (ssd_pascal_512.py): min_dim 512, ratios 15..90 % with a 4/10 % first pair, steps
  8..512, aspect ratios [2],[2,3]x4,[2],[2] -> 24,564 priors. Batch 16 per 128
  accumulated is our choice (memory), not published.
- DSOD300_lite / DSOD300_smallest: the release lists them (VOC07 test 76.7 / 73.6 mAP,
  10.4M / 5.9M parameters, 41.8 MB / 23.5 MB) without a generator. Smallest is
  DS/64-64-16-1 (paper Table 4 notation: stem 64, bottleneck 64, growth 16,
  compression 1) with dense blocks 6/8/8/8 -> 5,872,372 stored values (23.5 MB).
  Lite is DS/64-256-64-1 after its release folder name; dense blocks of 3/4/4/4 layers
  give 10,436,854 values (41.8 MB) - that depth is our inference matching the published
  size, not a published number. Both keep DSOD300's prediction structure (256/256/128/
  128/128 channels), which is what the published sizes require.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..datasets.labelmap import load_labelmap
from ..datasets.layout import LAYOUTS, count_listed_images, layout
from ..errors import ModelLibsError
from ..netspec import NetSpec
from .bodies import Backbone, dsod_body, grp_dsod320_body
from .data_layer import ssd_batch_sampler
from .heads import PriorConfig, ssd_prior_sizes
from .recipe import Recipe

DATASETS = tuple(LAYOUTS)

PriorRatios = tuple[int, int, tuple[int, int]]  # SSD's (min %, max %, (first min %, first max %))


@dataclass(frozen=True)
class Variant:
    """One DSOD model as numbers; :func:`recipe` turns a row into a :class:`Recipe`."""

    body: Callable[[NetSpec, str], list[str]]  # adds the backbone, returns the source names
    native_size: int  # the square input size the model is published at
    steps: tuple[int, ...]  # prior steps at the native size; the last is always the input size
    aspect_ratios: tuple[tuple[float, ...], ...]
    batch_size: int  # images per iteration before the split across GPUs (accumulated to 128)
    prior_ratios: PriorRatios | None = None  # None: the dataset's
    gated: bool = False  # GRP-DSOD's gates on every source
    job_prefix: str | None = None  # job and model names start with it (None: the model name)
    datasets: tuple[str, ...] = DATASETS  # the datasets the model is released for
    stepvalue: tuple[int, ...] | None = None  # solver steps (None: the dataset's schedule)


@dataclass(frozen=True)
class DatasetPreset:
    """Per-dataset settings of the official scripts (files: :mod:`model_libs.datasets.layout`)."""

    prior_ratios: PriorRatios
    test_batch_size: int
    train_on_diff_gt: bool
    stepvalue: tuple[int, ...]
    max_iter: int
    snapshot: int
    display: int
    test_interval: int
    test_initialization: bool
    test_iter_ceil: bool = True  # VOC scripts round test_iter up; the COCO script divides
    force_color: bool = False
    output_name_prefix: str = "comp4_det_test_"
    output_format: str = "VOC"


_SSD300 = dict(steps=(8, 16, 32, 64, 100, 300), aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)))

VARIANTS: dict[str, Variant] = {
    "DSOD300": Variant(functools.partial(dsod_body, bb=Backbone()), 300, batch_size=32, **_SSD300),
    "DSOD300_lite": Variant(
        functools.partial(dsod_body, bb=Backbone(growth=64, bottleneck_width=4, blocks=(3, 4, 4, 4))),
        300,
        batch_size=32,
        **_SSD300,
    ),
    "DSOD300_smallest": Variant(
        functools.partial(dsod_body, bb=Backbone(growth=16, bottleneck_width=4, blocks=(6, 8, 8, 8))),
        300,
        batch_size=32,
        **_SSD300,
    ),
    "DSOD512": Variant(
        functools.partial(
            dsod_body,
            bb=Backbone(
                extra_channels=(256, 128, 128, 128, 128),
                sources=("First", "Second", "Third", "Fourth", "Fifth_", "Sixth_", "Seventh_"),
            ),
        ),
        512,
        steps=(8, 16, 32, 64, 128, 256, 512),
        aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
        batch_size=16,
        prior_ratios=(15, 90, (4, 10)),
    ),
    "GRP_DSOD320": Variant(
        grp_dsod320_body,
        320,
        steps=(8, 16, 32, 64, 100, 320),
        aspect_ratios=((1.6, 2, 3),) * 4 + ((1.6, 2),) * 2,
        batch_size=48,
        gated=True,
        job_prefix="GRP_DSOD320_v2_gate",
        datasets=("VOC0712",),
        stepvalue=(20000, 40000, 60000, 80000),
    ),
}
MODELS = tuple(VARIANTS)

PRESETS: dict[str, DatasetPreset] = {
    "VOC0712": DatasetPreset(
        prior_ratios=(20, 90, (10, 20)),
        test_batch_size=2,
        train_on_diff_gt=True,
        stepvalue=(20000, 40000, 60000, 80000, 100000),
        max_iter=100000,
        snapshot=2000,
        display=20,
        test_interval=2000,
        test_initialization=True,
    ),
    "VOC0712Plus": DatasetPreset(
        prior_ratios=(20, 90, (10, 20)),
        test_batch_size=1,
        train_on_diff_gt=True,
        stepvalue=(20000, 40000, 60000, 80000, 100000),
        max_iter=120000,
        snapshot=2000,
        display=20,
        test_interval=160000,
        test_initialization=False,
    ),
    "coco": DatasetPreset(
        prior_ratios=(15, 90, (7, 15)),
        test_batch_size=2,
        test_iter_ceil=False,
        train_on_diff_gt=False,
        stepvalue=(80000, 140000, 200000, 260000, 320000),
        max_iter=320000,
        snapshot=10000,
        display=10,
        test_interval=1000000,
        test_initialization=False,
        force_color=True,
        output_name_prefix="detections_minival_ssd300_results",
        output_format="COCO",
    ),
}


def recipe(
    model: str,
    dataset: str = "VOC0712",
    data_root: str | Path | None = None,
    out_dir: str | Path = ".",
    size: int | None = None,
) -> Recipe:
    """The official (or derived) recipe for ``model`` trained on ``dataset``.

    Files follow :mod:`model_libs.datasets.layout` under ``data_root`` (default ``data``);
    label maps are the package's. The test count is the official one, or the length of the
    test name/size list when that list exists (the data actually converted).
    ``size`` overrides the square input size (priors scale with it, as SSD's min_dim).
    """
    if model not in VARIANTS:
        raise ModelLibsError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    v = VARIANTS[model]
    lay = layout(dataset)
    if dataset not in v.datasets:
        raise ModelLibsError(f"{model} is released for {', '.join(v.datasets)} only, not {dataset}")
    d = PRESETS[dataset]
    if size is None:
        size = v.native_size
    elif not isinstance(size, int) or isinstance(size, bool) or not 64 <= size <= 2048:
        raise ModelLibsError(f"input size {size!r} is impossible: give an integer from 64 to 2048")
    root = Path(data_root) if data_root is not None else Path("data")
    name_size = lay.name_size_path("test", root)
    num_test = count_listed_images(name_size) if name_size.is_file() else lay.test.images
    prefix = v.job_prefix or model
    job = f"{prefix}_{size}x{size}"
    steps = [*v.steps[:-1], size]  # the last source covers the whole input (SSD's min_dim)
    mins, maxs = ssd_prior_sizes(size, len(steps), *(v.prior_ratios or d.prior_ratios))
    return Recipe(
        model=model,
        dataset=dataset,
        job_name=job,
        model_name=f"{prefix}_{dataset}_{job}",
        resize=(size, size),
        num_classes=len(load_labelmap(lay.labelmap_path).item),
        body=v.body,
        priors=PriorConfig(
            min_sizes=mins, max_sizes=maxs, aspect_ratios=[list(a) for a in v.aspect_ratios], steps=steps
        ),
        normalizations=[20] * len(steps),
        gated=v.gated,
        batch_size=v.batch_size,
        batch_sampler=ssd_batch_sampler(),
        train_data=str(lay.lmdb_path("train", root)),
        test_data=str(lay.lmdb_path("test", root)),
        label_map_file=str(lay.labelmap_path),
        name_size_file=str(name_size),
        num_test_image=num_test,
        output_result_dir=str(Path(out_dir) / "results"),
        test_batch_size=d.test_batch_size,
        test_iter_ceil=d.test_iter_ceil,
        train_on_diff_gt=d.train_on_diff_gt,
        stepvalue=list(v.stepvalue or d.stepvalue),
        max_iter=d.max_iter,
        snapshot=d.snapshot,
        display=d.display,
        test_interval=d.test_interval,
        test_initialization=d.test_initialization,
        force_color=d.force_color,
        output_name_prefix=d.output_name_prefix,
        output_format=d.output_format,
    )
