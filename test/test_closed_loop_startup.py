"""A closed loop repeats exactly however its processes come up: the controller started seconds
after the simulator and the route oracle (so they discover it only while the run starts)
drives the same trajectory as a run where it was up first: its first status, its first
command and the first plan are not lost to discovery (docs/closed_loop.md, "Start-up")."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]
pytest.importorskip("rclpy")
pytest.importorskip("carla_msgs.msg")

from alpamayo_ros.sim.route import Route  # noqa: E402
from alpamayo_ros.tools import closed_loop  # noqa: E402
from alpamayo_ros.testbed.closed_loop_stack import command_line, sim_stack  # noqa: E402

CONTROLLER_DELAY_S = 4.0


def _run(ros_env, out, controller_delay_s=0.0):
    specs = sim_stack("route_oracle", sim={"duration": 2.0, "initial_speed": 10.0,
                                           "record_path": str(out / "bag")},
                      controller_extra={"diagnostics.period": 0.5,
                                        # a lost plan would hold the run this long
                                        "lockstep.timeout": 10.0})
    commands = {}
    if controller_delay_s:
        argv = command_line(specs[2])
        commands[specs[2].node_name] = ["bash", "-c", f'sleep {controller_delay_s}; exec "$@"',
                                        "late_controller"] + argv
    error, codes = closed_loop.run_processes(specs, out / "logs", 300.0, commands, ros_env)
    assert error is None, error
    report = closed_loop.report_from_bag(out, Route.load(), specs, planning_period_s=0.5,
                                         gate=True, run_info={"exit_codes": codes})
    return report["metrics"]


def test_a_controller_that_comes_up_late_changes_nothing(ros_env, tmp_path):
    first = _run(ros_env, tmp_path / "first")
    late = _run(ros_env, tmp_path / "late", CONTROLLER_DELAY_S)
    for m in (first, late):
        assert m["stops"] == [{"start_s": 0.0, "cause": "no plan received yet", "ended_s": 0.5}]
        assert m["lockstep"]["lockstep_timeouts"] == 0 and m["ticks_missing"] == []
        assert m["lockstep"]["lockstep_input_lags"] == 0
        assert m["plans_ok"] == m["plans_total"] == 3
    assert late["odometry_sha256"] == first["odometry_sha256"]
    # The simulator never stepped without a command (its first one is awaited).
    for run in ("first", "late"):
        sim_log = (tmp_path / run / "logs" / "carla_sim.log").read_text()
        assert "(0 control timeouts, 0 acknowledgement timeouts)" in sim_log, sim_log



def test_a_tick_takes_every_message_already_delivered(ros_domain_id):
    """take_pending, as the planner's and the oracle's ticks call it: the callbacks of all
    queued messages run in the calling thread, oldest first; the executor then finds none."""
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Int32

    from alpamayo_ros.ros.qos import CONTROL_ODOMETRY_QOS
    from alpamayo_ros.ros.spin import take_pending

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    node = rclpy.create_node("take_pending_probe", context=context)
    got = []
    sub = node.create_subscription(Int32, "probe", lambda m: got.append(m.data),
                                   CONTROL_ODOMETRY_QOS)
    pub = node.create_publisher(Int32, "probe", CONTROL_ODOMETRY_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 20.0
        while pub.get_subscription_count() == 0:
            assert time.monotonic() < deadline, "publisher never matched"
            time.sleep(0.05)
        for i in range(5):
            pub.publish(Int32(data=i))
        deadline = time.monotonic() + 20.0
        while len(got) < 5:  # nothing spins: only take_pending runs the callbacks
            assert time.monotonic() < deadline, got
            take_pending([sub])
            time.sleep(0.05)
        assert got == [0, 1, 2, 3, 4]
        assert take_pending([sub]) == 0
        executor.spin_once(timeout_sec=0.2)  # the executor finds nothing left to take
        assert got == [0, 1, 2, 3, 4]
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
