#!/usr/bin/env bash
# Print requirements-lock.txt for the venv (default <repo>/.venv, or $VENV_DIR):
#   scripts/freeze_lock.sh > requirements-lock.txt
# Like `pip freeze`, but without the egg-info stubs that the ROS wheels ship for their
# Python packages (rclpy, std_msgs, ...: not installable by those names) and with torch's
# local label dropped (torch==2.13.0 matches the CPU and the CUDA builds).
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${VENV_DIR:-$REPO_DIR/.venv}"
sed -n '/^#/p' "$REPO_DIR/requirements-lock.txt"
"$VENV_DIR/bin/python" - <<'PY'
import importlib.metadata as md

pins = set()
for dist in md.distributions():
    if str(getattr(dist, "_path", "")).endswith(".egg-info"):
        continue
    name, version = dist.metadata["Name"], dist.version
    if name.lower() in ("pip", "wheel"):
        continue
    pins.add(f"{name}=={version.split('+')[0]}")
print("\n".join(sorted(pins, key=str.lower)))
PY
