"""Property tests of the ROS-free controller (hypothesis): random and adversarial plans and
odometry, driven through a small kinematic car.

Properties, at every step:
  * every command is finite, throttle and brake in [0, 1], steer in [-1, 1];
  * never more throttle than the tracked plan's speed profile needs from the current speed:
    the steepest rise of its speeds (+ max_plan_accel_mismatch, the feed-forward's margin),
    plus kp x how far the reference speed is above the current one, plus the bounded
    integral term; no throttle at all while stopping;
  * refused plans change nothing: a twin controller that never saw them gives the same
    commands (so the car is never steered toward a pose the checks refuse), and the plan
    being tracked passes the checks.
Deterministic (derandomize) and bounded (max_examples) so CI repeats them exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from alpamayo_ros.control import plan_check
from alpamayo_ros.control.config import ControllerConfig
from alpamayo_ros.control.reference_plan import PlanRejected, ReferencePlan
from alpamayo_ros.control.tracking_controller import Mode, OdometryInput, TrackingController
from alpamayo_ros.core.geometry import Pose

S = 1_000_000_000
STEP_NS = S // 20
CFG = ControllerConfig()
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

finite = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False)
anything = st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf, 1e200, -1e30]))


@dataclass
class Car:
    """Rear-axle kinematic bicycle driven by the commands (test-side plant)."""

    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    speed: float = 8.0

    def apply(self, throttle: float, brake: float, steer: float, dt: float) -> None:
        accel = throttle * CFG.full_throttle_accel - brake * CFG.full_brake_decel
        self.speed = max(self.speed + accel * dt, 0.0)
        wheel = -steer * CFG.max_wheel_angle
        self.yaw += self.speed * math.tan(wheel) / CFG.wheelbase * dt
        self.x += self.speed * math.cos(self.yaw) * dt
        self.y += self.speed * math.sin(self.yaw) * dt

    def odometry(self, stamp_ns: int, frame: str = "map", speed=None) -> OdometryInput:
        off = CFG.rear_axle_offset_xyz[0]
        return OdometryInput(stamp_ns, frame,
                             np.array([self.x - off * math.cos(self.yaw),
                                       self.y - off * math.sin(self.yaw), 0.0]),
                             Rotation.from_euler("z", self.yaw).as_quat(),
                             self.speed if speed is None else speed)


huge = st.one_of(st.floats(min_value=1e4, max_value=1e300), st.floats(-1e300, -1e4),
                 st.sampled_from([math.nan, math.inf, -math.inf]))


@dataclass
class PlanSpec:
    """ahead: t0 after now [odometry steps]; anchor_error: t0 pose offset [m]; arrays for
    ReferencePlan; hostile: no car can follow it (or it is anchored elsewhere), whatever
    the limits' exact values: it must never be tracked."""

    ahead: int
    anchor_error: float
    arrays: dict
    status_ok: bool
    hostile: bool


