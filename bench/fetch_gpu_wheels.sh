#!/usr/bin/env bash
# Download, on a machine with package-index access, the pinned Python packages that the
# device machine lacks or holds in other versions (it has torch, numpy, scipy, safetensors,
# pytest, but transformers 5.x, and may lack einops), for bench/gpu_check.sh to install there
# without network.
#
#   bench/fetch_gpu_wheels.sh [DIR]     # default DIR: build/gpu_wheels (git-ignored)
#
# Versions come from requirements.txt; the wheels are for CPython 3.12 on x86-64 Linux.
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$REPO_DIR/build/gpu_wheels}"
PYTHON="${PYTHON:-$REPO_DIR/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
pin() { grep -E "^$1==" "$REPO_DIR/requirements.txt" | head -1; }
mkdir -p "$DIR"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DIR" \
  "$(pin transformers)" "$(pin tokenizers)" "$(pin huggingface_hub)" "$(pin einops)"
ls -l "$DIR"
