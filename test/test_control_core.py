"""The ROS-free controller: plan anchoring and interpolation, control laws, the lockstep rule
and the TrackingController's decisions (bad plans, odometry jumps, stale plans, stops)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from alpamayo_ros.control import laws
from alpamayo_ros.control.config import ControllerConfig
from alpamayo_ros.control.lockstep import LockstepGate
from alpamayo_ros.control.reference_plan import PlanRejected, ReferencePlan
from alpamayo_ros.control.tracking_controller import Mode, OdometryInput, TrackingController
from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.geometry import Pose

S = 1_000_000_000
OFFSETS = np.round(np.arange(1, 65) * 0.1, 10)


def straight_plan(t0_ns=0, pose=Pose.identity(), v0=10.0, accel=0.0, frame="map", tick_ns=None):
    """A straight plan in the t0 frame: speed v0 + accel * t until it stops."""
    t = OFFSETS
    if accel < 0:
        t = np.minimum(OFFSETS, v0 / -accel)
    speed = v0 + accel * t
    x = v0 * t + 0.5 * accel * t ** 2
    xyz = np.stack([x, np.zeros(64), np.zeros(64)], axis=1)
    return ReferencePlan(t0_ns=t0_ns, tick_ns=t0_ns if tick_ns is None else tick_ns,
                         odom_frame_id=frame, t0_pose=pose, offsets_s=OFFSETS, xyz_t0=xyz,
                         yaw_t0=np.zeros(64), speed=speed,
                         acceleration=np.where(speed > 0, accel, 0.0), v0=v0)


def odom(t_s, x, y=0.0, yaw=0.0, speed=10.0, frame="map", offset_x=-1.42):
    """Odometry of the actor origin for a rear axle at (x, y, yaw)."""
    ax = x - offset_x * math.cos(yaw)
    ay = y - offset_x * math.sin(yaw)
    return OdometryInput(int(round(t_s * S)), frame, np.array([ax, ay, 0.0]),
                         Rotation.from_euler("z", yaw).as_quat(), speed)


# ------------------------------------------------------------------ reference plan
def test_plan_is_anchored_at_its_t0_pose_and_read_at_its_age():
    pose = Pose.from_xyz_rpy((100.0, 50.0, 0.0), (0.0, 0.0, math.pi / 2))
    plan = straight_plan(t0_ns=10 * S, pose=pose, v0=10.0, accel=-2.0)
    # Heading north from (100, 50): the waypoint at t0+1 s is 9 m north.
    s = plan.state_at(11 * S)
    np.testing.assert_allclose(s.position, [100.0, 59.0], atol=1e-9)
    assert s.speed == pytest.approx(8.0) and s.acceleration == pytest.approx(-2.0)
    assert s.yaw == pytest.approx(math.pi / 2)
    # At t0 itself the plan is at the t0 pose with v0; 0.5 s old -> the 0.5 s point.
    assert plan.state_at(10 * S).speed == pytest.approx(10.0)
    half = plan.state_at(10 * S + S // 2)
    np.testing.assert_allclose(half.position, [100.0, 50.0 + 5.0 - 0.25], atol=1e-9)
    assert half.speed == pytest.approx(9.0)
    late = plan.state_at(20 * S)
    assert late.beyond_horizon and late.speed == pytest.approx(plan.speeds[-1])


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.update(xyz_t0=np.full((64, 3), np.nan)), "non-finite poses"),
    (lambda a: a.update(speed=np.ones(10)), "disagree"),
    (lambda a: a.update(offsets_s=np.full(64, 0.1)), "strictly increasing"),
    (lambda a: a.update(t0_pose=Pose(np.array([np.inf, 0, 0]), np.eye(3))), "non-finite t0"),
])
def test_plans_that_cannot_be_trajectories_are_rejected(mutate, message):
    args = dict(t0_ns=0, tick_ns=0, odom_frame_id="map", t0_pose=Pose.identity(),
                offsets_s=OFFSETS, xyz_t0=np.zeros((64, 3)), yaw_t0=np.zeros(64),
                speed=np.zeros(64), acceleration=np.zeros(64))
    mutate(args)
    with pytest.raises(PlanRejected, match=message):
        ReferencePlan(**args)


def test_projection_lateral_sign_and_straight_extrapolation():
    plan = straight_plan()
    p = plan.project([20.0, 1.5])
    assert p.s == pytest.approx(20.0) and p.lateral == pytest.approx(1.5)  # + = left
    assert plan.project([20.0, -0.5]).lateral == pytest.approx(-0.5)
    end = plan.point_at_distance(plan.arc_lengths[-1] + 10.0)
    np.testing.assert_allclose(end.position, [plan.arc_lengths[-1] + 10.0, 0.0], atol=1e-9)


# ------------------------------------------------------------------ laws
def test_pure_pursuit_steers_towards_the_target_and_holds_a_circle():
    assert laws.pure_pursuit_angle([0, 0], 0.0, [10, 0], 2.85) == pytest.approx(0.0)
    assert laws.pure_pursuit_angle([0, 0], 0.0, [10, 2], 2.85) > 0  # left
    # A target on the circle of radius R through the axle, tangent to the heading:
    # exactly the Ackermann angle atan(L / R).
    radius, wheelbase = 50.0, 2.85
    phi = 0.2
    target = [radius * math.sin(phi), radius * (1 - math.cos(phi))]
    assert laws.pure_pursuit_angle([0, 0], 0.0, target, wheelbase) == pytest.approx(
        math.atan(wheelbase / radius))


def test_steer_sign_is_carla_plus_right():
    left = math.radians(10.0)
    assert laws.wheel_angle_to_steer(left, math.radians(70.0)) == pytest.approx(-1 / 7)
    assert laws.steer_to_wheel_angle(-1 / 7, math.radians(70.0)) == pytest.approx(left)
    assert laws.wheel_angle_to_steer(math.radians(-90), math.radians(70.0)) == 1.0


def test_speed_pi_feeds_forward_and_does_not_wind_up():
    pi = laws.SpeedPI(kp=1.0, ki=1.0, integral_limit=10.0)
    assert pi.update(10.0, 10.0, 0.5, 0.05, -8.0, 3.0) == pytest.approx(0.5)
    for _ in range(100):  # saturated at +3: the integral must not grow
        pi.update(20.0, 0.0, 0.0, 0.05, -8.0, 3.0)
    assert pi.integral == pytest.approx(0.0)
    assert laws.acceleration_to_pedals(1.5, 3.0, 8.0, 0.15) == (0.5, 0.0)
    assert laws.acceleration_to_pedals(-0.1, 3.0, 8.0, 0.15) == (0.0, 0.0)  # coast
    assert laws.acceleration_to_pedals(-4.0, 3.0, 8.0, 0.15) == (0.0, 0.5)


def test_lockstep_gate_waits_at_unanswered_ticks_only():
    gate = LockstepGate(S // 2)
    assert not gate.is_tick(0) and gate.is_tick(S // 2) and not gate.is_tick(S // 2 + S // 20)
    assert gate.must_wait(S // 2)
    gate.note_odometry(S // 2)  # ticks are taken only once odometry gives the time
    assert gate.note_output(S // 2) is None  # any status answers the tick
    assert not gate.must_wait(S // 2) and gate.must_wait(S)
    assert gate.note_output(S) is None
    gate.reset()
    assert gate.must_wait(S // 2)
    with pytest.raises(ValueError):
        LockstepGate(0)


def test_controller_config_validates():
    with pytest.raises(ConfigError, match="wheelbase"):
        ControllerConfig(wheelbase=-1.0)
    with pytest.raises(ConfigError, match="lookahead_min"):
        ControllerConfig(lookahead_min=10.0, lookahead_max=5.0)
    with pytest.raises(ConfigError, match="unknown"):
        ControllerConfig.from_dict({"gain": 1.0})


# ------------------------------------------------------------------ tracking controller
def offer(ctl, plan, ok=True):
    return ctl.offer_plan(status_ok=ok, status_text="status 1: skipped", make_plan=lambda: plan)


def test_no_plan_is_a_controlled_stop_with_its_cause_then_standstill():
    ctl = TrackingController(ControllerConfig())
    r = ctl.step(odom(0.0, 0.0, speed=10.0))
    assert r.mode == Mode.STOPPING and r.cause == "no plan received yet"
    assert "controlled stop" in r.event and r.command.throttle == 0.0
    r = ctl.step(odom(1.0, 9.0, speed=6.0))
    assert r.command.brake > 0 and r.reference_speed == pytest.approx(7.0)
    r = ctl.step(odom(5.0, 20.0, speed=0.0))
    assert r.mode == Mode.STOPPED and r.command.brake == pytest.approx(0.5)


def test_plan_age_compensation_reads_the_plan_at_now_plus_preview():
    cfg = ControllerConfig(preview_time=0.0)
    ctl = TrackingController(cfg)
    ctl.step(odom(10.0, 0.0, speed=10.0))
    plan = straight_plan(t0_ns=10 * S, v0=10.0, accel=-2.0)
    assert offer(ctl, plan).accepted
    # The plan is 0.5 s old when the vehicle is where it planned to be at t0 + 0.5 s.
    r = ctl.step(odom(10.5, 4.75, speed=9.0))
    assert r.mode == Mode.TRACKING and r.plan_age_s == pytest.approx(0.5)
    assert r.reference_speed == pytest.approx(9.0) and r.reference_acceleration == -2.0
    assert abs(r.lateral_error_m) < 1e-9 and abs(r.command.steer) < 1e-9


def test_skipped_or_invalid_outputs_never_replace_the_tracked_plan():
    ctl = TrackingController(ControllerConfig())
    ctl.step(odom(0.0, 0.0))
    good = straight_plan(t0_ns=0)
    assert offer(ctl, good).accepted
    d = offer(ctl, straight_plan(t0_ns=S // 2), ok=False)
    assert not d.accepted and "not tracked" in d.reason and ctl.plan is good

    def broken():
        raise PlanRejected("plan has non-finite poses")
    d = ctl.offer_plan(status_ok=True, status_text="", make_plan=broken)
    assert not d.accepted and "non-finite" in d.reason and ctl.plan is good
    older = offer(ctl, straight_plan(t0_ns=-S // 2))
    assert not older.accepted and "not newer" in older.reason


def test_plan_in_an_unrelatable_frame_is_refused_and_the_car_stops_with_the_reason():
    ctl = TrackingController(ControllerConfig())
    ctl.step(odom(0.0, 0.0, speed=10.0))
    d = offer(ctl, straight_plan(t0_ns=0, frame="odom"))
    assert not d.accepted and "'odom' cannot be related to the odometry frame 'map'" in d.reason
    r = ctl.step(odom(0.05, 0.5, speed=9.9))
    assert r.mode == Mode.STOPPING and ctl.counters.refusals == {"frame": 1}


def test_plan_anchored_far_from_the_odometry_at_t0_is_refused():
    ctl = TrackingController(ControllerConfig())
    ctl.step(odom(0.0, 0.0))
    far = straight_plan(t0_ns=0, pose=Pose.from_xyz_rpy((30.0, 0.0, 0.0), (0, 0, 0)))
    d = offer(ctl, far)
    assert not d.accepted and "30.00 m from where the odometry" in d.reason
    assert offer(ctl, straight_plan(t0_ns=0)).accepted


def test_stale_plan_stops_the_car_with_the_cause():
    ctl = TrackingController(ControllerConfig(max_plan_age=1.0))
    ctl.step(odom(0.0, 0.0))
    offer(ctl, straight_plan(t0_ns=0))
    assert ctl.step(odom(0.9, 9.0)).mode == Mode.TRACKING
    r = ctl.step(odom(1.05, 10.5))
    assert r.mode == Mode.STOPPING and r.cause.startswith("plan stale: age 1.05 s")
    assert ctl.plan is None


@pytest.mark.parametrize("jump", ["teleport", "time_back", "yaw"])
def test_odometry_jumps_reset_without_a_steering_spike(jump):
    cfg = ControllerConfig()
    ctl = TrackingController(cfg)
    # Track a left curve so the wheel is turned when the jump happens.
    radius = 30.0
    t = OFFSETS
    phi = 10.0 * t / radius
    xyz = np.stack([radius * np.sin(phi), radius * (1 - np.cos(phi)), np.zeros(64)], axis=1)
    plan = ReferencePlan(t0_ns=0, tick_ns=0, odom_frame_id="map", t0_pose=Pose.identity(),
                         offsets_s=t, xyz_t0=xyz, yaw_t0=phi, speed=np.full(64, 10.0),
                         acceleration=np.zeros(64), v0=10.0)
    ctl.step(odom(0.0, 0.0))
    assert offer(ctl, plan).accepted
    steers = []
    for k in range(1, 20):
        ts = 0.05 * k
        a = 10.0 * ts / radius
        steers.append(ctl.step(odom(ts, radius * math.sin(a), radius * (1 - math.cos(a)), a)
                               ).command.steer)
    assert steers[-1] < -0.05  # turning left
    if jump == "teleport":
        r = ctl.step(odom(1.0, 200.0, 50.0, 1.0))
        assert "jumped" in r.cause
    elif jump == "time_back":
        r = ctl.step(odom(0.2, 0.0, 0.0, 0.0))
        assert "time went back" in r.cause
    else:
        r = ctl.step(odom(1.0, 9.9, 1.7, 2.5))
        assert "yaw jumped" in r.cause
    assert r.mode == Mode.STOPPING and "plan dropped" in r.cause and ctl.plan is None
    assert ctl.counters.resets == 1
    # No spike: the command moves by at most the rate limit per step, towards straight.
    assert abs(r.command.steer - steers[-1]) <= cfg.steer_rate_limit * 0.05 + 1e-9
    # A plan anchored before the reset is refused.
    d = offer(ctl, straight_plan(t0_ns=int(0.1 * S)))
    assert not d.accepted and "before the odometry reset" in d.reason


def test_non_finite_odometry_brakes_and_holds_the_wheel():
    ctl = TrackingController(ControllerConfig())
    ctl.step(odom(0.0, 0.0))
    bad = OdometryInput(S // 20, "map", np.array([np.nan, 0, 0]), np.array([0, 0, 0, 1.0]), 10.0)
    r = ctl.step(bad)
    assert r.command.brake == 1.0 and r.command.throttle == 0.0 and "not finite" in r.cause


def test_plans_a_car_cannot_drive_are_refused():
    ctl = TrackingController(ControllerConfig(max_plan_speed=40.0, max_plan_lateral_accel=6.0))
    ctl.step(odom(0.0, 0.0))
    d = offer(ctl, straight_plan(t0_ns=0, v0=60.0))
    assert not d.accepted and "speed 60.0 m/s above max_plan_speed 40" in d.reason
    # 10 m/s on a 5 m radius: 20 m/s^2 sideways.
    phi = 10.0 * OFFSETS / 5.0
    xyz = np.stack([5 * np.sin(phi), 5 * (1 - np.cos(phi)), np.zeros(64)], axis=1)
    sharp = ReferencePlan(t0_ns=0, tick_ns=0, odom_frame_id="map", t0_pose=Pose.identity(),
                          offsets_s=OFFSETS, xyz_t0=xyz, yaw_t0=phi, speed=np.full(64, 10.0),
                          acceleration=np.zeros(64), v0=10.0)
    d = offer(ctl, sharp)
    assert not d.accepted and "lateral acceleration 20.0 m/s^2" in d.reason
    assert ctl.counters.refusals == {"speed": 1, "lateral_acceleration": 1}


# ------------------------------------------------------------------ plan checks (issue 20)
def arc_plan(speed=10.0, radius=None, t0_ns=0, pose=Pose.identity(), yaw=None, curvature=None,
             acceleration=None, n=64, dt=0.1):
    """A constant-speed plan along a straight line or a left circle of `radius`; yaw,
    curvature and acceleration arrays default to the true ones."""
    t = np.round(np.arange(1, n + 1) * dt, 10)
    if radius is None:
        x, y, true_yaw, true_curvature = speed * t, np.zeros(n), np.zeros(n), 0.0
    else:
        true_yaw = speed * t / radius
        x, y = radius * np.sin(true_yaw), radius * (1 - np.cos(true_yaw))
        true_curvature = 1.0 / radius
    return ReferencePlan(
        t0_ns=t0_ns, tick_ns=t0_ns, odom_frame_id="map", t0_pose=pose, offsets_s=t,
        xyz_t0=np.stack([x, y, np.zeros(n)], axis=1),
        yaw_t0=true_yaw if yaw is None else yaw,
        speed=np.full(n, speed), v0=speed,
        acceleration=np.zeros(n) if acceleration is None else acceleration,
        curvature=np.full(n, true_curvature) if curvature is None else curvature)


def _far_waypoint():
    plan = arc_plan()
    xyz = np.column_stack([plan.local_xy[1:], np.zeros(64)])
    xyz[20, 0] = 1e200
    return ReferencePlan(t0_ns=0, tick_ns=0, odom_frame_id="map", t0_pose=Pose.identity(),
                         offsets_s=plan.times_s[1:], xyz_t0=xyz, yaw_t0=np.zeros(64),
                         speed=np.full(64, 10.0), acceleration=np.zeros(64), v0=10.0)


def _zigzag():
    """10 m/s, each step turned +-0.1 rad from the last, yaw array straight: every step is
    within the motion tolerance of the yaws, the path itself swerves at 20 m/s^2."""
    headings = np.where(np.arange(64) % 2 == 0, 0.05, -0.05)
    xy = np.cumsum(np.stack([np.cos(headings), np.sin(headings)], axis=1), axis=0)
    return ReferencePlan(t0_ns=0, tick_ns=0, odom_frame_id="map", t0_pose=Pose.identity(),
                         offsets_s=OFFSETS, xyz_t0=np.column_stack([xy, np.zeros(64)]),
                         yaw_t0=np.zeros(64), speed=np.full(64, 10.0),
                         acceleration=np.zeros(64), v0=10.0)


def _sideways():
    """Moves 10 m/s to the left while yaw says straight ahead."""
    xyz = np.stack([np.zeros(64), 10.0 * OFFSETS, np.zeros(64)], axis=1)
    return ReferencePlan(t0_ns=0, tick_ns=0, odom_frame_id="map", t0_pose=Pose.identity(),
                         offsets_s=OFFSETS, xyz_t0=xyz, yaw_t0=np.zeros(64),
                         speed=np.full(64, 10.0), acceleration=np.zeros(64), v0=10.0)


@pytest.mark.parametrize("make, kind, message", [
    (_far_waypoint, "range", "pose 1e+200 m from the t0 pose"),
    (lambda: arc_plan(acceleration=np.full(64, 1e30)), "acceleration",
     "acceleration 1e+30 m/s^2 above max_plan_acceleration 10"),
    (lambda: arc_plan(acceleration=np.full(64, 5.0)), "acceleration",
     "disagrees with the speed profile"),
    # 10 m/s on a 2.04 m circle: 49 m/s^2 sideways, yaw consistent ...
    (lambda: arc_plan(radius=10.0 ** 2 / 49.0), "lateral_acceleration",
     "lateral acceleration 49.0 m/s^2"),
    # ... or with a yaw that says straight: the poses disagree with it.
    (lambda: arc_plan(radius=10.0 ** 2 / 49.0, yaw=np.zeros(64), curvature=np.zeros(64)),
     "motion", "poses disagree with speed and yaw"),
    (_sideways, "motion", "at heading 0 deg"),
    (_zigzag, "lateral_acceleration", "of the path's own geometry"),
    # 1 m/s on a 0.5 m circle: only 2 m/s^2, but tighter than the car can turn.
    (lambda: arc_plan(speed=1.0, radius=0.5), "curvature", "above what the car can drive"),
    (lambda: arc_plan(speed=5.0, radius=10.0, curvature=np.zeros(64)), "curvature",
     "curvature array (0 .. 0 1/m) disagrees with the path's own curvature 0.1"),
    (lambda: arc_plan(speed=-50.0), "speed", "speed 50.0 m/s above max_plan_speed"),
    (lambda: arc_plan(n=300), "size", "plan has 300 waypoints, more than max_plan_waypoints"),
    (lambda: arc_plan(speed=1.0, n=64, dt=0.5), "size", "plan horizon 32 s above"),
])
def test_plans_are_checked_on_what_the_controller_follows(make, kind, message):
    ctl = TrackingController(ControllerConfig())
    ctl.step(odom(0.0, 0.0))
    good = arc_plan(t0_ns=0)
    assert offer(ctl, good).accepted
    d = ctl.offer_plan(status_ok=True, status_text="", make_plan=make)
    assert not d.accepted and message in d.reason, d.reason
    assert ctl.counters.refusals == {kind: 1} and ctl.plan is good
    r = ctl.step(odom(0.05, 0.5))
    assert r.mode == Mode.TRACKING and abs(r.command.steer) < 1e-9


def test_plans_that_real_producers_make_pass_the_checks():
    """Kinematic arcs (the constant-velocity backend's shape) and a stopping plan."""
    for plan in (arc_plan(speed=12.0, radius=30.0), straight_plan(v0=3.0, accel=-2.0)):
        ctl = TrackingController(ControllerConfig())
        ctl.step(odom(0.0, 0.0))
        assert offer(ctl, plan).accepted


def test_oversized_messages_are_refused_before_conversion():
    from alpamayo_ros.control.plan_check import check_sizes
    with pytest.raises(PlanRejected, match="100000 poses, more than max_plan_waypoints 256"):
        check_sizes({"poses": 100_000}, 256)
    check_sizes({"poses": 64, "yaw values": 64}, 256)


# ------------------------------------------------------------------ anchor never skipped
def test_no_plan_is_accepted_before_any_odometry():
    ctl = TrackingController(ControllerConfig())
    d = offer(ctl, straight_plan(t0_ns=0))
    assert not d.accepted and "no odometry yet" in d.reason
    assert ctl.counters.refusals == {"no_odometry": 1}
    assert ctl.step(odom(0.0, 0.0)).mode == Mode.STOPPING


def test_a_plan_ahead_of_the_odometry_waits_and_is_anchored_when_it_is_reached():
    ctl = TrackingController(ControllerConfig())
    ctl.step(odom(0.0, 0.0))
    # t0 0.15 s after the newest odometry, anchored 8 m to the side: it waits ...
    aside = straight_plan(t0_ns=15 * S // 100, pose=Pose.from_xyz_rpy((1.5, 8.0, 0.0),
                                                                      (0, 0, 0)))
    d = offer(ctl, aside)
    assert not d.accepted and d.waiting and ctl.plan is None
    r = ctl.step(odom(0.05, 0.5))
    assert r.plan_decision is None and r.mode == Mode.STOPPING
    ctl.step(odom(0.10, 1.0))
    # ... and is refused by the anchor check at the sample that reaches its t0.
    r = ctl.step(odom(0.15, 1.5))
    assert r.plan_decision is not None and not r.plan_decision.accepted
    assert "8.00 m from where the odometry" in r.plan_decision.reason
    assert r.mode == Mode.STOPPING and ctl.plan is None and abs(r.command.steer) < 1e-9
    # The same plan anchored where the car was is tracked from that sample on.
    ontrack = straight_plan(t0_ns=30 * S // 100, pose=Pose.from_xyz_rpy((3.0, 0.0, 0.0),
                                                                        (0, 0, 0)))
    assert offer(ctl, ontrack).waiting
    ctl.step(odom(0.20, 2.0))
    ctl.step(odom(0.25, 2.5))
    r = ctl.step(odom(0.30, 3.0))
    assert r.plan_decision.accepted and r.mode == Mode.TRACKING and ctl.plan is ontrack


