#!/usr/bin/env bash
# Set up the environment (scripts/setup_env.sh, idempotent), then run the demo:
# `python -m alpamayo_ros.ros.demo`. Extra arguments go to the demo (try --help).
# VENV_DIR selects the venv as in setup_env.sh.
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${VENV_DIR:-$REPO_DIR/.venv}"
export VENV_DIR
"$REPO_DIR/scripts/setup_env.sh"
cd "$REPO_DIR"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$REPO_DIR/config/fastdds_large_messages.xml}"
exec "$VENV_DIR/bin/python" -m alpamayo_ros.ros.demo "$@"
