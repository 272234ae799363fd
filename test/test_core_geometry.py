"""Pose algebra and the t0-frame transforms."""
import numpy as np

from alpamayo_ros.core.geometry import (Pose, apply_base_offset, from_local_frame,
                                        to_local_frame, yaw_of)


def test_compose_inverse_and_local_frame_round_trip():
    a = Pose.from_xyz_rpy((1.0, -2.0, 0.5), (0.1, -0.2, 1.3))
    b = Pose.from_xyz_rpy((-3.0, 0.4, 2.0), (0.0, 0.3, -0.7))
    identity = a.compose(a.inverse())
    np.testing.assert_allclose(identity.position, 0.0, atol=1e-12)
    np.testing.assert_allclose(identity.rotation, np.eye(3), atol=1e-12)
    xyz = np.array([b.position, a.position])
    rot = np.array([b.rotation, a.rotation])
    local_xyz, local_rot = to_local_frame(xyz, rot, a)
    # The origin expressed in itself is the identity; b matches a^-1 * b.
    np.testing.assert_allclose(local_xyz[1], 0.0, atol=1e-12)
    np.testing.assert_allclose(local_rot[1], np.eye(3), atol=1e-12)
    rel = a.inverse().compose(b)
    np.testing.assert_allclose(local_xyz[0], rel.position, atol=1e-12)
    back_xyz, back_rot = from_local_frame(local_xyz, local_rot, a)
    np.testing.assert_allclose(back_xyz, xyz, atol=1e-12)
    np.testing.assert_allclose(back_rot, rot, atol=1e-12)


def test_base_offset_moves_along_child_axes():
    # Child frame yawed 90 deg: an offset of -1.4 m along its x is -1.4 m along odom y.
    child = Pose.from_xyz_rpy((10.0, 5.0, 0.0), (0.0, 0.0, np.pi / 2))
    offset = Pose.from_xyz_rpy((-1.4, 0.0, -0.5), (0.0, 0.0, 0.0))
    xyz, rot = apply_base_offset(child.position[None], child.rotation[None], offset)
    np.testing.assert_allclose(xyz[0], (10.0, 3.6, -0.5), atol=1e-12)
    assert abs(yaw_of(rot)[0] - np.pi / 2) < 1e-12
