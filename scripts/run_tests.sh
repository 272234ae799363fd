#!/usr/bin/env bash
# Set up the environment (scripts/setup_env.sh, idempotent), then run the whole pytest
# suite. Extra arguments go to pytest, e.g. `scripts/run_tests.sh -k roundtrip -x`.
# VENV_DIR selects the venv as in setup_env.sh.
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${VENV_DIR:-$REPO_DIR/.venv}"
export VENV_DIR
# The test-only interface packages (test/interfaces/: carla_msgs, autoware_planning_msgs) are
# part of the test venv.
export ALPAMAYO_TEST_INTERFACES=1
"$REPO_DIR/scripts/setup_env.sh"
cd "$REPO_DIR"
# setup.cfg [tool:pytest] puts the repository root on sys.path and names test/.
exec "$VENV_DIR/bin/python" -m pytest "$@"
