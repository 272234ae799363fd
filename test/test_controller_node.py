"""controller_node as a real process, fed by this test: the bridge command, bad inputs (plan in
another frame, non-finite plan, odometry teleport and reset), the lockstep gate with
PAUSE/PLAY, the odometry watchdog and the optional Ackermann output."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

import ros_harness

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")
carla_msgs = pytest.importorskip("carla_msgs.msg")

from carla_msgs.msg import CarlaControl, CarlaEgoVehicleControl  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Pose  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402

from alpamayo_ros.msg import PlannerOutput, TrajectoryCandidate  # noqa: E402
from alpamayo_ros.ros import control_convert  # noqa: E402
from alpamayo_ros.ros.convert import ns_to_duration, ns_to_time, time_to_ns  # noqa: E402
from alpamayo_ros.ros.qos import (BRIDGE_QOS, CLOCK_QOS, CONTROL_ODOMETRY_QOS,  # noqa: E402
                                  LATCHED_PLAN_QOS, PLAN_QOS)

CONFIG = ros_harness.REPO_ROOT / "config" / "controller.yaml"
S = 1_000_000_000
STEP = S // 20
OFFSET_X = -1.42
ODOM, CMD = "/carla/ego_vehicle/odometry", "/carla/ego_vehicle/vehicle_control_cmd"


def odometry(t_ns, x, y=0.0, yaw=0.0, speed=10.0, frame="map"):
    """Odometry of the actor origin for the rear axle at (x, y, yaw)."""
    msg = Odometry()
    msg.header.stamp = ns_to_time(t_ns)
    msg.header.frame_id = frame
    msg.child_frame_id = "ego_vehicle"
    msg.pose.pose.position.x = x - OFFSET_X * math.cos(yaw)
    msg.pose.pose.position.y = y - OFFSET_X * math.sin(yaw)
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    msg.twist.twist.linear.x = speed
    return msg


def plan_msg(t0_ns, x0=0.0, speed=10.0, frame="map", tick_ns=None, status=0, nan=False,
             curve_radius=None, y0=0.0, n=64, far_waypoint=False, acceleration=0.0):
    """A straight (or left-curving) PlannerOutput of n waypoints starting at the rear axle
    (x0, y0); far_waypoint puts waypoint 20 at x = 1e200."""
    msg = PlannerOutput()
    msg.header.stamp = ns_to_time(t0_ns)
    msg.header.frame_id = "base_link"
    msg.tick_stamp = ns_to_time(t0_ns if tick_ns is None else tick_ns)
    msg.status = status
    msg.status_reason = "" if status == 0 else "test: skipped"
    msg.odom_frame_id = frame
    msg.t0_pose_odom.position.x = x0
    msg.t0_pose_odom.position.y = y0
    msg.t0_pose_odom.orientation.w = 1.0
    msg.v0 = speed
    t = np.round(np.arange(1, n + 1) * 0.1, 10)
    if curve_radius is None:
        xs, ys, yaw = speed * t, np.zeros(n), np.zeros(n)
    else:
        yaw = speed * t / curve_radius
        xs, ys = curve_radius * np.sin(yaw), curve_radius * (1 - np.cos(yaw))
    if nan:
        xs = xs.copy()
        xs[10] = float("nan")
    if far_waypoint:
        xs = xs.copy()
        xs[20] = 1e200
    cand = TrajectoryCandidate()
    for x, y, a in zip(xs, ys, yaw):
        pose = Pose()
        pose.position.x, pose.position.y = float(x), float(y)
        pose.orientation.z, pose.orientation.w = math.sin(a / 2), math.cos(a / 2)
        cand.poses.append(pose)
    cand.time_from_t0 = [ns_to_duration(int(round(v * S))) for v in t]
    cand.yaw = [float(a) for a in yaw]
    cand.speed = [float(speed)] * n
    cand.acceleration = [float(acceleration)] * n
    cand.curvature = [0.0 if curve_radius is None else 1.0 / curve_radius] * n
    cand.valid = True
    msg.candidates = [cand]
    return msg


class Harness:
    """Publishes odometry / plans / clock to the controller and collects its outputs."""

    def __init__(self, ros_node):
        n = ros_node.node
        self.ros_node = ros_node
        self.odom = n.create_publisher(Odometry, ODOM, CONTROL_ODOMETRY_QOS)
        self.plan = n.create_publisher(PlannerOutput, "/alpamayo/plan", LATCHED_PLAN_QOS)
        self.clock = n.create_publisher(Clock, "/clock", CLOCK_QOS)
        self.command_sub, self.commands = ros_node.subscribe(CMD, CarlaEgoVehicleControl,
                                                             qos=BRIDGE_QOS)
        _, self.run_states = ros_node.subscribe("/carla/control", CarlaControl, qos=BRIDGE_QOS)
        _, self.diagnostics = ros_node.subscribe("/diagnostics", DiagnosticArray, qos=PLAN_QOS)

    def wait_connected(self, proc):
        proc.wait_for_output("following", timeout=30.0)
        for pub in (self.odom, self.plan):
            self.ros_node.wait_for_publisher_match(pub, timeout=20.0)
        self.ros_node.wait_for_subscription_match(self.command_sub, timeout=20.0)
        # Discovery is matched on both sides only when a command comes back: until then the
        # controller's writer may not know our reader yet (volatile: that command is lost).
        # Odometry stamped 0 is answered again each time (same stamp, no time passes).
        deadline = time.monotonic() + 20.0
        while not self.commands.wait_for(1, 0.5):
            assert time.monotonic() < deadline, proc.describe()
            self.odom.publish(odometry(0, 0.0))

    def send(self, odom_msg, timeout=10.0):
        """Publish one odometry sample and wait for the command answering it."""
        n = len(self.commands.messages)
        self.odom.publish(odom_msg)
        got = self.commands.wait_for(n + 1, timeout)
        assert len(got) > n, f"no command for odometry at {time_to_ns(odom_msg.header.stamp)}"
        return got[-1]

    def controller_status(self):
        for array in reversed(list(self.diagnostics.messages)):
            for status in array.status:
                if "alpamayo_controller" in status.name:
                    return status
        return None


def start_controller(ros_process, **params):
    return ros_process("controller_node", params_file=CONFIG, node_name="alpamayo_controller",
                       params={"lockstep.enabled": False, "odometry.timeout": 60.0, **params})


def until_tracking(h, proc, odometry_at, first_k):
    """Send odometry_at(k) for k = first_k, ... until the controller logs that it tracks
    (the plan and the odometry travel on different topics); returns the next k."""
    k = first_k
    deadline = time.monotonic() + 10.0
    while "tracking plan" not in proc.output():
        assert time.monotonic() < deadline, proc.describe()
        h.send(odometry_at(k))
        k += 1
    return k


def test_command_fields_and_bad_inputs_give_safe_stops_with_reasons(ros_process, ros_node):
    proc = start_controller(ros_process, **{"ackermann.enabled": True})
    h = Harness(ros_node)
    h.wait_connected(proc)
    # No plan yet: a controlled stop, brake, no throttle; the bridge's command fields.
    cmd = h.send(odometry(0, 0.0))
    assert cmd.throttle == 0.0 and cmd.brake > 0.0 and not cmd.manual_gear_shift
    assert cmd.gear == 1 and not cmd.reverse and not cmd.hand_brake
    assert time_to_ns(cmd.header.stamp) == 0
    # A valid plan is tracked: throttle, no brake, straight wheel.
    h.plan.publish(plan_msg(0))
    k = until_tracking(h, proc, lambda k: odometry(k * STEP, 0.5 * k), 1)
    cmd = h.send(odometry(k * STEP, 0.5 * k))
    assert cmd.brake == 0.0 and abs(cmd.steer) < 1e-6
    # A plan in a frame the odometry is not in: refused with the reason, old plan kept.
    h.plan.publish(plan_msg(k * STEP, 0.5 * k, frame="odom"))
    proc.wait_for_output(r"its frame 'odom' cannot be related to the odometry frame 'map'")
    # Non-finite poses: refused with the reason.
    h.plan.publish(plan_msg(k * STEP, 0.5 * k, nan=True))
    proc.wait_for_output("plan refused: plan has non-finite poses")
    # Nothing valid since t0 = 0: the plan goes stale -> controlled stop with the cause.
    for k in range(k + 1, 24):
        cmd = h.send(odometry(k * STEP, 0.5 * k, speed=max(10.0 - 0.1 * k, 0.0)))
    assert cmd.brake > 0.0 and cmd.throttle == 0.0
    proc.wait_for_output(r"controlled stop: plan stale: age 1\.05 s > max_plan_age 1 s")
    ros_node.wait_until(lambda: (h.controller_status() is not None and
                                 "plan stale" in h.controller_status().message), 10.0,
                        "stale cause in /diagnostics")
    status = h.controller_status()
    assert status.level == b"\x01"  # WARN
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["plans_refused"]) == 2 and "non-finite" in values["last_refusal"]
    # ackermann_msgs is not installed here: the node says so and runs on.
    if not control_convert.ACKERMANN_AVAILABLE:
        assert "ackermann_msgs is not installed" in proc.output()
    proc.assert_running()


@pytest.mark.parametrize("kind", ["teleport", "reset"])
def test_odometry_jumps_reset_with_a_logged_reason_and_no_steering_spike(ros_process, ros_node,
                                                                        kind):
    proc = start_controller(ros_process)
    h = Harness(ros_node)
    h.wait_connected(proc)
    radius, speed = 30.0, 10.0
    def on_curve(k):
        a = speed * k * 0.05 / radius
        return odometry(k * STEP, radius * math.sin(a), radius * (1 - math.cos(a)), a)

    h.send(on_curve(0))
    h.plan.publish(plan_msg(0, curve_radius=radius))
    first = until_tracking(h, proc, on_curve, 1)
    steers = []
    for k in range(first, 21):
        a = speed * k * 0.05 / radius
        steers.append(h.send(odometry(k * STEP, radius * math.sin(a), radius * (1 - math.cos(a)),
                                      a)).steer)
    assert steers[-1] < -0.05  # steering left on the curve
    if kind == "teleport":
        cmd = h.send(odometry(21 * STEP, 500.0, -200.0, 2.0))
        proc.wait_for_output(r"odometry jumped [0-9.]+ m in 0\.050 s .*teleport or simulator "
                             r"reset; plan dropped")
    else:
        cmd = h.send(odometry(2 * STEP, 0.0, 0.0, 0.0))  # sim time starts over
        proc.wait_for_output(r"odometry time went back 0\.900 s \(simulator reset\); plan dropped")
    # Rate-limited towards straight, never a jump of the wheel.
    assert abs(cmd.steer - steers[-1]) <= 2.0 * 0.05 + 1e-6
    assert cmd.brake > 0.0 and cmd.throttle == 0.0
    proc.assert_running()


def test_lockstep_withholds_the_tick_command_until_the_tick_output(ros_process, ros_node):
    proc = start_controller(ros_process, **{"lockstep.enabled": True,
                                            "lockstep.planning_period": 0.5})
    h = Harness(ros_node)
    h.wait_connected(proc)
    h.send(odometry(9 * STEP, 0.0))  # not a tick: answered at once
    n = len(h.commands.messages)
    h.odom.publish(odometry(10 * STEP, 5.0))  # the tick at 0.5 s
    pause = h.run_states.wait_for(1, 10.0)
    assert pause and pause[-1].command == CarlaControl.PAUSE
    # No command while the tick is unanswered (the output of an older tick does not count).
    h.plan.publish(plan_msg(STEP * 8, tick_ns=0, status=1))
    with pytest.raises(ros_harness.HarnessError):
        ros_node.wait_until(lambda: len(h.commands.messages) > n, 1.0, "a command")
    h.plan.publish(plan_msg(10 * STEP, 5.0, tick_ns=10 * STEP))
    got = h.commands.wait_for(n + 1, 10.0)
    assert len(got) == n + 1 and time_to_ns(got[-1].header.stamp) == 10 * STEP
    states = h.run_states.wait_for(2, 10.0)
    assert [s.command for s in states[-2:]] == [CarlaControl.PAUSE, CarlaControl.PLAY]
    proc.assert_running()


def test_watchdog_brakes_when_odometry_stops(ros_process, ros_node):
    proc = start_controller(ros_process, use_sim_time=True, **{"odometry.timeout": 0.5})
    h = Harness(ros_node)
    h.wait_connected(proc)
    ros_node.wait_for_publisher_match(h.clock, timeout=20.0)
    h.clock.publish(Clock(clock=ns_to_time(0)))
    h.send(odometry(0, 0.0))
    h.plan.publish(plan_msg(0))
    # Odometry stamped 0 while the clock stands at 0: tracking, no watchdog.
    deadline = time.monotonic() + 10.0
    while "tracking plan" not in proc.output():
        assert time.monotonic() < deadline, proc.describe()
        h.send(odometry(0, 0.0))
    n = len(h.commands.messages)
    # The clock runs on 1.2 s, the odometry does not: the node's watchdog timer fires.
    h.clock.publish(Clock(clock=ns_to_time(24 * STEP)))
    got = h.commands.wait_for(n + 1, 10.0)
    assert got[-1].brake == 1.0 and got[-1].throttle == 0.0
    proc.wait_for_output("no odometry for")
    ros_node.wait_until(lambda: (h.controller_status() is not None and
                                 h.controller_status().level == b"\x02"), 10.0, "ERROR status")


def test_hostile_plans_give_finite_commands_and_their_refusals_in_diagnostics(ros_process,
                                                                             ros_node):
    proc = start_controller(ros_process)
    h = Harness(ros_node)
    proc.wait_for_output("following", timeout=30.0)
    ros_node.wait_for_publisher_match(h.plan, timeout=20.0)
    # No odometry yet: even a plan with t0 in the future is refused (no anchor to check).
    h.plan.publish(plan_msg(3 * STEP))
    proc.wait_for_output("plan refused: no odometry yet")
    h.wait_connected(proc)
    h.plan.publish(plan_msg(0))
    k = until_tracking(h, proc, lambda k: odometry(k * STEP, 0.5 * k), 1)
    commands = []

    def drive(steps):
        nonlocal k
        for _ in range(steps):
            commands.append(h.send(odometry(k * STEP, 0.5 * k)))
            k += 1

    hostile = [
        (plan_msg(k * STEP, 0.5 * k, far_waypoint=True), r"pose 1e\+200 m from the t0 pose"),
        (plan_msg(k * STEP, 0.5 * k, acceleration=1e30),
         r"acceleration 1e\+30 m/s\^2 above max_plan_acceleration 10 m/s\^2"),
        (plan_msg(k * STEP, 0.5 * k, n=300), "plan has 300 poses, more than "
         "max_plan_waypoints 256"),
        # Refused on its size before it is deserialized (that alone would take seconds).
        (plan_msg(k * STEP, 0.5 * k, n=100_000), r"plan message of \d+ bytes, more than "
         "max_plan_message_bytes 1048576"),
    ]
    for msg, reason in hostile:
        h.plan.publish(msg)
        proc.wait_for_output(reason)
        drive(2)
    # t0 three steps ahead of the newest odometry, anchored 8 m to the side: it waits for
    # the odometry, then the anchor check refuses it.
    h.plan.publish(plan_msg((k + 2) * STEP, 0.5 * (k + 2), y0=8.0))
    drive(4)
    proc.wait_for_output(r"its t0 pose is 8\.00 m from where the odometry had the rear axle")
    drive(2)
    for cmd in commands:
        assert all(math.isfinite(v) for v in (cmd.throttle, cmd.brake, cmd.steer))
        assert abs(cmd.steer) < 1e-6 and cmd.throttle <= 0.5, cmd  # the straight plan kept
    ros_node.wait_until(lambda: (h.controller_status() is not None and "anchor=1" in {
        kv.key: kv.value for kv in h.controller_status().values}.get("refusals", "")), 10.0,
        "refusals in /diagnostics")
    values = {kv.key: kv.value for kv in h.controller_status().values}
    assert values["refusals"] == "acceleration=1, anchor=1, no_odometry=1, range=1, size=2"
    assert "8.00 m from where the odometry" in values["last_refusal"]
    assert values["plans_waiting"] == "1" and values["mode"] == "tracking"
    proc.assert_running()
