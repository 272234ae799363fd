#!/usr/bin/env bash
# Closed-loop tests under CPU load: N consecutive runs while a hog keeps every core busy.
#
#   bench/stress_closed_loop.sh [-n RUNS] [-j HOGS] [-m MAX_MINUTES] [-o LOGDIR] [pytest args]
#
# Starts HOGS busy-looping processes (default: one per core, `nproc`), then runs pytest on
# the closed-loop process tests RUNS times in a row (default 20; default tests below, or the
# pytest arguments given), one run at a time, and counts the green runs. Stops by itself
# after RUNS runs or MAX_MINUTES (default 240) and always ends the hogs it started. Each
# run's output goes to LOGDIR/run_<k>.log (default /tmp/stress_closed_loop.<pid>), a red
# run's pytest temporary directory (process logs, bags) to LOGDIR/tmp_<k>; the last line is
# the count. Exit status 0 when every run was green. Not part of CI
# (docs/closed_loop.md has the measured counts and the command).
set -uo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VPY="${VENV_DIR:-$REPO_DIR/.venv}/bin/python"
RUNS=20
HOGS="$(nproc)"
MAX_MINUTES=240
LOGDIR="/tmp/stress_closed_loop.$$"
while getopts "n:j:m:o:" opt; do
  case "$opt" in
    n) RUNS="$OPTARG" ;;
    j) HOGS="$OPTARG" ;;
    m) MAX_MINUTES="$OPTARG" ;;
    o) LOGDIR="$OPTARG" ;;
    *) echo "usage: $0 [-n RUNS] [-j HOGS] [-m MAX_MINUTES] [-o LOGDIR] [pytest args]" >&2
       exit 2 ;;
  esac
done
shift $((OPTIND - 1))
TESTS=("$@")
if [[ ${#TESTS[@]} -eq 0 ]]; then
  TESTS=(test/test_closed_loop_e2e.py test/test_controller_node.py
         test/test_closed_loop_config.py test/test_carla_sim_node.py
         test/test_controller_lockstep.py test/test_closed_loop_shutdown.py
         test/test_lockstep_gate.py test/test_closed_loop_startup.py -q -p no:cacheprovider)
fi
mkdir -p "$LOGDIR"
cd "$REPO_DIR"

HOG_PIDS=()
stop_hogs() {
  for pid in "${HOG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${HOG_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  HOG_PIDS=()
}
trap stop_hogs EXIT
trap 'stop_hogs; exit 130' INT TERM
for _ in $(seq "$HOGS"); do
  # A pure busy loop: one core each, no memory, no I/O.
  "$VPY" -c "while True: pass" &
  HOG_PIDS+=("$!")
done
echo "[stress] $HOGS CPU hog(s) started (pids ${HOG_PIDS[*]}); $RUNS runs of: ${TESTS[*]}"

deadline=$(( $(date +%s) + MAX_MINUTES * 60 ))
passed=0
ran=0
for k in $(seq "$RUNS"); do
  if (( $(date +%s) >= deadline )); then
    echo "[stress] stopping: $MAX_MINUTES min reached"
    break
  fi
  start=$(date +%s)
  # SIGINT as in a foreground run (a background job starts with it ignored).
  env --default-signal=INT "$VPY" -m pytest "${TESTS[@]}" --basetemp "$LOGDIR/tmp_$k" \
    > "$LOGDIR/run_$k.log" 2>&1
  rc=$?
  ran=$((ran + 1))
  summary="$(tail -n 1 "$LOGDIR/run_$k.log")"
  if [[ $rc -eq 0 ]]; then
    passed=$((passed + 1))
    verdict=green
    rm -rf "$LOGDIR/tmp_$k"  # the processes' logs and bags are kept for red runs only
  else
    verdict="RED (rc $rc)"
  fi
  echo "[stress] run $k: $verdict in $(( $(date +%s) - start )) s: $summary (load $(cut -d' ' -f1-3 /proc/loadavg))"
done
echo "[stress] $passed of $ran runs green ($HOGS hogs; logs in $LOGDIR)"
[[ $ran -gt 0 && $passed -eq $ran ]]
