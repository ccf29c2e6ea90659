"""DSOD family builders: blocks, backbones, multibox head, recipes and net assembly."""

from .bodies import Backbone, dsod_body, gated_module, grp_dsod320_body
from .heads import PriorConfig, multibox_head, ssd_prior_sizes
from .models import DATASETS, MODELS, recipe
from .nets import deploy_net, solver, test_net, train_net, write_nets
from .recipe import Recipe

__all__ = [
    "Backbone",
    "dsod_body",
    "gated_module",
    "grp_dsod320_body",
    "PriorConfig",
    "multibox_head",
    "ssd_prior_sizes",
    "DATASETS",
    "MODELS",
    "recipe",
    "deploy_net",
    "solver",
    "test_net",
    "train_net",
    "write_nets",
    "Recipe",
]
