"""A DSOD training recipe: one dataclass holding every setting of the official scripts.

:func:`model_libs.dsod.models.recipe` fills it for a named model and dataset; the
builders in :mod:`model_libs.dsod.nets` turn it into train/test/deploy nets and a solver.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ModelLibsError
from ..netspec import NetSpec
from .heads import PriorConfig


@dataclass
class Recipe:
    """Everything that defines one DSOD job (model, data, priors, solver)."""

    model: str  # "DSOD300", "GRP_DSOD320", ...
    dataset: str  # "VOC0712", "VOC0712Plus", "coco", or a custom name
    job_name: str
    model_name: str
    resize: tuple[int, int]  # (height, width) of the network input
    num_classes: int
    body: Callable[[NetSpec, str], list[str]]  # adds the backbone, returns source names
    priors: PriorConfig
    normalizations: list[float]
    gated: bool = False  # GRP-DSOD: gate every source (channels from the body's own shapes)
    # data
    train_data: str = ""
    test_data: str = ""
    label_map_file: str = ""
    name_size_file: str = ""
    output_result_dir: str = ""
    force_color: bool = False
    train_on_diff_gt: bool = True
    batch_sampler: list[dict] = field(default_factory=list)
    # batching
    batch_size: int = 32
    accum_batch_size: int = 128
    test_batch_size: int = 2
    num_test_image: int = 4952
    test_iter_ceil: bool = True  # official VOC scripts round up; the COCO one divides
    # solver
    base_lr: float = 0.0004  # before the VALID-normalisation and x10 factors
    stepvalue: list[int] = field(default_factory=lambda: [20000, 40000, 60000, 80000, 100000])
    max_iter: int = 100000
    snapshot: int = 2000
    display: int = 20
    test_interval: int = 2000
    test_initialization: bool = True
    ap_version: str = "11point"
    output_name_prefix: str = "comp4_det_test_"
    output_format: str = "VOC"
    show_per_class_result: bool | None = None  # set only when a recipe asks for it
    random_seed: int | None = None
    lr: float | None = None  # the solver's base_lr as given (else derived from base_lr)
    train_transform: dict | None = None  # replaces the SSD training transform when set
    # BatchNorm moving-average fraction of every BN layer in the train net (Caffe: 0.999).
    # Short trainings need a smaller one, or test-time statistics lag far behind the weights.
    bn_moving_average_fraction: float | None = None

    # SSD loss settings shared by every DSOD recipe
    neg_pos_ratio: float = 3.0

    @property
    def loc_weight(self) -> float:
        return (self.neg_pos_ratio + 1.0) / 4.0

    def split_batch(self, gpus: list[int]) -> tuple[int, int]:
        """(batch per device, iter_size) as the official scripts compute them.

        With GPUs the batch is split evenly (rounded up) and iter_size makes up the
        accumulated batch; on the CPU the whole batch runs at once.
        """
        if gpus:
            per_device = int(math.ceil(self.batch_size / len(gpus)))
            return per_device, int(math.ceil(self.accum_batch_size / (per_device * len(gpus))))
        return self.batch_size, self.accum_batch_size // self.batch_size

    @property
    def test_iter(self) -> int:
        if self.test_iter_ceil:
            return int(math.ceil(self.num_test_image / self.test_batch_size))
        return self.num_test_image // self.test_batch_size

    def __post_init__(self) -> None:
        # Validated on construction, so a hand-built Recipe fails here, with the setting
        # named, rather than deep inside net generation or Caffe.
        problems = list(_problems(self))
        if problems:
            raise ModelLibsError(f"recipe {self.model_name or self.model!r}: " + "; ".join(problems))


AP_VERSIONS = ("11point", "MaxIntegral", "Integral")
OUTPUT_FORMATS = ("VOC", "COCO", "ILSVRC")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _problems(r: Recipe):
    """Every setting of ``r`` that no net or solver can be built from, in words."""
    if not (isinstance(r.resize, tuple | list) and len(r.resize) == 2 and all(map(_is_int, r.resize))):
        yield f"resize must be (height, width) in pixels, got {r.resize!r}"
    elif min(r.resize) < 32:
        yield f"input size {r.resize[0]}x{r.resize[1]} is too small for a DSOD net (>= 32)"
    if not _is_int(r.num_classes) or r.num_classes < 2:
        yield f"num_classes must be an integer >= 2 (background + 1), got {r.num_classes!r}"
    if not callable(r.body):
        yield "body must be a function (net, from_layer) -> source names"
    for name in ("batch_size", "accum_batch_size", "test_batch_size", "num_test_image", "max_iter"):
        value = getattr(r, name)
        if not _is_int(value) or value < 1:
            yield f"{name} must be a positive integer, got {value!r}"
    if _is_int(r.batch_size) and _is_int(r.accum_batch_size) and r.accum_batch_size < r.batch_size:
        yield f"accum_batch_size ({r.accum_batch_size}) is smaller than batch_size ({r.batch_size})"
    for name in ("snapshot", "display", "test_interval"):
        value = getattr(r, name)
        if not _is_int(value) or value < 0:
            yield f"{name} must be an integer >= 0, got {value!r}"
    steps = list(r.stepvalue)
    if any(not _is_int(s) or s < 1 for s in steps) or steps != sorted(set(steps)):
        yield f"stepvalue must be increasing positive iterations, got {steps}"
    if not r.base_lr > 0 or (r.lr is not None and not r.lr > 0):
        yield "learning rates must be positive"
    if r.ap_version not in AP_VERSIONS:
        yield f"ap_version must be one of {', '.join(AP_VERSIONS)}, got {r.ap_version!r}"
    if r.output_format not in OUTPUT_FORMATS:
        yield f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {r.output_format!r}"
    if not r.neg_pos_ratio > 0:
        yield f"neg_pos_ratio must be positive, got {r.neg_pos_ratio!r}"
    f = r.bn_moving_average_fraction
    if f is not None and not 0 < f <= 1:
        yield f"bn_moving_average_fraction must lie in (0, 1], got {f!r}"
    yield from _prior_problems(r.priors, r.normalizations)


def _prior_problems(p: PriorConfig, normalizations: list[float]):
    n = len(p.min_sizes)
    if n == 0:
        yield "priors need at least one prediction source"
        return
    lengths = {
        "max_sizes": len(p.max_sizes) if p.max_sizes else n,
        "aspect_ratios": len(p.aspect_ratios),
        "steps": len(p.steps),
        "normalizations": len(normalizations),
    }
    for what, k in lengths.items():
        if k != n:
            yield f"{what} has {k} entries for {n} prediction sources (min_sizes)"
    if any(not m > 0 for m in p.min_sizes):
        yield f"prior min_sizes must be positive, got {list(p.min_sizes)}"
    if p.max_sizes and any(not hi > lo for lo, hi in zip(p.min_sizes, p.max_sizes)):
        yield "every prior max_size must exceed its min_size"
    if any(not a > 0 for ars in p.aspect_ratios for a in ars):
        yield f"aspect ratios must be positive, got {[list(a) for a in p.aspect_ratios]}"
    if any(s < 0 for s in p.steps):
        yield f"prior steps must be >= 0 (0: derived from the feature map), got {list(p.steps)}"
