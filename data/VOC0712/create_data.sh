#!/usr/bin/env bash
# PASCAL VOC -> the SSD Caffe LMDBs of the official DSOD recipes (VOC0712 and VOC0712Plus).
#
#   data/VOC0712/create_data.sh [voc0712|voc0712plus|all]      (default: voc0712)
#
# Which images go where, and every file name, come from the toolkit's dataset table
# (`python -m model_libs layout` prints it; model_libs/datasets/layout.py):
#   voc0712      VOC07+12 trainval -> VOC0712/lmdb/VOC0712_trainval_lmdb (shuffled)
#                VOC07 test        -> VOC0712/lmdb/VOC0712_test_lmdb + VOC0712/test_name_size.txt
#   voc0712plus  VOC07++12 (VOC07 trainval+test, VOC12 trainval)
#                                  -> VOC0712Plus/lmdb/VOC0712Plus_trainvalplus_lmdb (shuffled)
#                VOC12 test (no public XML) -> VOC0712Plus/lmdb/VOC0712Plus_test_lmdb
#                                  + VOC0712Plus/test_name_size.txt
# all under DATA_ROOT, which is what the recipes' --data-root reads.
#
# Settings (environment): VOCDEVKIT (folder holding VOC2007/ and VOC2012/, default
# ~/data/VOCdevkit), DATA_ROOT (default: the data/ folder holding this script), PYTHON
# (default python), SEED (shuffle seed, default 0), FORCE=1 to replace outputs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VOCDEVKIT=${VOCDEVKIT:-$HOME/data/VOCdevkit}
DATA_ROOT=${DATA_ROOT:-$(dirname "$HERE")}
PYTHON=${PYTHON:-python}
SEED=${SEED:-0}
EXTRA=()
if [ -n "${FORCE:-}" ]; then EXTRA+=(--force); fi

make_lmdbs() {
  "$PYTHON" -m model_libs layout "$1" --make train,test --source "$VOCDEVKIT" \
    --data-root "$DATA_ROOT" --seed "$SEED" "${EXTRA[@]}"
}

case "${1:-voc0712}" in
  voc0712) make_lmdbs VOC0712 ;;
  voc0712plus) make_lmdbs VOC0712Plus ;;
  all) make_lmdbs VOC0712; make_lmdbs VOC0712Plus ;;
  *) echo "usage: $0 [voc0712|voc0712plus|all]" >&2; exit 2 ;;
esac
