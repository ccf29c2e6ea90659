#!/usr/bin/env bash
# Developer tool: regenerate caffe/patches/*.patch from a pristine unpacked sdist (ORIG) and
# an edited copy (WORK), both top folders of brocolli-caffe-9.0.2. Each file belongs to one
# patch; the list below is the map. Usage: bash caffe/make_patches.sh ORIG WORK
# 0010-detection-layers-as-upstream-ssd.patch is not in the map: it changes files of 0003 and
# 0006 and is a diff against the tree with 0001-0008 applied (build.py applies all in order);
# regenerate it by hand: diff -u --label a/F --label b/F <patched tree>/F <edited tree>/F.
set -euo pipefail
ORIG="$1"; WORK="$2"
OUT="$(cd "$(dirname "$0")" && pwd)/patches"
mkdir -p "$OUT"
declare -A TOPIC=(
  [0001-opencv4-api-and-bbox-output]="src/caffe/util/io.cpp include/caffe/util/bbox_util.hpp src/caffe/util/bbox_util.cpp"
  [0002-caffe-tool-cpu-only-gpu-flag-and-weights]="tools/caffe.cpp"
  [0003-upstream-ssd-schema-distort-expand]="include/caffe/util/im_transforms.hpp src/caffe/util/im_transforms.cpp include/caffe/data_transformer.hpp src/caffe/data_transformer.cpp src/caffe/layers/annotated_data_layer.cpp include/caffe/layers/detection_evaluate_layer.hpp src/caffe/layers/detection_evaluate_layer.cpp"
  [0004-pooling-rounds-up-as-upstream]="src/caffe/layers/pooling_layer.cpp"
  [0005-pycaffe-python3-without-six-skimage-scipy]="python/caffe/io.py python/caffe/pycaffe.py python/caffe/net_spec.py"
  [0006-detection-output-saves-results]="include/caffe/layers/detection_output_layer.hpp src/caffe/layers/detection_output_layer.cpp"
  [0007-data-reader-per-phase]="include/caffe/data_reader.hpp"
  [0008-makefile-tracks-project-headers]="Makefile"
  [0011-batchnorm-statistics-masked-as-upstream]="src/caffe/layers/batch_norm_layer.cpp"
)
for name in "${!TOPIC[@]}"; do
  : >"$OUT/$name.patch"
  for f in ${TOPIC[$name]}; do
    (cd "$(dirname "$ORIG")" && diff -uN --label "a/$f" --label "b/$f" "$ORIG/$f" "$WORK/$f") >>"$OUT/$name.patch" || true
  done
  echo "$OUT/$name.patch: $(grep -c '^+++' "$OUT/$name.patch") files"
done
