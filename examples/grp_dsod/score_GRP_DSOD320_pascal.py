#!/usr/bin/env python3
"""Score a DSOD snapshot on the VOC07 test LMDB as the official scoring script does.

A solver with max_iter 0 and test initialisation runs DetectionEvaluate over the test set
(11-point AP); DetectionOutput writes VOC-format result files; per-class AP comes from
those files and the test LMDB. See --help; the logic lives in model_libs.recipes.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout

from model_libs.recipes.cli import score_main

if __name__ == "__main__":
    models = ("GRP_DSOD320",)
    sys.exit(score_main(sys.argv[1:], dataset="VOC0712", models=models))
