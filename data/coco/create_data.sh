#!/usr/bin/env bash
# MS COCO -> the SSD Caffe LMDBs of the official DSOD300 COCO recipe (80 categories,
# contiguous labels 1..80 by the package's labelmap_coco.prototxt).
#
#   data/coco/create_data.sh [train|test|test-dev|all]      (default: all)
#
# File names and sources come from the toolkit's dataset table (`python -m model_libs layout`):
#   train     annotations/instances_train2017.json + train2017/ -> coco/lmdb/coco_train_lmdb
#   test      annotations/instances_val2017.json + val2017/     -> coco/lmdb/coco_minival_lmdb
#                                                 + coco/minival2014_name_size.txt
#   test-dev  annotations/image_info_test-dev2017.json + test2017/ -> coco/lmdb/coco_testdev_lmdb
#                                                 + coco/test-dev2015_name_size.txt
# (train2017 is the former trainval35k, val2017 the 5,000 minival2014 images the SSD and DSOD
# recipes test on, test-dev2017 the test-dev2015 images.) Crowd boxes are kept and flagged
# difficult, as upstream SSD; set SKIP_CROWD=1 to drop them.
#
# Settings (environment): COCO (folder holding annotations/ and the image folders, default
# ~/data/coco), DATA_ROOT (default: the data/ folder holding this script), PYTHON (default
# python), SEED (shuffle seed, default 0), FORCE=1 to replace outputs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COCO=${COCO:-$HOME/data/coco}
DATA_ROOT=${DATA_ROOT:-$(dirname "$HERE")}
PYTHON=${PYTHON:-python}
SEED=${SEED:-0}
EXTRA=()
if [ -n "${FORCE:-}" ]; then EXTRA+=(--force); fi
if [ -n "${SKIP_CROWD:-}" ]; then EXTRA+=(--skip-crowd); fi

case "${1:-all}" in
  train | test | test-dev) SPLITS=$1 ;;
  all) SPLITS=train,test,test-dev ;;
  *) echo "usage: $0 [train|test|test-dev|all]" >&2; exit 2 ;;
esac
"$PYTHON" -m model_libs layout coco --make "$SPLITS" --source "$COCO" --data-root "$DATA_ROOT" \
  --seed "$SEED" "${EXTRA[@]}"
