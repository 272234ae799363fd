"""Names given with ``--ros-args -p`` that a node's parameter table does not know are
refused like parameter-file typos: exit status 2 and one line naming the closest known
name, for every node executable that has a parameter table (no traceback, nothing
started)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.planner_params import PLANNER_PARAMETERS
from alpamayo_ros.testbed.closed_loop_stack import executable_path

pytest.importorskip("rclpy")
from alpamayo_ros.ros.params import check_parameter_overrides  # noqa: E402

pytestmark = pytest.mark.ros

# executable, node name, a typo, the name it should have been
TYPOS = [
    ("planner_node", "alpamayo_planner", "rate_hx", "rate_hz"),
    ("controller_node", "alpamayo_controller", "plan.max_agee", "plan.max_age"),
    ("route_oracle", "alpamayo_route_oracle", "rate_hx", "rate_hz"),
    ("route_navigation", "alpamayo_route_navigation", "valid_fr", "valid_for"),
    ("carla_sim", "carla_sim", "durration", "duration"),
    ("synthetic_sensors", "synthetic_sensors", "odometry_rat", "odometry_rate"),
]


@pytest.mark.parametrize("executable, node, typo, meant", TYPOS, ids=[t[0] for t in TYPOS])
def test_an_unknown_p_name_stops_the_node_with_one_line(ros_env, executable, node, typo,
                                                        meant):
    proc = subprocess.run([sys.executable, str(executable_path(executable)), "--ros-args",
                           "-p", "use_sim_time:=true", "-p", f"{typo}:=3.0"],
                          capture_output=True, text=True, timeout=120, env=ros_env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"{node}: configuration error: unknown parameter {typo!r} given "
                           f"with -p (did you mean {meant!r}?)\n")
    assert "Traceback" not in proc.stdout


def test_only_the_nodes_own_overrides_are_checked():
    specs = PLANNER_PARAMETERS
    args = ["prog", "--ros-args", "-r", "__node:=planner_b", "-p", "rate_hz:=2.0",
            "--param", "use_sim_time:=true", "-p", "other_node:rate_hx:=1.0",
            "-p", "qos_overrides./clock.subscription.depth:=5", "--params-file", "-p",
            "--", "-p", "not_ros:=1"]
    check_parameter_overrides(args, "alpamayo_planner", specs)  # nothing unknown for it
    for rule in ("planner_b:rate_hx:=1.0", "alpamayo_planner:rate_hx:=1.0", "rate_hx:=1"):
        with pytest.raises(ConfigError, match="unknown parameter 'rate_hx' given with -p "
                                              r"\(did you mean 'rate_hz'\?\)"):
            check_parameter_overrides(args[:4] + ["-p", rule], "alpamayo_planner", specs)
