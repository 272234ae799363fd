"""Rigid poses (SE(3)) and the transforms between the odometry, base and t0 frames.

Frames: "odom" is the frame of the odometry messages (e.g. map/odom); the odometry
child frame is what the odometry pose describes (e.g. CARLA's actor origin); "base" is the
rear-axle base frame (REP-103: x forward, y left, z up, metres); the "t0 frame" is the base
frame at t0. Rotations are 3x3 matrices; quaternions are scipy order (x, y, z, w).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class Pose:
    """A rigid pose: position (3,) [m] and rotation (3, 3) of a frame in a parent frame."""

    position: np.ndarray
    rotation: np.ndarray

    @staticmethod
    def identity() -> "Pose":
        return Pose(np.zeros(3), np.eye(3))

    @staticmethod
    def from_xyz_rpy(xyz, rpy) -> "Pose":
        """Pose from a translation [m] and roll/pitch/yaw [rad] (extrinsic x, y, z)."""
        return Pose(np.asarray(xyz, dtype=np.float64).reshape(3),
                    Rotation.from_euler("xyz", np.asarray(rpy, dtype=np.float64)).as_matrix())

    @staticmethod
    def from_xyz_quat(xyz, quat_xyzw) -> "Pose":
        return Pose(np.asarray(xyz, dtype=np.float64).reshape(3),
                    Rotation.from_quat(np.asarray(quat_xyzw, dtype=np.float64)).as_matrix())

    @property
    def quaternion_xyzw(self) -> np.ndarray:
        return Rotation.from_matrix(self.rotation).as_quat()

    @property
    def yaw(self) -> float:
        """Heading about z [rad] (atan2 of the rotated x axis)."""
        return float(np.arctan2(self.rotation[1, 0], self.rotation[0, 0]))

    def compose(self, other: "Pose") -> "Pose":
        """self * other: `other` given in this pose's frame, expressed in the parent frame."""
        return Pose(self.rotation @ other.position + self.position,
                    self.rotation @ other.rotation)

    def inverse(self) -> "Pose":
        rot_inv = self.rotation.T
        return Pose(-rot_inv @ self.position, rot_inv)


def apply_base_offset(child_xyz: np.ndarray, child_rot: np.ndarray, offset: Pose
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Base poses in the odom frame from odometry child poses.

    T_odom_base = T_odom_child * T_child_base.

    child_xyz (N, 3) [m], child_rot (N, 3, 3); offset = pose of the base frame in the child
    frame. Returns (base_xyz (N, 3), base_rot (N, 3, 3)).
    """
    base_xyz = child_xyz + np.einsum("nij,j->ni", child_rot, offset.position)
    base_rot = child_rot @ offset.rotation
    return base_xyz, base_rot


def to_local_frame(xyz: np.ndarray, rot: np.ndarray, origin: Pose
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Express poses (N, 3) / (N, 3, 3) given in a parent frame in the frame `origin`.

    xyz_local = R0^-1 (xyz - p0), R_local = R0^-1 R (the official t0-frame transform).
    """
    rot0_inv = origin.rotation.T
    xyz_local = (xyz - origin.position) @ rot0_inv.T
    rot_local = rot0_inv @ rot
    return xyz_local, rot_local


def from_local_frame(xyz_local: np.ndarray, rot_local: np.ndarray, origin: Pose
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of to_local_frame: pose_parent = T_parent_origin * pose_local."""
    xyz = xyz_local @ origin.rotation.T + origin.position
    rot = origin.rotation @ rot_local
    return xyz, rot


def yaw_of(rot: np.ndarray) -> np.ndarray:
    """Heading about z [rad] of rotations (..., 3, 3), atan2(R[1,0], R[0,0]) as the model."""
    return np.arctan2(rot[..., 1, 0], rot[..., 0, 0])
