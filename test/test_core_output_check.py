"""Output sanity checks on predicted trajectories."""
import numpy as np

from alpamayo_ros.core.output_check import OutputCheckLimits, backward_motion, check_sample
from alpamayo_ros.core.types import TrajectorySample

LIMITS = OutputCheckLimits(first_waypoint_abs_tolerance=0.2, first_waypoint_rel_tolerance=0.2,
                           max_backward_motion=0.5)


def make(xyz, yaw=None):
    n = len(xyz)
    return TrajectorySample(xyz=np.asarray(xyz, float), rot=np.tile(np.eye(3), (n, 1, 1)),
                            yaw=np.zeros(n) if yaw is None else yaw, speed=np.ones(n),
                            acceleration=np.zeros(n), curvature=np.zeros(n))


def line(v):
    t = 0.1 * np.arange(1, 65)
    return np.stack([v * t, np.zeros(64), np.zeros(64)], axis=1)


def test_good_sample_passes_and_first_waypoint_tolerance():
    assert check_sample(make(line(10.0)), 10.0, LIMITS) == ""
    # Allowed deviation 0.2 + 0.2 * 1.0 = 0.4 m at v0 = 10 m/s.
    shifted = line(10.0)
    shifted[:, 0] += 0.35
    assert check_sample(make(shifted), 10.0, LIMITS) == ""
    shifted[:, 0] += 0.1
    reason = check_sample(make(shifted), 10.0, LIMITS)
    assert reason.startswith("first waypoint is 1.450 m from the origin, expected 1.000 m")
    # Standing still: v0 = 0 and a plan starting 1 m away.
    moved = line(0.0)
    moved[:, 0] = 1.0
    assert "expected 0.000 m" in check_sample(make(moved), 0.0, LIMITS)


def test_backwards_motion_detected():
    xyz = line(5.0)
    xyz[30:, 0] = xyz[30, 0] - 0.05 * np.arange(34)  # 1.65 m backwards
    assert backward_motion(xyz, np.zeros(64)) > 1.6
    assert "moves 1.650 m backwards" in check_sample(make(xyz), 5.0, LIMITS)
    # Turning around a corner is not backwards: progress is measured along the heading.
    theta = np.linspace(0.05, np.pi, 64)
    arc = np.stack([10 * np.sin(theta), 10 * (1 - np.cos(theta)), np.zeros(64)], axis=1)
    assert backward_motion(arc, theta) < 1e-9


def test_non_finite_shape_and_v0():
    xyz = line(5.0)
    sample = make(xyz)
    sample.curvature[3] = np.inf
    assert check_sample(sample, 5.0, LIMITS) == "curvature has 1 non-finite values"
    assert check_sample(make(xyz[:10]), 5.0, LIMITS).startswith("xyz has shape (10, 3)")
    assert check_sample(make(xyz), float("nan"), LIMITS) == "v0 is not finite (nan)"


def test_samples_given_as_lists_are_checked_not_crashed_on():
    sample = make(line(10.0))
    as_lists = TrajectorySample(xyz=sample.xyz.tolist(), rot=sample.rot.tolist(),
                                yaw=sample.yaw.tolist(), speed=sample.speed.tolist(),
                                acceleration=sample.acceleration.tolist(),
                                curvature=sample.curvature.tolist())
    assert check_sample(as_lists, 10.0, LIMITS) == ""
    assert "first waypoint" in check_sample(as_lists, 20.0, LIMITS)


def test_physically_impossible_profiles_are_invalid():
    """v0 of 208 m/s (a relocalisation mistaken for motion), a speed or an acceleration no
    car reaches: never an OK plan."""
    fast = line(208.0)
    reason = check_sample(make(fast), 208.0, LIMITS)
    assert reason == f"|v0| 208.00 m/s exceeds max_speed {LIMITS.max_speed:g} m/s"
    sample = make(line(10.0))
    sample.speed[40] = 90.0
    assert "speed 90.00 m/s at waypoint 40 exceeds max_speed" in check_sample(sample, 10.0,
                                                                               LIMITS)
    sample = make(line(10.0))
    sample.acceleration[5] = -35.0
    assert "acceleration 35.00 m/s^2 at waypoint 5 exceeds max_acceleration" in \
        check_sample(sample, 10.0, LIMITS)
    jumpy = line(10.0)
    jumpy[20:, 1] += 50.0  # a 50 m sideways step between two waypoints 0.1 s apart
    assert "waypoint step speed" in check_sample(make(jumpy), 10.0, LIMITS)
