"""The ROS-free simulator pieces (route, vehicle, renderer, oracle, report) and an in-process
closed loop of oracle -> controller -> simulation, including the plan-age cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from alpamayo_ros.control.config import ControllerConfig
from alpamayo_ros.control.reference_plan import ReferencePlan
from alpamayo_ros.control.tracking_controller import OdometryInput, TrackingController
from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.sim import closed_loop_report as R
from alpamayo_ros.sim.road_renderer import ASPHALT, GRASS, LINE, RoadRenderer
from alpamayo_ros.sim.route import Route
from alpamayo_ros.sim.route_oracle import RouteOracle
from alpamayo_ros.sim.simulation import HeldCommand, Simulation
from alpamayo_ros.sim.vehicle_model import KinematicBicycle, VehicleParams, VehicleState

S = 1_000_000_000


# ------------------------------------------------------------------ route
def test_default_route_has_straights_and_curves_of_different_radii():
    route = Route.load()
    kinds = [s.kind for s in route.segments]
    assert "straight" in kinds and "arc" in kinds
    radii = {round(s.radius) for s in route.segments if s.kind == "arc"}
    assert len(radii) >= 3 and min(radii) <= 50
    assert {s.speed_limit for s in route.segments} == {10.0}
    # Closed form of the first arc's end: straight 50 m, then a quarter circle of R = 50 left.
    xy, heading = route.pose_at([50.0 + 78.54])
    np.testing.assert_allclose(xy[0], [100.0, 50.0], atol=0.01)
    assert heading[0] == pytest.approx(math.pi / 2, abs=1e-3)


def test_route_projection_speed_profile_and_errors():
    route = Route.from_dict({"segments": [{"type": "straight", "length": 100, "speed_limit": 10},
                                          {"type": "straight", "length": 100, "speed_limit": 5}]})
    p = route.project([[30.0, 1.2], [30.0, -0.7]])
    np.testing.assert_allclose(p.s, [30.0, 30.0]) and np.testing.assert_allclose(
        p.lateral, [1.2, -0.7])
    v = route.target_speed([0.0, 100.0 - 18.75, 100.0, 200.0], deceleration=2.0)
    # 10 -> 5 m/s at 2 m/s^2 takes 18.75 m; the route ends at standstill.
    np.testing.assert_allclose(v, [10.0, 10.0, 5.0, 0.0], atol=1e-6)
    for doc, message in (({"segments": []}, "at least one"),
                         ({"segments": [{"type": "arc", "length": 5, "speed_limit": 5,
                                         "radius": 2, "direction": "left"}]}, "radius"),
                         ({"segments": [{"type": "spiral", "length": 5, "speed_limit": 5}]},
                          "type"),
                         ({"segments": [{"type": "straight", "speed_limit": 5}]}, "length")):
        with pytest.raises(ConfigError, match=message):
            Route.from_dict(doc)


# ------------------------------------------------------------------ vehicle
def test_bicycle_circles_at_the_ackermann_radius_and_never_reverses():
    params = VehicleParams()
    model = KinematicBicycle(params)
    angle = math.atan(params.wheelbase / 25.0)  # R = 25 m
    state = VehicleState(0.0, 0.0, 0.0, speed=5.0, wheel_angle=angle)
    steer = -angle / params.max_wheel_angle
    for _ in range(400):
        state = model.step(state, 0.0, 0.0, steer, 0.05)
        state = VehicleState(state.x, state.y, state.yaw, 5.0, 0.0, state.wheel_angle)
    # Rear axle stays on the circle of radius 25 around (0, 25).
    assert math.hypot(state.x, state.y - 25.0) == pytest.approx(25.0, abs=1e-6)
    state = VehicleState(0.0, 0.0, 0.0, speed=1.0)
    for _ in range(100):
        state = model.step(state, 0.0, 1.0, 0.0, 0.05)
        assert state.speed >= 0.0
    assert state.speed == 0.0 and state.x < 1.0


def test_actuators_lag_and_rate_limit():
    model = KinematicBicycle(VehicleParams(steer_lag=0.1, steer_rate_max=math.radians(120)))
    state = VehicleState(0.0, 0.0, 0.0, speed=10.0)
    state = model.step(state, 0.0, 0.0, -1.0, 0.05)  # full left at once
    assert 0.0 < state.wheel_angle <= math.radians(120) * 0.05 + 1e-12
    state = model.step(VehicleState(0.0, 0.0, 0.0, speed=10.0), 1.0, 0.0, 0.0, 0.05)
    assert 0.0 < state.acceleration < 3.0  # first-order lag towards 3 m/s^2


def test_actor_origin_is_ahead_of_the_rear_axle():
    model = KinematicBicycle(VehicleParams(rear_axle_offset_x=-1.42))
    state = VehicleState(10.0, 5.0, math.pi / 2)
    np.testing.assert_allclose(model.actor_origin(state), (10.0, 6.42))
    back = model.from_actor_origin(10.0, 6.42, math.pi / 2)
    assert (back.x, back.y) == pytest.approx((10.0, 5.0))


# ------------------------------------------------------------------ renderer
def test_road_raster_and_camera_show_the_road():
    route = Route.load()
    renderer = RoadRenderer(route)
    raster = renderer.raster
    xy, heading = route.pose_at([20.0])
    normal = np.array([-math.sin(heading[0]), math.cos(heading[0])])
    probe = np.array([xy[0], xy[0] + normal * route.road.right_edge, xy[0] + normal * 12.0])
    np.testing.assert_array_equal(raster.kind_at(probe), [ASPHALT, LINE, GRASS])
    image = renderer.render(1, 160, 90, float(xy[0, 0]), float(xy[0, 1]), float(heading[0]))
    bottom = image[-1, 80].astype(int)
    assert abs(bottom[0] - bottom[1]) < 10 and 60 < bottom[0] < 120  # asphalt grey ahead
    white = np.all(image[45:] > 200, axis=-1)
    assert white.sum() > 20  # lane markings visible
    assert np.array_equal(image, renderer.render(1, 160, 90, float(xy[0, 0]), float(xy[0, 1]),
                                                 float(heading[0])))


# ------------------------------------------------------------------ oracle + loop
def test_oracle_plan_starts_at_the_vehicle_and_blends_to_the_centre():
    route = Route.load()
    oracle = RouteOracle(route)
    plan = oracle.plan(10.0, 1.0, 0.0, 8.0)  # 1 m left of the lane centre
    assert plan.xyz.shape == (64, 3) and plan.v0 == 8.0
    assert plan.xyz[0, 0] == pytest.approx(0.8 + 0.5 * 1.5 * 0.01, abs=0.05)
    assert plan.xyz[0, 1] == pytest.approx(0.0, abs=0.05)  # still at the offset
    assert plan.xyz[30, 1] == pytest.approx(-1.0, abs=0.02)  # on the centre line after 3 s
    assert np.all(np.diff(plan.speed) <= 1.5 * 0.1 + 1e-9) and plan.speed[-1] == pytest.approx(10.0)


def _closed_loop(plan_delay_s=0.0, anchor_at_current_pose=False, seconds=30.0):
    """Oracle (ticks at 2 Hz, plans published plan_delay later) -> controller -> simulation.
    Returns (lateral offsets, speed errors) after the first 3 s."""
    route = Route.load()
    sim = Simulation(route, VehicleParams(), S // 20, S // 10, initial_speed=10.0)
    oracle = RouteOracle(route)
    ctl = TrackingController(ControllerConfig())
    queue, lateral, speed_err = [], [], []
    for _ in range(int(seconds * 20)):
        t = sim.time_ns
        x, y, yaw = sim.actor_pose()
        odom = OdometryInput(t, "map", np.array([x, y, 0.0]),
                             Rotation.from_euler("z", yaw).as_quat(), sim.state.speed)
        if t > 0 and t % (S // 2) == 0:
            queue.append((t + int(plan_delay_s * S), t, oracle.plan(
                sim.state.x, sim.state.y, sim.state.yaw, sim.state.speed)))
        for item in [q for q in queue if q[0] <= t]:
            queue.remove(item)
            _, t0, p = item
            pose = p.t0_pose
            if anchor_at_current_pose:  # the peers' mistake, as a negative control
                pose = Pose.from_xyz_rpy((sim.state.x, sim.state.y, 0.0), (0, 0, sim.state.yaw))
            ctl.offer_plan(status_ok=True, status_text="", make_plan=lambda: ReferencePlan(
                t0_ns=t0, tick_ns=t0, odom_frame_id="map", t0_pose=pose, offsets_s=p.offsets,
                xyz_t0=p.xyz, yaw_t0=p.yaw, speed=p.speed, acceleration=p.acceleration,
                curvature=p.curvature, v0=p.v0))
        r = ctl.step(odom)
        sim.apply(HeldCommand(r.command.throttle, r.command.brake, r.command.steer))
        sim.step()
        proj = route.project([[sim.state.x, sim.state.y]])
        if sim.time_ns > 3 * S:
            lateral.append(proj.lateral[0])
            speed_err.append(sim.state.speed - route.target_speed(proj.s, 2.0)[0])
    if not anchor_at_current_pose:  # every oracle plan passes the controller's checks
        assert ctl.counters.plans_refused == 0, ctl.last_refusal
    return np.asarray(lateral), np.asarray(speed_err)


def test_in_process_loop_tracks_the_default_route():
    lateral, speed_err = _closed_loop()
    assert np.sqrt(np.mean(lateral ** 2)) < 0.2 and np.max(np.abs(lateral)) < 0.4
    assert np.sqrt(np.mean(speed_err ** 2)) < 0.2


def test_plans_half_a_second_old_are_tracked_from_the_right_point():
    """Each plan reaches the controller 0.5 s after its t0. Anchored at its t0 pose and
    read at its age it is tracked as well as fresh plans; re-anchored at the current pose
    (the mistake), the same plans put the car far off the lane on the curves."""
    lateral, speed_err = _closed_loop(plan_delay_s=0.5)
    assert np.sqrt(np.mean(lateral ** 2)) < 0.2
    assert np.sqrt(np.mean(speed_err ** 2)) < 0.2
    wrong, _ = _closed_loop(plan_delay_s=0.5, anchor_at_current_pose=True)
    assert np.sqrt(np.mean(wrong ** 2)) > 2 * np.sqrt(np.mean(lateral ** 2)) + 0.1


# ------------------------------------------------------------------ report
def _record(lateral_m=0.3, n=200, planner_ok=True):
    t = np.arange(n) * (S // 20)
    x = 10.0 * t / S
    yaw = np.zeros(n)
    xy = np.stack([x + 1.42, np.full(n, lateral_m)], axis=1)  # actor origin; axle at x
    plans = [{"tick_ns": k * S // 2, "t0_ns": k * S // 2, "log_ns": k * S // 2,
              "status": 0 if planner_ok else 1, "reason": ""} for k in range(1, n // 10)]
    diags = [{"t_ns": 0, "log_ns": 0, "values": {"mode": "stopping",
                                                 "cause": "no plan received yet"}},
             {"t_ns": S // 2, "log_ns": S // 2, "values": {"mode": "tracking", "cause": "",
                                                           "plan_age": "0.0"}}]
    return R.RunRecord(t, xy, yaw, np.full(n, 10.0), plans, diags, commands=n)


def test_report_metrics_and_golden_comparison(tmp_path):
    route = Route.from_dict({"name": "line", "segments": [
        {"type": "straight", "length": 500, "speed_limit": 10}]})
    report = R.compute_report(_record(0.3), route, rear_axle_offset_x=-1.42,
                              planning_period_s=0.5, lockstep=True)
    m = report["metrics"]
    assert m["lateral_deviation_rms_m"] == pytest.approx(0.3)
    assert m["route_progress_m"] == pytest.approx(199 * 0.5)
    assert m["speed_error_rms_mps"] == pytest.approx(0.0, abs=1e-9)
    assert m["plans_ok"] == m["plans_total"] == 19 and m["ticks_missing"] == []
    assert m["stops"] == [{"start_s": 0.0, "cause": "no plan received yet", "ended_s": 0.5}]
    assert m["off_road_events"] == 0 and m["plan_age_p50_s"] == 0.0
    json.dumps(report)  # serialisable
    off = R.compute_report(_record(-1.5), route, rear_axle_offset_x=-1.42,
                           planning_period_s=0.5, lockstep=True)
    assert off["metrics"]["off_road_events"] == 1
    regressions, _ = R.compare(off, report)
    assert any("lateral_deviation_rms_m" in r for r in regressions)
    assert any("off_road_events" in r for r in regressions)
    assert R.compare(report, report)[0] == []
    with pytest.raises(ValueError, match="format"):
        R.compare({"format": "x"}, report)
    assert m["odometry_sha256"] != off["metrics"]["odometry_sha256"]
    R.write_plot(report, route, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_latched_plans_of_an_earlier_time_line_are_left_out_of_the_plan_metrics():
    """A planner kept across a suite's runs replays its last plans (latched) to the next
    simulator's recorder, which logs them at sim time 0 with ticks of the previous run:
    they are counted as ignored, not as this run's plans."""
    route = Route.from_dict({"name": "line", "segments": [
        {"type": "straight", "length": 500, "speed_limit": 10}]})
    record = _record(0.0)
    record.plans[:0] = [{"tick_ns": k * S // 2, "t0_ns": k * S // 2 - S // 10, "log_ns": 0,
                         "status": 0, "reason": ""} for k in range(23, 33)]
    m = R.compute_report(record, route, rear_axle_offset_x=-1.42, planning_period_s=0.5,
                         lockstep=True)["metrics"]
    assert m["plans_ok"] == m["plans_total"] == 19 and m["plans_ignored"] == 10
    assert m["plan_age_p50_s"] == 0.0