@st.composite
def plan_spec(draw):
    """A unicycle plan from random accelerations and curvatures (the model's action space),
    then perhaps one change, benign or hostile."""
    n = draw(st.integers(2, 70))
    dt = draw(st.sampled_from([0.1, 0.1, 0.05, 0.25]))
    v0 = draw(st.floats(0.0, 25.0))
    accel = np.array(draw(st.lists(st.floats(-4.0, 3.0), min_size=n, max_size=n)))
    kappa = np.array(draw(st.lists(st.floats(-0.3, 0.3), min_size=n, max_size=n)))
    speed = np.maximum(v0 + np.cumsum(accel * dt), 0.0)
    accel = np.diff(np.concatenate([[v0], speed])) / dt
    prev = np.concatenate([[v0], speed[:-1]])
    yaw = np.cumsum(kappa * 0.5 * (prev + speed) * dt)
    prev_yaw = np.concatenate([[0.0], yaw[:-1]])
    steps = 0.5 * dt * (prev[:, None] * np.stack([np.cos(prev_yaw), np.sin(prev_yaw)], 1)
                        + speed[:, None] * np.stack([np.cos(yaw), np.sin(yaw)], 1))
    arrays = {"offsets_s": np.round(np.arange(1, n + 1) * dt, 10),
              "xyz_t0": np.column_stack([np.cumsum(steps, axis=0), np.zeros(n)]),
              "yaw_t0": yaw, "speed": speed, "acceleration": accel, "curvature": kappa,
              "v0": v0}
    change = draw(st.sampled_from(["none", "none", "waypoint", "acceleration", "speed",
                                   "sideways", "slow_time", "long", "yaw_straight",
                                   "curvature", "scale_path", "noise"]))
    k = draw(st.integers(0, n - 1))
    hostile = change in ("waypoint", "acceleration", "speed", "slow_time", "long")
    if change == "waypoint":
        arrays["xyz_t0"][k, draw(st.integers(0, 1))] = draw(huge)
    elif change == "acceleration":
        arrays["acceleration"][k] = draw(huge)
    elif change == "speed":
        arrays["speed"][k] = draw(huge)
    elif change == "sideways":  # the path turned 90 deg, yaw and speeds as they were
        arrays["xyz_t0"] = arrays["xyz_t0"][:, [1, 0, 2]] * np.array([-1.0, 1.0, 1.0])
        hostile = bool(np.any(np.minimum(prev, speed) > 2.0))
    elif change == "slow_time":  # the same poses 100 times slower: horizon or speeds wrong
        arrays["offsets_s"] = arrays["offsets_s"] * 100.0
    elif change == "long":
        reps = 300 // n + 1
        arrays = {key: (np.tile(v, reps) if isinstance(v, np.ndarray) else v)
                  for key, v in arrays.items()}
        arrays["xyz_t0"] = np.tile(arrays["xyz_t0"][:n], (reps, 1))
        arrays["offsets_s"] = np.round(np.arange(1, n * reps + 1) * dt, 10)
    elif change == "yaw_straight":
        arrays["yaw_t0"] = np.zeros(n)
    elif change == "curvature":
        arrays["curvature"][k] = draw(st.floats(-10.0, 10.0))
    elif change == "scale_path":
        arrays["xyz_t0"][:, :2] *= draw(st.floats(0.0, 3.0))
    elif change == "noise":
        arrays["xyz_t0"][:, :2] += draw(st.floats(0.0, 0.5)) * np.sin(
            np.arange(2 * n).reshape(n, 2) * draw(st.floats(0.1, 3.0)))
    ahead = draw(st.sampled_from([0, 0, 0, -3, 2, 3, 5]))
    anchor_error = draw(st.sampled_from([0.0, 0.0, 0.5, 8.0, 1e200]))
    hostile = hostile or anchor_error >= 8.0
    return PlanSpec(ahead, anchor_error, arrays, draw(st.sampled_from([True, True, True, False])),
                    hostile)


@st.composite
def scenario(draw):
    """Steps of odometry (some adversarial) and plans offered between them."""
    events = []
    for _ in range(draw(st.integers(10, 40))):
        kind = draw(st.sampled_from(["step"] * 8 + ["plan"] * 3 + ["teleport", "bad_odom",
                                                                   "twist", "time_back"]))
        if kind == "plan":
            events.append(("plan", draw(plan_spec())))
        elif kind == "teleport":
            events.append(("teleport", draw(st.floats(-100.0, 100.0))))
        elif kind == "bad_odom":
            events.append(("bad_odom", draw(anything)))
        elif kind == "twist":
            events.append(("twist", draw(st.sampled_from([1e4, -1e4, 1e300, 200.0]))))
        else:
            events.append((kind, None))
    return events


def _build(car: Car, now_ns: int, spec: PlanSpec) -> ReferencePlan:
    t0_ns = now_ns + spec.ahead * STEP_NS
    pose = Pose.from_xyz_rpy((car.x + spec.anchor_error, car.y, 0.0), (0.0, 0.0, car.yaw))
    return ReferencePlan(t0_ns=t0_ns, tick_ns=t0_ns, odom_frame_id="map", t0_pose=pose,
                         **{k: (v.copy() if isinstance(v, np.ndarray) else v)
                            for k, v in spec.arrays.items()})


