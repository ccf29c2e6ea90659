#!/usr/bin/env python3
"""Score a GRP-DSOD320 snapshot on the VOC07 test LMDB as the official scoring script does.

The same as ``python -m model_libs score --model GRP_DSOD320 --dataset VOC0712`` (needs the
package installed: ``pip install -e .``, which ``scripts/setup.sh`` does in .venv).
"""

import sys

from model_libs.recipes.cli_score import main

if __name__ == "__main__":
    sys.exit(
        main(sys.argv[1:], dataset="VOC0712", models=("GRP_DSOD320",), prog="score_GRP_DSOD320_pascal.py")
    )
