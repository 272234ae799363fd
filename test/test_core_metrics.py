"""minADE / minFDE and ground truth from future odometry."""
import numpy as np
import pytest

from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.history import OdometryTrack
from alpamayo_ros.core.metrics import displacement_errors, future_xyz_t0_frame
from core_scenarios import EPOCH_NS, NS, CircleMotion, odometry_samples


def track_of(samples):
    return OdometryTrack(np.array([s[0] for s in samples], np.int64),
                         np.array([s[1] for s in samples]), np.array([s[2] for s in samples]))


def test_ground_truth_is_future_in_t0_frame_with_offset():
    motion = CircleMotion(speed=8.0, radius=30.0)
    offset = Pose.from_xyz_rpy((-1.4, 0.0, -0.5), (0.0, 0.0, 0.0))
    track = track_of(odometry_samples(motion, 0.0, 10.0, 50.0, base_in_child=offset))
    t0 = 2.013
    truth = future_xyz_t0_frame(track, EPOCH_NS + int(round(t0 * NS)), offset)
    expected = np.array([motion.local_pose(t0 + 0.1 * (i + 1), t0).position for i in range(64)])
    assert np.max(np.linalg.norm(truth - expected, axis=1)) < 0.01


def test_ground_truth_partial_and_missing():
    motion = CircleMotion()
    track = track_of(odometry_samples(motion, 0.0, 5.0, 50.0))
    truth = future_xyz_t0_frame(track, EPOCH_NS + 2 * NS)
    # Covered up to t0 + 3.0 s: rows 0..29 finite, rows 30.. NaN.
    assert np.all(np.isfinite(truth[:30])) and np.all(np.isnan(truth[30:]))
    assert future_xyz_t0_frame(track, EPOCH_NS + 6 * NS) is None
    errors = displacement_errors(truth[None], truth)
    assert [e.horizon for e in errors] == [1.0, 3.0, 6.4]
    assert errors[0].min_ade == 0.0 and errors[1].min_fde == 0.0
    assert errors[2].min_ade is None and errors[2].min_fde is None


def test_min_ade_fde_values_and_min_over_samples():
    t = 0.1 * np.arange(1, 65)
    truth = np.stack([10 * t, np.zeros(64), np.zeros(64)], axis=1)
    lateral = truth + np.array([0.0, 1.0, 5.0])  # 1 m lateral; z ignored (XY metric)
    drift = truth.copy()
    drift[:, 1] = t  # lateral error growing 0.1 m per step
    errors = displacement_errors(np.stack([lateral, drift]), truth)
    one, three, full = errors
    # Drift: ADE over the first 10 = mean(0.1..1.0) = 0.55 < 1.0; FDE at 1 s = 1.0 = lateral.
    assert one.min_ade == pytest.approx(0.55) and one.best_sample == 1
    assert one.min_fde == pytest.approx(1.0)
    # At 3 s the constant 1 m offset wins both.
    assert three.min_ade == pytest.approx(1.0) and three.best_sample == 0
    assert three.min_fde == pytest.approx(1.0)
    assert full.min_fde == pytest.approx(1.0)
    single = displacement_errors(drift, truth, horizons=(6.4,))[0]
    assert single.min_fde == pytest.approx(6.4)
    with pytest.raises(ValueError, match="horizon must be a multiple"):
        displacement_errors(drift, truth, horizons=(0.25,))
