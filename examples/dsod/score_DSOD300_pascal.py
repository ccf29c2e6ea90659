#!/usr/bin/env python3
"""Score a DSOD snapshot on the VOC07 test LMDB as the official scoring script does.

A solver with max_iter 0 and test initialisation runs DetectionEvaluate over the test set
(11-point AP); DetectionOutput writes VOC-format result files; per-class AP comes from
those files and the test LMDB. The same as ``python -m model_libs score --dataset VOC0712``
(needs the package installed: ``pip install -e .``, which ``scripts/setup.sh`` does in .venv).
"""

import sys

from model_libs.recipes.cli_score import main

if __name__ == "__main__":
    models = ("DSOD300", "DSOD300_lite", "DSOD300_smallest", "DSOD512")
    sys.exit(main(sys.argv[1:], dataset="VOC0712", models=models, prog="score_DSOD300_pascal.py"))
