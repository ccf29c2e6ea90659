#!/usr/bin/env python3
"""Official GRP-DSOD recipe: PASCAL VOC 07+12 trainval, tested on VOC07 test.

Writes train/test/deploy/solver prototxts and the job script into --out, then trains
with Caffe unless --dry-run (``--dry-run`` is ``python -m model_libs job --dataset VOC0712``).
See --help. Needs the package installed: ``pip install -e .`` (``scripts/setup.sh`` does it
in .venv).
"""

import sys

from model_libs.recipes.cli import main

if __name__ == "__main__":
    models = ("GRP_DSOD320",)
    sys.exit(main(sys.argv[1:], dataset="VOC0712", models=models))
