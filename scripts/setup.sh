#!/usr/bin/env bash
# The project's one set-up command:  bash scripts/setup.sh
#
#  1. installs the Debian packages the build needs (apt-get; as root or through sudo),
#  2. creates the virtualenv .venv at the repository root and installs the project into it
#     (pip install -e '.[full,torch,dev]', pinned versions from pyproject.toml),
#  3. builds SSD Caffe (libcaffe, pycaffe, the `caffe` tool; CPU-only) from the pinned
#     brocolli-caffe sdist plus this project's patches and schema (caffe/build.py), installs
#     it under build/caffe/install and links it into .venv (import caffe, .venv/bin/caffe).
#
# Every step is cached: a second run with nothing changed does no work. Any failure stops
# the set-up with one line starting with "error:" and a non-zero exit status.
#
# Environment:
#   PYTHON=python3.11     interpreter for the virtualenv (must be 3.11: pycaffe links
#                         Debian's libboost_python311)
#   SKIP_APT=1            do not run apt-get (only check that the packages are there)
#   SKIP_CAFFE=1          set up .venv only, do not build Caffe (use CAFFE_ROOT instead)
#   JOBS=N                parallel compile jobs (default: number of cores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP_DIR="$ROOT/build/setup"
mkdir -p "$STAMP_DIR"

say() { printf '[setup] %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- 1. system packages
APT_PACKAGES=(
  build-essential patch protobuf-compiler libprotobuf-dev libgoogle-glog-dev libgflags-dev
  libhdf5-dev liblmdb-dev libopencv-dev libopenblas-dev
  libboost-system-dev libboost-thread-dev libboost-filesystem-dev libboost-regex-dev
  libboost-python-dev python3-dev python3-venv
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${SKIP_CAFFE:-0}" = 1 ]; then
  missing=()   # only the venv is wanted; python3-venv is checked by the venv step itself
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${SKIP_APT:-0}" = 1 ]; then
    die "missing system packages (SKIP_APT=1 set): ${missing[*]}"
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "missing system packages and not root (no sudo): ${missing[*]}"
    SUDO="sudo"
  fi
  say "installing system packages: ${missing[*]}"
  t0=$SECONDS
  $SUDO apt-get update -qq >"$STAMP_DIR/apt.log" 2>&1 \
    || die "apt-get update failed (see $STAMP_DIR/apt.log)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >>"$STAMP_DIR/apt.log" 2>&1 \
    || die "apt-get install failed for: ${missing[*]} (see $STAMP_DIR/apt.log)"
  say "system packages installed in $((SECONDS - t0)) s"
else
  say "system packages: all present"
fi

# ---------------------------------------------------------------- 2. virtualenv
command -v "$PYTHON" >/dev/null || die "no Python interpreter '$PYTHON' (set PYTHON=...)"
pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$pyver" = "3.11" ] || die "$PYTHON is Python $pyver; the project needs Python 3.11 (set PYTHON=python3.11)"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV" || die "could not create $VENV (is python3-venv installed?)"
  rm -f "$STAMP_DIR/pip.stamp"
fi
want="$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP_DIR/pip.stamp" 2>/dev/null)" != "$want" ]; then
  say "installing the project and its pinned dependencies into .venv"
  t0=$SECONDS
  "$VENV/bin/python" -m pip install -q --upgrade pip >"$STAMP_DIR/pip.log" 2>&1 \
    || die "pip self-upgrade failed (see $STAMP_DIR/pip.log)"
  "$VENV/bin/python" -m pip install -q -e '.[full,torch,dev]' >>"$STAMP_DIR/pip.log" 2>&1 \
    || { tail -20 "$STAMP_DIR/pip.log" >&2; die "pip install -e '.[full,torch,dev]' failed (see $STAMP_DIR/pip.log)"; }
  echo "$want" >"$STAMP_DIR/pip.stamp"
  say "python dependencies installed in $((SECONDS - t0)) s"
else
  say "python dependencies: up to date"
fi

# ---------------------------------------------------------------- 3. Caffe
if [ "${SKIP_CAFFE:-0}" = 1 ]; then
  say "SKIP_CAFFE=1: not building Caffe (point CAFFE_ROOT at your own SSD Caffe)"
else
  "$VENV/bin/python" caffe/build.py --jobs "${JOBS:-$(nproc)}" --venv "$VENV" \
    || exit 1   # build.py printed its own error: line
fi
say "done. Check with: .venv/bin/python -m model_libs info"
