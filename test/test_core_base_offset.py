"""Rear-axle offset from odometry (core.base_offset): accuracy on a noisy synthetic drive,
"not enough data" without curves, and the warning for a missing or wrong-signed offset."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import cumulative_trapezoid
from scipy.spatial.transform import Rotation

from alpamayo_ros.core.base_offset import (BaseOffsetEstimator, BaseOffsetOptions,
                                           check_base_offset, estimate_base_offset_x)
from alpamayo_ros.core.config import PlannerConfig

# Left curve of 0.2 rad/s, right curve of 0.15 rad/s, straights between (seconds, rad/s).
CURVES = ((3, 0.0), (6, 0.2), (3, 0.0), (6, -0.15), (3, 0.0))
AHEAD = 1.4        # child frame (CARLA actor origin) ahead of the rear axle [m]
TOLERANCE = 0.05   # stated accuracy on this drive [m]; 40 seeds gave at most 0.025 m


def drive(rate_hz=100.0, ahead=AHEAD, segments=CURVES, speed=(8.0, 12.0), pos_noise=0.01,
          yaw_noise_deg=0.2, misalign_deg=0.0, seed=0):
    """Odometry (stamps ns, xyz, quat xyzw) of a child frame `ahead` m in front of a
    rear axle that drives a unicycle path: yaw-rate segments blended over 1 s, speed
    rising from speed[0] to speed[1] and back, Gaussian position and heading noise; the
    reported heading may be misaligned with the direction of travel by misalign_deg."""
    total = sum(s for s, _ in segments)
    t = np.arange(0.0, total, 1.0 / rate_hz)
    edges = np.cumsum([0] + [s for s, _ in segments])
    yaw_rate = np.select([(t >= a) & (t < b) for a, b in zip(edges[:-1], edges[1:])],
                         [w for _, w in segments])
    n = int(rate_hz)
    yaw_rate = np.convolve(np.pad(yaw_rate, (n // 2, n - n // 2 - 1), mode="edge"),
                           np.ones(n) / n, mode="valid")
    v = speed[0] + (speed[1] - speed[0]) * 0.5 * (1 - np.cos(2 * np.pi * t / total))
    yaw = cumulative_trapezoid(yaw_rate, t, initial=0.0)
    rear = np.column_stack([cumulative_trapezoid(v * np.cos(yaw), t, initial=0.0),
                            cumulative_trapezoid(v * np.sin(yaw), t, initial=0.0)])
    rng = np.random.default_rng(seed)
    xy = rear + ahead * np.column_stack([np.cos(yaw), np.sin(yaw)])
    xyz = np.column_stack([xy + rng.normal(0.0, pos_noise, xy.shape), np.zeros_like(t)])
    heading = yaw + np.deg2rad(misalign_deg) + rng.normal(0.0, np.deg2rad(yaw_noise_deg),
                                                          t.shape)
    quat = Rotation.from_euler("z", heading[:, None]).as_quat()
    return (1_700_000_000_000_000_000 + np.round(t * 1e9)).astype(np.int64), xyz, quat


@pytest.mark.parametrize("rate_hz", [50.0, 100.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimate_on_a_noisy_curved_drive(rate_hz, seed):
    estimate = estimate_base_offset_x(*drive(rate_hz=rate_hz, seed=seed))
    assert estimate.ok and estimate.reason == ""
    assert estimate.x_m == pytest.approx(-AHEAD, abs=TOLERANCE)
    assert 0.0 < estimate.stderr_m < TOLERANCE
    assert estimate.curve_s > 8.0 and estimate.samples > 15 * rate_hz
    assert estimate.residual_mps < 0.1
    assert estimate.describe().startswith(f"rear axle at x = {estimate.x_m:+.2f} +- ")


@pytest.mark.parametrize("ahead", [0.0, -0.5, 2.8])
def test_estimate_follows_where_the_child_frame_is(ahead):
    estimate = estimate_base_offset_x(*drive(ahead=ahead, seed=5))
    assert estimate.x_m == pytest.approx(-ahead, abs=TOLERANCE)


def test_a_misaligned_heading_does_not_move_the_estimate():
    """1 degree between the child frame's x and the direction of travel is 0.17 m/s of
    lateral velocity at 10 m/s: without the speed term it would shift the estimate by
    about 0.9 m on these curves."""
    aligned = estimate_base_offset_x(*drive(seed=3))
    misaligned = estimate_base_offset_x(*drive(seed=3, misalign_deg=1.0))
    assert misaligned.x_m == pytest.approx(-AHEAD, abs=TOLERANCE)
    assert misaligned.x_m == pytest.approx(aligned.x_m, abs=0.01)
    assert misaligned.yaw_misalignment_rad == pytest.approx(-np.deg2rad(1.0), abs=0.003)
    assert aligned.yaw_misalignment_rad == pytest.approx(0.0, abs=0.003)


def test_straight_drive_is_not_enough_data():
    estimate = estimate_base_offset_x(*drive(segments=((20, 0.0),)))
    assert not estimate.ok and estimate.x_m is None and estimate.stderr_m is None
    assert estimate.reason.startswith("not enough data: 0.0 s of curves")
    assert "need 3 s" in estimate.reason and estimate.describe() == estimate.reason
    assert check_base_offset(estimate, (0.0, 0.0, 0.0), 0.3) is None
    # Standing still or too slow counts as no data either.
    slow = estimate_base_offset_x(*drive(speed=(1.0, 1.5)))
    assert not slow.ok and slow.samples == 0


def test_wrong_or_missing_offset_warns_and_the_right_one_does_not():
    estimate = estimate_base_offset_x(*drive(seed=4))
    tolerance = PlannerConfig().base_offset_tolerance
    assert tolerance == 0.3
    assert check_base_offset(estimate, (-1.4, 0.0, -0.5), tolerance) is None
    assert check_base_offset(estimate, (-1.2, 0.0, 0.0), tolerance) is None  # within 0.3 m
    missing = check_base_offset(estimate, (0.0, 0.0, 0.0), tolerance)
    assert missing is not None
    assert missing.startswith("core.base_offset_xyz[0] is +0.00 m but the odometry puts the "
                              "rear axle at x = -1.40 +- 0.0")
    assert "have +0.00 m, need -1.40 m (tolerance 0.3 m)" in missing
    assert "The t0 pose is off by 1.40 m" in missing and "must be negative" in missing
    wrong_sign = check_base_offset(estimate, (1.4, 0.0, 0.0), tolerance)
    assert "have +1.40 m, need -1.40 m" in wrong_sign and "off by 2.80 m" in wrong_sign
    assert "must be negative" in wrong_sign
    assert check_base_offset(estimate, (1.4, 0.0, 0.0), 3.0) is None
    # A child frame behind the rear axle asks for a positive x.
    behind = estimate_base_offset_x(*drive(ahead=-1.0, seed=4))
    assert "must be positive" in check_base_offset(behind, (-1.0, 0.0, 0.0), tolerance)


def test_sample_by_sample_estimator_equals_the_batch_and_forgets_old_curves():
    stamps, xyz, quat = drive(seed=6)
    estimator = BaseOffsetEstimator(window_s=120.0)
    for s, p, q in zip(stamps, xyz, quat):
        estimator.add(s, p, q)
    estimator.add(stamps[-1], xyz[-1], quat[-1])  # a repeated sample is ignored
    incremental, batch = estimator.estimate(), estimate_base_offset_x(stamps, xyz, quat)
    assert incremental.samples == batch.samples
    assert incremental.x_m == pytest.approx(batch.x_m, abs=1e-9)
    # A window shorter than the final straight holds no curve any more.
    short = BaseOffsetEstimator(window_s=2.5)
    for s, p, q in zip(stamps, xyz, quat):
        short.add(s, p, q)
    assert not short.estimate().ok
    estimator.reset()
    assert not estimator.estimate().ok and estimator.estimate().samples == 0


def test_options_are_checked():
    with pytest.raises(ValueError, match=r"baseline_s: have 0.01, need >= 0.1 s"):
        BaseOffsetOptions(baseline_s=0.01)
    with pytest.raises(ValueError, match="need > baseline_s"):
        BaseOffsetEstimator(window_s=0.2)
    with pytest.raises(ValueError, match="have 3 stamps, 2 positions"):
        estimate_base_offset_x(np.arange(3), np.zeros((2, 3)), np.zeros((3, 4)))
