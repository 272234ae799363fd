"""Parameter files are accepted or refused the same way by the node and the replay tool:
integers where floats are declared are accepted (also inside arrays, which rcl itself
refuses), unknown names are refused with the closest known name."""
from __future__ import annotations

import pytest

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.parameter_file import read_parameter_file
from alpamayo_ros.core.planner_params import NODE_NAME
from alpamayo_ros.tools import replay

pytestmark = pytest.mark.ros

PEOPLE_WRITE = """
/**:
  ros__parameters:
    rate_hz: 2
    model:
      backend: constant_velocity
    core:
      base_offset_xyz: [-1.4, 0, 0]
      max_input_age: 1
"""

TYPO = """
alpamayo_planner:
  ros__parameters:
    model.backend: constant_velocity
    core.frame_tolerence: 0.2
"""


def test_integers_for_floats_accepted_by_node_and_replay(ros_process, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PEOPLE_WRITE)
    values = replay.resolve_parameters(read_parameter_file(path, NODE_NAME))
    assert values["rate_hz"] == 2.0 and values["core.base_offset_xyz"] == [-1.4, 0.0, 0.0]
    proc = ros_process("planner_node", params_file=path)
    proc.wait_for_output(r"planning at 2 Hz", timeout=30.0)
    proc.assert_running()


def test_unknown_name_refused_by_node_and_replay_with_the_closest_name(ros_process, tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(TYPO)
    hint = "unknown parameter 'core.frame_tolerence' (did you mean 'core.frame_tolerance'?)"
    with pytest.raises(ConfigError) as info:
        replay.resolve_parameters(read_parameter_file(path, NODE_NAME))
    assert hint in str(info.value)
    proc = ros_process("planner_node", params_file=path)
    assert proc.wait_exit(timeout=30.0) == 2
    out = proc.output()
    assert hint in out and "Traceback" not in out
