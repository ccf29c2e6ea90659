#!/usr/bin/env python3
"""Official DSOD recipe: VOC 07++12 (the VOC12 recipe), tested on VOC12 test.

Writes train/test/deploy/solver prototxts and the job script into --out, then trains
with Caffe unless --dry-run (``--dry-run`` is ``python -m model_libs job --dataset VOC0712Plus``).
See --help. Needs the package installed: ``pip install -e .`` (``scripts/setup.sh`` does it
in .venv).
"""

import sys

from model_libs.recipes.cli import main

if __name__ == "__main__":
    models = ("DSOD300", "DSOD300_lite", "DSOD300_smallest", "DSOD512")
    sys.exit(main(sys.argv[1:], dataset="VOC0712Plus", models=models))
