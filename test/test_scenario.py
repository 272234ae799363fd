"""Scripted scenarios: analytic motion checks and rendering contracts."""
import math

import numpy as np
import pytest

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.sim import scenario as sc


def test_circle_radius_speed_and_yaw_rate():
    scen = sc.circle_8mps(duration_s=40.0, radius_m=40.0, start_xyz=(5.0, -3.0, 1.0),
                          start_yaw=0.3)
    odo = scen.odometry_samples(rate_hz=50.0)
    # Centre of a left circle: start + R * (-sin yaw0, cos yaw0).
    centre = np.array([5.0 - 40.0 * math.sin(0.3), -3.0 + 40.0 * math.cos(0.3)])
    radius = np.linalg.norm(odo.xyz[:, :2] - centre, axis=1)
    np.testing.assert_allclose(radius, 40.0, atol=1e-9)
    np.testing.assert_allclose(odo.linear_velocity[:, 0], 8.0)
    np.testing.assert_allclose(odo.angular_velocity[:, 2], 8.0 / 40.0)
    np.testing.assert_allclose(odo.xyz[:, 2], 1.0)
    # Speed from finite differences of positions agrees with the twist.
    step = np.linalg.norm(np.diff(odo.xyz[:, :2], axis=0), axis=1) * 50.0
    np.testing.assert_allclose(step, 8.0, rtol=1e-4)
    # Heading after one full lap period is back where it started (mod 2 pi).
    lap = 2 * math.pi * 40.0 / 8.0
    st = scen.pose_at(lap)
    assert math.isclose(math.remainder(st.yaw - 0.3, 2 * math.pi), 0.0, abs_tol=1e-9)
    np.testing.assert_allclose(st.xyz, [5.0, -3.0, 1.0], atol=1e-9)


def test_odometry_samples_rate_and_stamps():
    scen = sc.straight_constant(duration_s=3.0, speed=10.0)
    odo = scen.odometry_samples(0.5, 2.5, rate_hz=50.0)
    assert odo.t.shape == (101,)
    np.testing.assert_allclose(np.diff(odo.t), 0.02)
    np.testing.assert_array_equal(np.diff(odo.stamp_ns), 20_000_000)
    assert odo.stamp_ns[0] == scen.start_stamp_ns + 500_000_000
    np.testing.assert_allclose(odo.xyz[:, 0], 10.0 * odo.t, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(odo.quat_xyzw, axis=1), 1.0)


def test_standing_start_speed_profile_and_distance():
    scen = sc.standing_start(duration_s=12.0, wait_s=2.0, acceleration=2.0, accel_s=5.0)
    assert scen.pose_at(1.5).speed == 0.0
    np.testing.assert_allclose(scen.pose_at(1.5).xyz, [0, 0, 0])
    assert math.isclose(scen.pose_at(4.0).speed, 4.0)
    # s = a t^2 / 2 during the acceleration, then v * t at 10 m/s.
    assert math.isclose(scen.pose_at(4.0).xyz[0], 4.0, abs_tol=1e-12)
    assert math.isclose(scen.pose_at(9.0).xyz[0], 25.0 + 20.0, abs_tol=1e-9)
    assert math.isclose(scen.pose_at(9.0).speed, 10.0)


def test_accelerating_curve_matches_fine_numeric_integration():
    scen = sc.curved_drive()
    t = np.linspace(0.0, scen.duration_s, 200_001)
    x, y, th, v, _, _ = scen.states(t)
    # Trapezoid integration of v (cos, sin)(theta) on a 0.1 ms grid.
    vx, vy = v * np.cos(th), v * np.sin(th)
    dx = np.concatenate([[0], np.cumsum(0.5 * (vx[1:] + vx[:-1]) * np.diff(t))])
    dy = np.concatenate([[0], np.cumsum(0.5 * (vy[1:] + vy[:-1]) * np.diff(t))])
    np.testing.assert_allclose(x, dx, atol=1e-6)
    np.testing.assert_allclose(y, dy, atol=1e-6)
    # The speed change of the preset: 8 -> 12 -> 9 m/s.
    assert math.isclose(scen.pose_at(1.0).speed, 8.0)
    assert math.isclose(scen.pose_at(12.0).speed, 12.0)
    assert math.isclose(scen.pose_at(18.0).speed, 9.0)


def test_camera_stamps_rate_phase_and_window():
    cams = (sc.CameraSpec(0, rate_hz=30.0, phase_s=0.01), sc.CameraSpec(1, rate_hz=10.0))
    scen = sc.straight_constant(duration_s=2.0, cameras=cams)
    st = scen.camera_stamps(0, 0.5, 1.0)
    assert st[0] >= 0.5 and st[-1] <= 1.0
    np.testing.assert_allclose(np.diff(st), 1 / 30.0)
    np.testing.assert_allclose((st - 0.01) * 30.0, np.round((st - 0.01) * 30.0), atol=1e-9)
    assert scen.camera_stamps(1).shape == (21,)
    with pytest.raises(ConfigError, match="no camera 6"):
        scen.camera_stamps(6)


def test_render_shape_dtype_determinism_and_pose_dependence():
    scen = sc.curved_drive(cameras=sc.default_cameras(width=288, height=160))
    for idx in (0, 1, 2, 6):
        a = scen.render_camera(idx, 3.0)
        assert a.shape == (160, 288, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, scen.render_camera(idx, 3.0))
        b = scen.render_camera(idx, 3.5)
        assert np.mean(a != b) > 0.01, f"camera {idx} image does not change with the pose"
    # Sky on top, ground at the bottom: the images are not flat.
    img = scen.render_camera(1, 0.0)
    assert img[0].mean() != img[-1].mean()
    # Different cameras see different views.
    assert np.mean(scen.render_camera(0, 3.0) != scen.render_camera(2, 3.0)) > 0.05


def test_config_errors_have_numbers():
    with pytest.raises(ConfigError, match="negative speed"):
        sc.Scenario("bad", 5.0, (sc.MotionSegment(5.0, acceleration=-3.0),), initial_speed=2.0)
    with pytest.raises(ConfigError, match="rate_hz must be > 0, have 0"):
        sc.CameraSpec(1, rate_hz=0)
    with pytest.raises(ConfigError, match="encoding"):
        sc.CameraSpec(1, encoding="yuv422")
    with pytest.raises(ConfigError, match="unknown scenario preset"):
        sc.make_preset("nope")
    assert set(sc.PRESETS) >= {"curved_drive", "circle_8mps", "standing_start"}
