#!/usr/bin/env bash
# MS COCO -> SSD Caffe LMDBs (80 categories, contiguous labels 1..80 by labelmap_coco.prototxt).
#
#   data/coco/create_data.sh [train|val|test-dev|all]      (default: all)
#
#   train     instances_train2017.json + train2017/  -> coco_train_lmdb (shuffled)
#   val       instances_val2017.json   + val2017/    -> coco_val_lmdb + val_name_size.txt
#   test-dev  image_info_test-dev2017.json + test2017/ -> coco_testdev_lmdb + testdev_name_size.txt
# (train2017/val2017 are the former trainval35k/minival2014 splits the SSD recipe used.)
# Crowd boxes are kept and flagged difficult, as upstream SSD; set SKIP_CROWD=1 to drop them.
#
# Settings (environment): COCO (folder holding annotations/ and the image folders),
# OUT (default $COCO/lmdb), NAME_SIZE_DIR (default: this folder), PYTHON (default python),
# SEED (shuffle seed, default 0), FORCE=1 to replace outputs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COCO=${COCO:-$HOME/data/coco}
OUT=${OUT:-$COCO/lmdb}
NAME_SIZE_DIR=${NAME_SIZE_DIR:-$HERE}
PYTHON=${PYTHON:-python}
SEED=${SEED:-0}
LABELMAP=$HERE/labelmap_coco.prototxt
EXTRA=()
if [ -n "${FORCE:-}" ]; then EXTRA+=(--force); fi
if [ -n "${SKIP_CROWD:-}" ]; then EXTRA+=(--skip-crowd); fi

convert() {
  "$PYTHON" -m model_libs convert coco --labelmap "$LABELMAP" "${EXTRA[@]}" "$@"
}

train() {
  convert --annotations "$COCO/annotations/instances_train2017.json" --images "$COCO/train2017" \
    --shuffle --seed "$SEED" --out "$OUT/coco_train_lmdb"
}
val() {
  convert --annotations "$COCO/annotations/instances_val2017.json" --images "$COCO/val2017" \
    --out "$OUT/coco_val_lmdb" --name-size "$NAME_SIZE_DIR/val_name_size.txt"
}
testdev() {
  convert --annotations "$COCO/annotations/image_info_test-dev2017.json" \
    --images "$COCO/test2017" --out "$OUT/coco_testdev_lmdb" \
    --name-size "$NAME_SIZE_DIR/testdev_name_size.txt"
}

case "${1:-all}" in
  train) train ;;
  val) val ;;
  test-dev) testdev ;;
  all) train; val; testdev ;;
  *) echo "usage: $0 [train|val|test-dev|all]" >&2; exit 2 ;;
esac
