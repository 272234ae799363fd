"""ConstantVelocityModel continues the history at the fitted speed and yaw rate."""
import numpy as np
import pytest

from alpamayo_ros.core.errors import ModelInputError
from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
from alpamayo_ros.core.types import HISTORY_OFFSETS, InferenceOptions, ModelInput
from core_scenarios import CircleMotion


def history_of(motion, t0=3.0):
    poses = [motion.local_pose(t0 + o, t0) for o in HISTORY_OFFSETS]
    return (np.array([p.position for p in poses]), np.array([p.rotation for p in poses]))


def frames():
    return np.zeros((16, 4, 4, 3), np.uint8)


@pytest.mark.parametrize("speed,radius", [(8.0, 50.0), (3.0, -15.0), (12.0, 1e9)])
def test_continues_circle(speed, radius):
    motion = CircleMotion(speed=speed, radius=radius)
    xyz, rot = history_of(motion)
    out = ConstantVelocityModel().predict(ModelInput(frames(), xyz, rot),
                                          InferenceOptions(num_samples=2))
    assert len(out.samples) == 2 and out.model_id == "constant_velocity"
    assert out.v0 == pytest.approx(speed, rel=1e-3)
    truth = np.array([motion.local_pose(3.0 + 0.1 * (i + 1), 3.0).position for i in range(64)])
    sample = out.samples[0]
    assert np.max(np.linalg.norm(sample.xyz - truth, axis=1)) < 0.05
    assert sample.curvature[0] == pytest.approx(1.0 / radius, abs=1e-4)
    np.testing.assert_allclose(sample.rot[:, :2, :2],
                               [[[np.cos(y), -np.sin(y)], [np.sin(y), np.cos(y)]]
                                for y in sample.yaw])


def test_reversing_gives_negative_speed():
    t = np.asarray(HISTORY_OFFSETS)
    xyz = np.stack([-2.0 * t, np.zeros(16), np.zeros(16)], axis=1)  # came from +x: reversing
    rot = np.tile(np.eye(3), (16, 1, 1))
    out = ConstantVelocityModel().predict(ModelInput(frames(), xyz, rot))
    assert out.v0 == pytest.approx(-2.0)
    assert out.samples[0].xyz[-1, 0] == pytest.approx(-12.8)


def test_rejects_bad_history_and_window():
    with pytest.raises(ModelInputError, match="history must be"):
        ConstantVelocityModel().predict(ModelInput(frames(), np.zeros((15, 3)),
                                                   np.zeros((16, 3, 3))))
    with pytest.raises(ValueError, match="fit_window"):
        ConstantVelocityModel(fit_window=0.25)
