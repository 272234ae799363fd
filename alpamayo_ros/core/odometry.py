"""Odometry samples and the one rule that accepts or refuses them (node and replay alike).

An OdometrySample is the pose of the odometry child frame (e.g. base_link, or the actor
origin of carla-ros-bridge) in the odometry frame (odom, map) at its header stamp.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from alpamayo_ros.core.errors import OdometryError
from alpamayo_ros.core.types import stamp_to_ns

# Orientation quaternions whose norm is within this of 1 are normalised (float32
# publishers, rounding in serialisers); farther off, the sample is refused: such a
# quaternion is not a rotation written with some rounding but a wrong value.
QUATERNION_NORM_TOLERANCE = 0.1
# Positions farther than this from the frame origin [m] are refused: no odometry frame of a
# vehicle on Earth (UTM, ECEF, map) is that large, and such values (1e300) would make the
# history's float arithmetic meaningless.
MAX_ABS_POSITION = 1e8


@dataclass(frozen=True)
class OdometrySample:
    """stamp_ns: header stamp [ns]; xyz (3,) [m] and quat_xyzw (4,) (scipy order): pose of
    child_frame_id in frame_id."""

    stamp_ns: int
    xyz: np.ndarray
    quat_xyzw: np.ndarray
    frame_id: str = ""
    child_frame_id: str = ""

    @classmethod
    def from_pose(cls, stamp_ns: int, xyz, quat_xyzw, frame_id: str = "",
                  child_frame_id: str = "") -> "OdometrySample":
        return cls(int(stamp_ns), np.asarray(xyz, dtype=np.float64).reshape(3),
                   np.asarray(quat_xyzw, dtype=np.float64).reshape(4), frame_id,
                   child_frame_id)


def checked_odometry(sample: OdometrySample) -> OdometrySample:
    """The sample with a unit quaternion, or OdometryError saying why it is refused.

    Refused: a zero stamp (header never set); non-finite position or orientation; a
    position beyond MAX_ABS_POSITION; a quaternion whose norm is off 1 by more than
    QUATERNION_NORM_TOLERANCE (a zero quaternion included).
    """
    xyz, quat = sample.xyz, sample.quat_xyzw
    if sample.stamp_ns == 0:
        raise OdometryError("odometry has a zero stamp (header.stamp not set)")
    if not (np.all(np.isfinite(xyz)) and np.all(np.isfinite(quat))):
        raise OdometryError(f"odometry at {sample.stamp_ns} ns has non-finite values: "
                            f"position {xyz.tolist()}, orientation {quat.tolist()}")
    if float(np.max(np.abs(xyz))) > MAX_ABS_POSITION:
        raise OdometryError(f"odometry at {sample.stamp_ns} ns: position {xyz.tolist()} is "
                            f"farther than {MAX_ABS_POSITION:g} m from the frame origin")
    norm = float(np.linalg.norm(quat))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise OdometryError(f"odometry at {sample.stamp_ns} ns: orientation is not a unit "
                            f"quaternion: have norm {norm:.6f}, need 1 +- "
                            f"{QUATERNION_NORM_TOLERANCE:g}")
    return sample if norm == 1.0 else replace(sample, quat_xyzw=quat / norm)


def odometry_from_msg(msg) -> OdometrySample:
    """nav_msgs/Odometry (an rclpy message or a rosbags dataclass alike) -> OdometrySample,
    values as received (InputStreams.add_odometry applies checked_odometry)."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return OdometrySample(stamp_to_ns(msg.header.stamp),
                          np.array([p.x, p.y, p.z], dtype=np.float64),
                          np.array([q.x, q.y, q.z, q.w], dtype=np.float64),
                          msg.header.frame_id, msg.child_frame_id)