def _check_command(result, ctl: TrackingController, speed: float) -> None:
    c = result.command
    assert all(math.isfinite(v) for v in (c.throttle, c.brake, c.steer)), c
    assert 0.0 <= c.throttle <= 1.0 and 0.0 <= c.brake <= 1.0 and -1.0 <= c.steer <= 1.0, c
    if result.mode != Mode.TRACKING:
        assert c.throttle == 0.0, result
        return
    plan = ctl.plan
    plan_check.check_plan(plan, CFG)  # the tracked plan passes the checks
    rise = float(np.max(np.diff(plan.speeds) / np.diff(plan.times_s), initial=0.0))
    needed = (max(rise, 0.0) + CFG.max_plan_accel_mismatch
              + CFG.speed_kp * max(result.reference_speed - speed, 0.0)
              + CFG.speed_ki * CFG.speed_integral_limit)
    assert c.throttle <= min(needed / CFG.full_throttle_accel, 1.0) + 1e-9, (c, needed)


def _refusal_kind(ctl: TrackingController, before: dict) -> str:
    changed = [k for k, n in ctl.counters.refusals.items() if n != before.get(k, 0)]
    return changed[0] if changed else "?"


@SETTINGS
@given(scenario())
def test_commands_are_finite_in_range_and_refused_plans_change_nothing(events):
    ctl, twin = TrackingController(CFG), TrackingController(CFG)
    car = Car()
    now = 0
    first = car.odometry(now)
    ctl.step(first)
    twin.step(first)
    hostile = []
    for kind, arg in events:
        if kind == "plan":
            built = []

            def make(spec=arg, at=now):
                built.append(_build(car, at, spec))
                return built[-1]
            before = dict(ctl.counters.refusals)
            decision = ctl.offer_plan(status_ok=arg.status_ok, status_text="x",
                                      make_plan=make)
            event("accepted" if decision.accepted else "waiting" if decision.waiting else
                  f"refused: {_refusal_kind(ctl, before)}")
            if arg.hostile:
                assert not decision.accepted, decision
                hostile.extend(built)
            if decision.accepted or decision.waiting:
                twin_decision = twin.offer_plan(status_ok=arg.status_ok, status_text="x",
                                                make_plan=make)
                assert twin_decision == decision
            continue
        now += STEP_NS
        speed_override = None
        if kind == "teleport":
            car.x += arg
        elif kind == "time_back":
            now = max(now - 20 * STEP_NS, 0)
        elif kind == "twist":
            speed_override = arg
        if kind == "bad_odom":
            odom = OdometryInput(now, "map", np.array([arg, 0.0, 0.0]),
                                 np.array([0.0, 0.0, 0.0, 1.0]), 5.0)
        else:
            odom = car.odometry(now, speed=speed_override)
        result, twin_result = ctl.step(odom), twin.step(odom)
        assert result.command == twin_result.command
        assert not any(ctl.plan is h for h in hostile), "a hostile plan is being tracked"
        _check_command(result, ctl, odom.speed if math.isfinite(odom.speed) else 0.0)
        event(f"mode {result.mode.value}")
        car.apply(result.command.throttle, result.command.brake, result.command.steer, 0.05)


@SETTINGS
@given(plan_spec())
def test_a_plan_is_accepted_only_when_every_check_passes(spec):
    """offer_plan's decision agrees with the checks, for any arrays; hostile plans fail them."""
    car = Car()
    ctl = TrackingController(CFG)
    ctl.step(car.odometry(0))
    try:
        plan = _build(car, 0, spec)
    except PlanRejected:
        assert spec.hostile  # only hostile arrays cannot even describe a trajectory
        return
    try:
        plan_check.check_plan(plan, CFG)
        passes = True
    except PlanRejected as exc:
        passes = False
        event(f"refused: {exc.kind}")
    if spec.hostile and spec.anchor_error < 8.0:
        assert not passes
    decision = ctl.offer_plan(status_ok=True, status_text="", make_plan=lambda: plan)
    if decision.accepted:
        assert passes and ctl.plan is plan
    elif passes and spec.ahead == 0 and spec.anchor_error <= CFG.max_anchor_error:
        pytest.fail(f"a plan that passes every check was refused: {decision.reason}")
