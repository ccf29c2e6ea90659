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
    gate_channels: list[int] | None = None  # GRP-DSOD: gate every source
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

    def check(self) -> None:
        """Reject settings no net can be built from, with a clear message."""
        h, w = self.resize
        if h < 32 or w < 32:
            raise ModelLibsError(f"input size {h}x{w} is too small for a DSOD net (>= 32)")
        if self.num_classes < 2:
            raise ModelLibsError(f"num_classes must be >= 2 (background + 1), got {self.num_classes}")
        if self.batch_size < 1 or self.test_batch_size < 1:
            raise ModelLibsError("batch sizes must be positive")
