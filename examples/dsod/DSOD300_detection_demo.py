#!/usr/bin/env python3
"""Detection demo: run a DSOD deploy net with its weights on images (files or folders),
draw labelled boxes with scores above the threshold into PNGs, print the detections
(text, or JSON with --json). Same options as ``python -m model_libs detect``; needs the
package installed (``pip install -e .``; ``scripts/setup.sh`` does it in .venv).

    python examples/dsod/DSOD300_detection_demo.py --deploy deploy.prototxt \
        --weights DSOD300_VOC0712.caffemodel --labelmap LABELMAP \
        --threshold 0.5 --draw demo_out/ images/
"""

import sys

from model_libs.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["detect", *sys.argv[1:]]))
