#!/usr/bin/env bash
# Device checks of the fast inference path (issue 12) in one run, about 6-7 minutes on an
# H200 (the machine's start not counted):
#
#   1. here, once: bench/fetch_gpu_wheels.sh             (pinned transformers 4.57.1 etc.)
#   2. device run: command "bash bench/gpu_check.sh", carry ["build/gpu_wheels"],
#      timeout_s 570
#
# It runs
#   a. test/test_fast_path.py on CUDA: captured decode/flow-matching replays against the
#      eager path (float32, tiny model), seeded reproducibility with graphs, one decode step
#      and one Euler step under torch.cuda.set_sync_debug_mode("error"), and the rest of
#      the file; plus the CUDA test of the image preprocessing;
#   b. bench/bench_model_gpu.py at the real geometry (11.08B random bf16 weights, 16 frames
#      of 1080x1920): fast path (warm 10 Hz tick with vision reuse, and a cold tick), eager
#      path and transformers' generate(), 1 and 6 samples, forced CoC 16 and 40 tokens,
#      10 flow steps, p50/p90 over 20 cycles, per-stage times, peak memory, and fast vs
#      eager in bf16 with the same noise and forced tokens (max waypoint difference).
# Results go to $OUT (device tool) or bench/results/ (elsewhere): gpu_check_tests.log,
# bench_model_gpu.json, bench_model_gpu.log. Copy the JSON to
# bench/results/gpu_<name>_bench_model_gpu.json and the numbers into docs/model.md.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT_DIR="${OUT:-bench/results}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
PY=python3
if ls build/gpu_wheels/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/alpamayo_site build/gpu_wheels/*.whl || exit 3
  export PYTHONPATH="/tmp/alpamayo_site:$PWD"
else
  echo "no build/gpu_wheels: using the machine's own transformers" >&2
  export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY - <<'PYEOF' || exit 4
import torch, transformers
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers "
      f"{transformers.__version__}, GPU {torch.cuda.get_device_name()}")
if not transformers.__version__.startswith("4.57."):
    raise SystemExit("need transformers 4.57.x (run bench/fetch_gpu_wheels.sh and carry "
                     "build/gpu_wheels)")
PYEOF

echo "== a. CUDA tests"
timeout 150 $PY -m pytest -q --noconftest -p no:cacheprovider -rs \
  test/test_fast_path.py "test/test_image_processor.py" 2>&1 | tee "$OUT_DIR/gpu_check_tests.log"
echo "tests exit status ${PIPESTATUS[0]}"

echo "== b. benchmark"
timeout 400 $PY bench/bench_model_gpu.py --json "$OUT_DIR/bench_model_gpu.json" 2>&1 \
  | tee "$OUT_DIR/bench_model_gpu.log"
echo "benchmark exit status ${PIPESTATUS[0]}"