def test_a_plan_whose_t0_the_kept_odometry_does_not_cover_is_refused():
    ctl = TrackingController(ControllerConfig())
    ctl.step(odom(20.0, 0.0, speed=0.0))
    d = offer(ctl, straight_plan(t0_ns=19 * S, v0=0.0))
    assert not d.accepted and "no odometry sample within 0.06 s of its t0 19.000 s" in d.reason
    assert ctl.counters.refusals == {"anchor": 1}


# ------------------------------------------------------------------ command guard
def test_a_non_finite_intermediate_brakes_fully_with_an_error_and_recovers_on_the_next_plan():
    cfg = ControllerConfig()
    ctl = TrackingController(cfg)
    ctl.step(odom(0.0, 0.0))
    plan = straight_plan(t0_ns=0)
    assert offer(ctl, plan).accepted
    assert ctl.step(odom(0.05, 0.5)).mode == Mode.TRACKING
    plan.speeds[:] = np.nan  # a value no check could foresee (a bug further down)
    r = ctl.step(odom(0.10, 1.0))
    assert r.error and "non-finite reference speed" in r.event
    assert (r.command.throttle, r.command.brake) == (0.0, 1.0) and ctl.faulted
    assert ctl.counters.non_finite == 1 and ctl.plan is None
    r = ctl.step(odom(0.15, 1.5))  # still braking fully, the filters' state finite
    assert r.command.brake == 1.0 and math.isfinite(r.command.steer)
    assert offer(ctl, straight_plan(t0_ns=S // 10, pose=Pose.from_xyz_rpy((1.0, 0, 0),
                                                                         (0, 0, 0)))).accepted
    r = ctl.step(odom(0.20, 2.0))
    assert r.mode == Mode.TRACKING and not ctl.faulted and not r.error
    assert all(math.isfinite(v) for v in (r.command.throttle, r.command.brake, r.command.steer))


def test_limiters_never_hold_a_non_finite_state():
    assert laws.rate_limit(0.3, float("nan"), 2.0, 0.05) == 0.3
    assert laws.rate_limit(float("inf"), 0.2, 2.0, 0.05) == 0.2
    pi = laws.SpeedPI(kp=1.0, ki=1.0, integral_limit=10.0)
    pi.update(5.0, 4.0, 0.0, 0.05, -8.0, 3.0)
    before = pi.integral
    assert math.isnan(pi.update(float("nan"), 4.0, 0.0, 0.05, -8.0, 3.0))
    assert pi.integral == before


def test_a_teleport_is_a_reset_whatever_twist_is_reported():
    ctl = TrackingController(ControllerConfig())
    ctl.step(odom(0.0, 0.0))
    assert offer(ctl, straight_plan(t0_ns=0)).accepted
    r = ctl.step(odom(0.05, 30.0, speed=1e4))
    assert "odometry jumped 30.00 m in 0.050 s" in r.cause and ctl.counters.resets == 1
    assert r.mode == Mode.STOPPING and ctl.plan is None
