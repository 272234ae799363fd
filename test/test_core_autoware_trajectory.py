"""Autoware's Trajectory as plain data (core/autoware_trajectory.py), without ROS: frame,
stamp, anchoring, times, the model's own speed and acceleration, heading rate and wheel
angle, nothing for ticks without an OK plan, and the parameters."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from alpamayo_ros.core import autoware_trajectory as AT
from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
from alpamayo_ros.core.plan_result import PlanStatus, ReasonCode
from alpamayo_ros.core.planner_core import PlannerCore
from alpamayo_ros.core.planner_params import optional_outputs, validate_parameters

from core_scenarios import NS, CircleMotion, Scenario, now_ns

DRY_RUN = {"model.backend": "constant_velocity", "model.device": "cpu"}


@pytest.fixture(scope="module")
def plan():
    """An OK plan on a left circle (8 m/s, radius 50 m) in the odometry frame "odom"."""
    scenario = Scenario(motion=CircleMotion(speed=8.0, radius=50.0))
    core = PlannerCore(PlannerConfig(), ConstantVelocityModel())
    scenario.advance(core, 3.0)
    result = core.tick(now_ns(3.02))
    assert result.status == PlanStatus.OK, result.reason
    return result



def _ns(duration) -> int:
    return duration.fields["sec"] * NS + duration.fields["nanosec"]


def _pose(data):
    p, q = data.fields["position"].fields, data.fields["orientation"].fields
    return (np.array([p["x"], p["y"], p["z"]]),
            Rotation.from_quat([q["x"], q["y"], q["z"], q["w"]]).as_matrix())


def test_header_is_t0_in_the_odometry_frame_with_64_points_from_0_1_s(plan):
    data = AT.trajectory_data(plan, wheelbase_m=2.79)
    assert data.type == "autoware_planning_msgs/msg/Trajectory"
    header = data.fields["header"].fields
    assert header["frame_id"] == plan.odom_frame_id == "odom"
    stamp = header["stamp"].fields
    assert stamp["sec"] * NS + stamp["nanosec"] == plan.t0_ns
    points = data.fields["points"]
    assert len(points) == 64
    assert all(p.type == "autoware_planning_msgs/msg/TrajectoryPoint" for p in points)
    offsets = [_ns(p.fields["time_from_start"]) for p in points]
    assert offsets == [k * 100_000_000 for k in range(1, 65)]  # 0.1 .. 6.4 s, exact


def test_poses_are_the_plan_anchored_at_the_t0_pose(plan):
    """Each pose equals the t0-frame waypoint moved by the base pose interpolated at t0
    (as alpamayo/path_odom), and the analytic circle pose at its waypoint time."""
    t0 = plan.t0_pose_odom
    cand = plan.selected
    motion = CircleMotion(speed=8.0, radius=50.0)
    points = AT.trajectory_data(plan, 2.79).fields["points"]
    for i, point in enumerate(points):
        xyz, rot = _pose(point.fields["pose"])
        np.testing.assert_allclose(xyz, t0.rotation @ cand.xyz[i] + t0.position, atol=1e-9)
        np.testing.assert_allclose(rot, t0.rotation @ cand.rot[i], atol=1e-9)
        truth = motion.base_pose((plan.waypoint_stamps_ns[i] - now_ns(0.0)) / NS)
        np.testing.assert_allclose(xyz, truth.position, atol=0.05)  # the model's own error


def test_speed_and_acceleration_are_the_models_profile(plan):
    """The model's speed and acceleration are written as they are (here a braking and
    accelerating profile on the candidate), not re-derived from the positions."""
    t = np.arange(1, 65) * 0.1
    accel = 1.5 * np.sin(t)
    speed = 8.0 + np.cumsum(accel) * 0.1
    cand = replace(plan.selected, speed=speed, acceleration=accel)
    varied = replace(plan, candidates=[cand] + plan.candidates[1:])
    points = AT.trajectory_data(varied, 2.79).fields["points"]
    np.testing.assert_array_equal([p.fields["longitudinal_velocity_mps"] for p in points], speed)
    np.testing.assert_array_equal([p.fields["acceleration_mps2"] for p in points], accel)
    assert all(p.fields["lateral_velocity_mps"] == 0.0 == p.fields["rear_wheel_angle_rad"]
               for p in points)


def test_heading_rate_matches_the_turn_of_the_poses(plan):
    """heading_rate_rps (curvature x speed) equals the yaw change of the written poses per
    second: 8 m/s on a 50 m circle = 0.16 rad/s."""
    points = AT.trajectory_data(plan, 2.79).fields["points"]
    yaw = np.unwrap([Rotation.from_matrix(_pose(p.fields["pose"])[1]).as_euler("xyz")[2]
                     for p in points])
    rate = np.array([p.fields["heading_rate_rps"] for p in points])
    np.testing.assert_allclose(rate[1:-1], (yaw[2:] - yaw[:-2]) / 0.2, atol=1e-3)
    np.testing.assert_allclose(rate, 0.16, atol=2e-3)


@settings(max_examples=200, deadline=None)
@given(curvature=st.floats(-0.33, 0.33), wheelbase=st.floats(0.5, 10.0))
def test_front_wheel_angle_drives_the_curvature_of_a_bicycle(curvature, wheelbase):
    """A kinematic bicycle with the front wheels at the written angle, its rear axle at the
    reference, drives the planned curvature: tan(angle) / wheelbase == curvature (over the
    model's curvature range and the wheelbase parameter's range)."""
    angle = float(AT.front_wheel_angle(np.array([curvature]), wheelbase)[0])
    assert abs(angle) < np.pi / 2 and np.sign(angle) == np.sign(curvature)
    assert np.tan(angle) / wheelbase == pytest.approx(curvature, abs=1e-12)


def test_wheel_angle_uses_the_wheelbase_parameter(plan):
    for wheelbase in (2.79, 4.0):
        points = AT.trajectory_data(plan, wheelbase).fields["points"]
        angles = np.array([p.fields["front_wheel_angle_rad"] for p in points])
        np.testing.assert_allclose(np.tan(angles) / wheelbase, plan.selected.curvature,
                                   atol=1e-12)
        assert angles[10] == pytest.approx(np.arctan(wheelbase / 50.0), abs=1e-3)


@pytest.mark.parametrize("status", [PlanStatus.SKIPPED, PlanStatus.INVALID_OUTPUT,
                                    PlanStatus.MODEL_ERROR])
def test_nothing_for_a_tick_without_an_ok_plan(plan, status):
    failed = replace(plan, status=status, reason="no", reason_code=ReasonCode.MODEL_ERROR)
    output = AT.TrajectoryOutput("alpamayo/trajectory", 2.79)
    assert output.build(failed) is None
    with pytest.raises(ValueError, match=f"needs an OK plan, have status {status.name}"):
        AT.trajectory_data(failed, 2.79)
    assert output.build(plan).fields["points"]


def test_parameters_enable_the_output_with_topic_and_wheelbase():
    assert optional_outputs(validate_parameters(DRY_RUN)) == []  # off by default
    values = validate_parameters({**DRY_RUN, "autoware.trajectory.enabled": True,
                                  "autoware.trajectory.topic": "/planning/alpamayo",
                                  "autoware.wheelbase": 3})
    (output,) = optional_outputs(values)
    assert (output.topic, output.wheelbase_m, output.msg_type, output.enabled_by) == (
        "/planning/alpamayo", 3.0, "autoware_planning_msgs/msg/Trajectory",
        "autoware.trajectory.enabled")
    with pytest.raises(ConfigError, match=r"autoware.wheelbase: .*0.2"):
        validate_parameters({**DRY_RUN, "autoware.wheelbase": 0.2})
    with pytest.raises(ConfigError, match="autoware.trajectory.topic: have \"\", need a "
                                          "topic name"):
        validate_parameters({**DRY_RUN, "autoware.trajectory.enabled": True,
                             "autoware.trajectory.topic": ""})
