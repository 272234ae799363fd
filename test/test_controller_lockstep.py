"""controller_node as a real process: one planner output cannot switch lockstep off (its tick
stamp is ignored, counted and shown in /diagnostics), and a flood of refusals of one kind
with differing texts is throttled (issue 20, items 4 and 6)."""
from __future__ import annotations

import time

import pytest

import ros_harness

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")
pytest.importorskip("carla_msgs.msg")

from carla_msgs.msg import CarlaControl  # noqa: E402

from alpamayo_ros.ros.convert import time_to_ns  # noqa: E402
from test_controller_node import (STEP, S, Harness, odometry, plan_msg,  # noqa: E402
                                  start_controller)


def _values(status) -> dict:
    return {kv.key: kv.value for kv in status.values}


def test_a_tick_stamp_an_hour_ahead_does_not_switch_lockstep_off(ros_process, ros_node):
    proc = start_controller(ros_process, **{"lockstep.enabled": True,
                                            "lockstep.planning_period": 0.5})
    h = Harness(ros_node)
    h.wait_connected(proc)
    h.send(odometry(9 * STEP, 0.0))
    # An output whose tick is an hour ahead: ignored with a WARN, counted.
    h.plan.publish(plan_msg(9 * STEP, tick_ns=3600 * S, status=1))
    proc.wait_for_output(r"lockstep: tick stamp ignored \(tick 3600\.000 s is more than one "
                         r"period \(0\.5 s\) after the newest odometry 0\.450 s\); 1 ignored")
    # The tick at 0.5 s is still withheld until its own output arrives.
    n = len(h.commands.messages)
    h.odom.publish(odometry(10 * STEP, 5.0))
    pause = h.run_states.wait_for(1, 10.0)
    assert pause and pause[-1].command == CarlaControl.PAUSE
    with pytest.raises(ros_harness.HarnessError):
        ros_node.wait_until(lambda: len(h.commands.messages) > n, 1.0, "a command")
    # The gate's state is in /diagnostics while it holds the tick.
    ros_node.wait_until(lambda: (h.controller_status() is not None and
                                 _values(h.controller_status()).get("lockstep_holding")
                                 == "0.5000"), 10.0, "the held tick in /diagnostics")
    values = _values(h.controller_status())
    assert values["lockstep_ignored_ticks"] == "1"
    assert "3600.000 s" in values["lockstep_last_ignored"]
    assert values["lockstep_newest_tick"] == ""  # no tick answered yet
    h.plan.publish(plan_msg(10 * STEP, 5.0, tick_ns=10 * STEP))
    got = h.commands.wait_for(n + 1, 10.0)
    assert len(got) == n + 1 and time_to_ns(got[-1].header.stamp) == 10 * STEP
    ros_node.wait_until(lambda: _values(h.controller_status()).get("lockstep_newest_tick")
                        == "0.5000", 10.0, "the answered tick in /diagnostics")
    proc.assert_running()


def test_a_flood_of_refusals_of_one_kind_with_differing_texts_is_throttled(ros_process,
                                                                           ros_node):
    proc = start_controller(ros_process)
    h = Harness(ros_node)
    h.wait_connected(proc)
    h.send(odometry(0, 0.0))
    # 200 plans too fast for a car, each refused with a different speed in its text (paced:
    # a keep-last-10 publisher drops what a slow reader has not taken yet).
    for i in range(200):
        h.plan.publish(plan_msg(0, speed=50.0 + 0.1 * i))
        time.sleep(0.005)
    ros_node.wait_until(lambda: (h.controller_status() is not None and
                                 int(_values(h.controller_status())["plans_refused"]) >= 100),
                        20.0, "at least 100 refusals counted")
    # One kind: one line (a second one only if the flood outlasted the 5 s throttle).
    lines = [line for line in proc.output().splitlines() if "above max_plan_speed" in line]
    assert 1 <= len(lines) <= 2, lines
    # Another kind right after the flood is not hidden by it.
    h.plan.publish(plan_msg(0, frame="odom"))
    proc.wait_for_output(r"its frame 'odom' cannot be related to the odometry frame 'map'")
    proc.assert_running()
