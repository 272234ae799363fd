"""Ctrl-C while an executable is still importing (rclpy, numpy, torch take seconds on a
loaded machine) ends it without a traceback: node executables with status 0 (a signal
during start-up, as run_node ends one), command-line tools with 130.

Each wrapper in scripts/ runs as it is, under an import hook that holds the first import
of a heavy dependency (numpy; torch for make_tiny_checkpoint, as torch's own import of
numpy swallows errors) until the test has sent SIGINT."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

import ros_harness

NODES = ("planner_node", "synthetic_sensors", "bag_player", "controller_node", "carla_sim",
         "route_oracle", "route_navigation")
TOOLS = ("replay", "make_tiny_checkpoint", "make_scenario_bag", "closed_loop")

# Runs the wrapper sys.argv[2] as __main__; its first import of module sys.argv[1] says
# so and sleeps.
HOLD_IMPORT = """
import importlib.abc, runpy, sys, time

class Hold(importlib.abc.MetaPathFinder):
    def __init__(self, module):
        self.module = module

    def find_spec(self, name, path, target=None):
        if name == self.module:
            sys.meta_path.remove(self)
            print(f"importing {name}", flush=True)
            time.sleep(120)
        return None

sys.meta_path.insert(0, Hold(sys.argv[1]))
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("name", NODES + TOOLS)
def test_ctrl_c_during_the_imports_prints_no_traceback(name, tmp_path):
    wrapper = ros_harness.REPO_ROOT / "scripts" / name
    env = ros_harness.ros_environment(0, tmp_path)
    held = "torch" if name == "make_tiny_checkpoint" else "numpy"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_IMPORT, held, str(wrapper)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=tmp_path)
    try:
        assert proc.stdout.readline() == f"importing {held}\n"
        time.sleep(0.2)  # inside the held import
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == (0 if name in NODES else 130), output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
