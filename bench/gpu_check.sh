#!/usr/bin/env bash
# Device checks of the fast inference path in one device call of about 8 minutes (the
# machine's start not counted):
#
#   1. here, once: bench/fetch_gpu_wheels.sh      (pinned transformers etc. into
#                                                  build/gpu_wheels, git-ignored)
#   2. device run: command "bash bench/gpu_check.sh", carry ["build/gpu_wheels"],
#      timeout_s 600
#
# It runs
#   a. the CUDA tests (pytest -k cuda): test/test_fast_path.py (captured decode and
#      flow-matching replays against the eager path in float32, seeded reproducibility
#      with graphs, one decode and one Euler step under set_sync_debug_mode("error"),
#      warm-tick (vision reuse) and cold-tick prefill logits, the warm-up self-check in
#      float32 and bf16; Alpamayo 1.5 with navigation guidance: captured guided replays
#      against the eager path and the guided warm-up self-check in float32 and bf16) and
#      the CUDA preprocessing test of test/test_image_processor.py;
#   b. bench/bench_model_gpu.py at the real geometry (11.08B random bf16 weights
#      conditioned like the fixtures', 16 frames of 1080x1920): fast path (warm 10 Hz tick
#      with vision reuse, and a cold tick), eager path and transformers' generate(), 1 and
#      6 samples, forced CoC 16 and 40 tokens within a budget 32 tokens larger (extra
#      decode steps show), 10 flow steps; fast vs eager as the first Euler step's
#      velocities; p50/p90 over 8 fast and 4 reference cycles. Exit status 3 when a step
#      that should run as a CUDA graph does not;
#   c. bench/bench_model_gpu.py --families at the same geometry: R1, 1.5 (camera labels),
#      1.5 + nav, 1.5 + guidance, fast (warm tick) and eager side by side with eager / fast,
#      1 sample, CoC 16, and each row's first-Euler-step check.
# Results go to $OUT (device tool) or bench/results/ (elsewhere): gpu_check_tests.log,
# bench_model_gpu.json (written after every configuration: a timeout keeps what ran),
# bench_model_gpu.log, bench_model_gpu_families.{json,log}. Copy the JSON to bench/results/gpu_<name>_bench_model_gpu.json and
# the numbers into docs/model.md and the README's speed table.
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
  echo "no build/gpu_wheels: using the machine's own packages" >&2
  export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY - <<'PYEOF' || exit 4
import einops, torch, transformers
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers "
      f"{transformers.__version__}, einops {einops.__version__}, GPU "
      f"{torch.cuda.get_device_name()}")
if not transformers.__version__.startswith("4.57."):
    raise SystemExit("need transformers 4.57.x (run bench/fetch_gpu_wheels.sh and carry "
                     "build/gpu_wheels)")
PYEOF

echo "== a. CUDA tests"
timeout 150 $PY -m pytest -q --noconftest -p no:cacheprovider -rs -k cuda \
  test/test_fast_path.py test/test_image_processor.py 2>&1 | tee "$OUT_DIR/gpu_check_tests.log"
tests=${PIPESTATUS[0]}
echo "tests exit status $tests"

echo "== b. benchmark"
timeout 300 $PY bench/bench_model_gpu.py --cycles 8 --reference-cycles 4 \
  --json "$OUT_DIR/bench_model_gpu.json" 2>&1 | tee "$OUT_DIR/bench_model_gpu.log"
bench=${PIPESTATUS[0]}
echo "benchmark exit status $bench"

echo "== c. R1 / 1.5 / 1.5 + nav / 1.5 + guidance"
timeout 120 $PY bench/bench_model_gpu.py --families --samples 1 --coc 16 --cycles 8 \
  --reference-cycles 4 --json "$OUT_DIR/bench_model_gpu_families.json" 2>&1 \
  | tee "$OUT_DIR/bench_model_gpu_families.log"
families=${PIPESTATUS[0]}
echo "families exit status $families"
[[ $tests -eq 0 && $bench -eq 0 && $families -eq 0 ]]
