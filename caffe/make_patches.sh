#!/usr/bin/env bash
# Developer tool: regenerate caffe/patches/*.patch from a pristine unpacked sdist (ORIG) and
# an edited copy (WORK), both top folders of brocolli-caffe-9.0.2. The map below says which
# files each patch changes. A file may belong to several patches (a later patch stacked on
# an earlier one): each patch then holds the change from the file as the earlier patches
# leave it to the file as the next owner finds it (or as in WORK, for the last owner). The
# intermediate states are rebuilt by applying the existing patch files to ORIG, so only the
# last owner of a shared file is regenerated from WORK; edit an earlier owner's hunks in
# its patch file. Usage: bash caffe/make_patches.sh ORIG WORK
set -euo pipefail
ORIG="$(cd "$1" && pwd)"; WORK="$(cd "$2" && pwd)"
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
  [0009-data-path-boxes-follow-resize-as-upstream]="src/caffe/util/im_transforms.cpp src/caffe/data_transformer.cpp src/caffe/layers/annotated_data_layer.cpp"
  [0010-detection-layers-as-upstream-ssd]="src/caffe/layers/detection_evaluate_layer.cpp src/caffe/layers/detection_output_layer.cpp"
  [0011-batchnorm-statistics-masked-as-upstream]="src/caffe/layers/batch_norm_layer.cpp"
)
mapfile -t NAMES < <(printf '%s\n' "${!TOPIC[@]}" | sort)
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT

# STAGE/i/<file>: a shared file as patches NAMES[0..i-1] leave it (from the patch files).
shared=$(for n in "${NAMES[@]}"; do printf '%s\n' ${TOPIC[$n]}; done | sort | uniq -d)
owns() { printf '%s\n' ${TOPIC[$1]} | grep -qxF -- "$2"; }
for i in $(seq 0 $((${#NAMES[@]} - 1))); do
  mkdir -p "$TMP/stage/$i"
  for f in $shared; do
    mkdir -p "$TMP/stage/$i/$(dirname "$f")"
    if [ "$i" = 0 ]; then
      cp "$ORIG/$f" "$TMP/stage/$i/$f"
    else
      cp "$TMP/stage/$((i - 1))/$f" "$TMP/stage/$i/$f"
    fi
  done
  if [ "$i" -gt 0 ] && [ -n "$shared" ]; then
    prev="$OUT/${NAMES[$((i - 1))]}.patch"
    # apply only the hunks of shared files (the others are not in the stage tree)
    for f in $shared; do
      awk -v f="$f" '/^--- a\//{keep = ($2 == "a/" f)} keep' "$prev" >"$TMP/one.patch"
      if [ -s "$TMP/one.patch" ]; then
        patch -d "$TMP/stage/$i" -p1 --batch --quiet -i "$TMP/one.patch" >/dev/null
      fi
    done
  fi
done

for i in "${!NAMES[@]}"; do
  name="${NAMES[$i]}"
  : >"$OUT/$name.patch"
  for f in ${TOPIC[$name]}; do
    from="$ORIG/$f"; to="$WORK/$f"
    if grep -qxF "$f" <<<"$shared"; then
      from="$TMP/stage/$i/$f"
      for j in $(seq $((i + 1)) $((${#NAMES[@]} - 1))); do
        if owns "${NAMES[$j]}" "$f"; then to="$TMP/stage/$j/$f"; break; fi
      done
    fi
    diff -uN --label "a/$f" --label "b/$f" "$from" "$to" >>"$OUT/$name.patch" || true
  done
  echo "$OUT/$name.patch: $(grep -c '^+++' "$OUT/$name.patch") files"
done
