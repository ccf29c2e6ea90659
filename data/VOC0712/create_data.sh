#!/usr/bin/env bash
# PASCAL VOC -> SSD Caffe LMDBs for the official DSOD/SSD recipes.
#
#   data/VOC0712/create_data.sh [voc0712|voc0712plus|all]
#
#   voc0712      VOC07+12 trainval -> VOC0712_trainval_lmdb (shuffled, as upstream create_list.sh)
#                VOC07 test        -> VOC0712_test_lmdb + test_name_size.txt
#   voc0712plus  VOC07++12 (VOC07 trainval+test, VOC12 trainval) -> VOC0712Plus_trainval_lmdb
#                VOC12 test (no public XML) -> VOC0712Plus_test_lmdb + test_name_size_voc12.txt
#
# Settings (environment): VOCDEVKIT (folder holding VOC2007/ and VOC2012/), OUT (where the
# LMDBs go, default $VOCDEVKIT/VOC0712/lmdb), NAME_SIZE_DIR (default: this folder),
# PYTHON (default python), SEED (shuffle seed, default 0), FORCE=1 to replace outputs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VOCDEVKIT=${VOCDEVKIT:-$HOME/data/VOCdevkit}
OUT=${OUT:-$VOCDEVKIT/VOC0712/lmdb}
NAME_SIZE_DIR=${NAME_SIZE_DIR:-$HERE}
PYTHON=${PYTHON:-python}
SEED=${SEED:-0}
LABELMAP=$HERE/labelmap_voc.prototxt
EXTRA=()
if [ -n "${FORCE:-}" ]; then EXTRA+=(--force); fi

convert() {
  "$PYTHON" -m model_libs convert voc --root "$VOCDEVKIT" --labelmap "$LABELMAP" "${EXTRA[@]}" "$@"
}

voc0712() {
  convert --sets VOC2007:trainval,VOC2012:trainval --shuffle --seed "$SEED" \
    --out "$OUT/VOC0712_trainval_lmdb"
  convert --sets VOC2007:test --out "$OUT/VOC0712_test_lmdb" \
    --name-size "$NAME_SIZE_DIR/test_name_size.txt"
}

voc0712plus() {
  convert --sets VOC2007:trainval,VOC2007:test,VOC2012:trainval --shuffle --seed "$SEED" \
    --out "$OUT/VOC0712Plus_trainval_lmdb"
  convert --sets VOC2012:test --allow-unannotated --out "$OUT/VOC0712Plus_test_lmdb" \
    --name-size "$NAME_SIZE_DIR/test_name_size_voc12.txt"
}

case "${1:-voc0712}" in
  voc0712) voc0712 ;;
  voc0712plus) voc0712plus ;;
  all) voc0712; voc0712plus ;;
  *) echo "usage: $0 [voc0712|voc0712plus|all]" >&2; exit 2 ;;
esac
