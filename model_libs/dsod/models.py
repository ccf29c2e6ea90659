"""The DSOD family: official model/dataset presets and the derived small variants.

Sources of the numbers:
- DSOD300 (VOC0712, VOC0712Plus, COCO) and GRP_DSOD320 (VOC0712): the official release
  scripts (DSOD300_pascal.py, DSOD300_pascal++.py, DSOD300_coco.py, GRP_DSOD320_pascal.py
  with model_libs.py) - body, head, priors, batch and solver settings.
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
from pathlib import Path

from ..errors import ModelLibsError
from .bodies import Backbone, dsod_body, grp_dsod320_body
from .data_layer import ssd_batch_sampler
from .heads import PriorConfig, ssd_prior_sizes
from .recipe import Recipe

BACKBONES: dict[str, Backbone] = {
    "DSOD300": Backbone(),
    "DSOD300_lite": Backbone(growth=64, bottleneck_width=4, blocks=(3, 4, 4, 4)),
    "DSOD300_smallest": Backbone(growth=16, bottleneck_width=4, blocks=(6, 8, 8, 8)),
    "DSOD512": Backbone(
        extra_channels=(256, 128, 128, 128, 128),
        sources=("First", "Second", "Third", "Fourth", "Fifth_", "Sixth_", "Seventh_"),
    ),
}
MODELS = ("DSOD300", "DSOD300_lite", "DSOD300_smallest", "DSOD512", "GRP_DSOD320")
DATASETS = ("VOC0712", "VOC0712Plus", "coco")

# Per dataset: classes, prior ratio range (first pair), test set, solver schedule.
_DATASET = {
    "VOC0712": dict(
        num_classes=21,
        ratios=(20, 90, (10, 20)),
        num_test_image=4952,
        test_batch_size=2,
        train_on_diff_gt=True,
        stepvalue=[20000, 40000, 60000, 80000, 100000],
        max_iter=100000,
        snapshot=2000,
        display=20,
        test_interval=2000,
        test_initialization=True,
        lmdb=("VOC0712_trainval_lmdb", "VOC0712_test_lmdb"),
        labelmap="labelmap_voc.prototxt",
        name_size="test_name_size.txt",
    ),
    "VOC0712Plus": dict(
        num_classes=21,
        ratios=(20, 90, (10, 20)),
        num_test_image=10991,
        test_batch_size=1,
        train_on_diff_gt=True,
        stepvalue=[20000, 40000, 60000, 80000, 100000],
        max_iter=120000,
        snapshot=2000,
        display=20,
        test_interval=160000,
        test_initialization=False,
        lmdb=("VOC0712Plus_trainvalplus_lmdb", "VOC0712Plus_test_lmdb"),
        labelmap="labelmap_voc.prototxt",
        name_size="test_name_size.txt",
    ),
    "coco": dict(
        num_classes=81,
        ratios=(15, 90, (7, 15)),
        num_test_image=5000,
        test_batch_size=2,
        test_iter_ceil=False,
        train_on_diff_gt=False,
        stepvalue=[80000, 140000, 200000, 260000, 320000],
        max_iter=320000,
        snapshot=10000,
        display=10,
        test_interval=1000000,
        test_initialization=False,
        force_color=True,
        output_name_prefix="detections_minival_ssd300_results",
        output_format="COCO",
        lmdb=("coco_train_lmdb", "coco_minival_lmdb"),
        labelmap="labelmap_coco.prototxt",
        name_size="minival2014_name_size.txt",
    ),
}

REPO_DATA = Path(__file__).resolve().parents[2] / "data"


def recipe(
    model: str,
    dataset: str = "VOC0712",
    data_root: str | Path | None = None,
    out_dir: str | Path = ".",
    size: int | None = None,
) -> Recipe:
    """The official (or derived) recipe for ``model`` trained on ``dataset``.

    ``data_root`` holds ``<dataset>/lmdb/<name>_lmdb`` and the test name/size list as the
    SSD data scripts lay them out; label maps come from the repository's ``data/`` folder.
    ``size`` overrides the square input size (priors scale with it, as SSD's min_dim).
    """
    if model not in MODELS:
        raise ModelLibsError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if dataset not in _DATASET:
        raise ModelLibsError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if model == "GRP_DSOD320" and dataset != "VOC0712":
        raise ModelLibsError("GRP_DSOD320 is released for VOC0712 only")
    d = dict(_DATASET[dataset])
    min_ratio, max_ratio, first = d.pop("ratios")
    train_lmdb, test_lmdb = d.pop("lmdb")
    labelmap, name_size = d.pop("labelmap"), d.pop("name_size")
    root = Path(data_root) if data_root is not None else Path("data")
    out = Path(out_dir)
    data_dir = "VOC0712" if dataset.startswith("VOC") else dataset

    native = {"DSOD512": 512, "GRP_DSOD320": 320}.get(model, 300)
    if size is None:
        size = native
    elif not isinstance(size, int) or isinstance(size, bool) or not 64 <= size <= 2048:
        raise ModelLibsError(f"input size {size!r} is impossible: give an integer from 64 to 2048")
    if model == "GRP_DSOD320":
        steps = [8, 16, 32, 64, 100, size]
        ars = [[1.6, 2, 3]] * 4 + [[1.6, 2]] * 2
        body = grp_dsod320_body
        gate_channels = [1184, 513, 258, 258, 258, 256]
        job = f"GRP_DSOD320_v2_gate_{size}x{size}"
        model_name = f"GRP_DSOD320_v2_gate_{dataset}_{job}"
        batch = 48
    else:
        body = functools.partial(dsod_body, bb=BACKBONES[model])
        gate_channels = None
        if model == "DSOD512":
            steps = [8, 16, 32, 64, 128, 256, size]
            ars = [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]
            min_ratio, max_ratio, first = 15, 90, (4, 10)
            batch = 16
        else:
            steps = [8, 16, 32, 64, 100, size]
            ars = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
            batch = 32
        job = f"{model}_{size}x{size}"
        model_name = f"{model}_{dataset}_{job}"
    n_sources = len(steps)
    mins, maxs = ssd_prior_sizes(size, n_sources, min_ratio, max_ratio, first)
    priors = PriorConfig(min_sizes=mins, max_sizes=maxs, aspect_ratios=ars, steps=steps)
    r = Recipe(
        model=model,
        dataset=dataset,
        job_name=job,
        model_name=model_name,
        resize=(size, size),
        body=body,
        priors=priors,
        normalizations=[20] * n_sources,
        gate_channels=gate_channels,
        batch_size=batch,
        batch_sampler=ssd_batch_sampler(),
        train_data=str(root / data_dir / "lmdb" / train_lmdb),
        test_data=str(root / data_dir / "lmdb" / test_lmdb),
        label_map_file=str(REPO_DATA / data_dir / labelmap),
        name_size_file=str(root / data_dir / name_size),
        output_result_dir=str(out / "results"),
        **d,
    )
    r.check()
    return r
