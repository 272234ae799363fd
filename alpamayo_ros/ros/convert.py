"""Conversions between rclpy messages and the core's plain types.

Inbound: sensor_msgs/Image and CompressedImage -> EncodedImage (a zero-copy numpy view of
msg.data; decoding happens later, only for selected frames); nav_msgs/Odometry -> the
core's OdometrySample. Outbound: the plain-data messages of core.plan_message
(PlannerOutput, nav_msgs/Path, std_msgs/String) and core.autoware_trajectory (Autoware's
Trajectory) -> rclpy messages; the replay writes the
same descriptions into its output bag. Stamps are int nanoseconds throughout.
cv_bridge is not used (not available for ROS 2 from PyPI, and it would copy the pixels).
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from nav_msgs.msg import Path
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.image_decode import (EncodedImage, checked_compressed_image,
                                            checked_raw_image)
from alpamayo_ros.core.odometry import odometry_from_msg
from alpamayo_ros.core.geometry import Pose as CorePose
from alpamayo_ros.core.plan_message import (MsgData, OutputContext, coc_data, path_data,
                                            planner_output_data, pose_data, poses_data)
from alpamayo_ros.core.plan_result import PlanResult
from alpamayo_ros.core.types import NS_PER_S, stamp_to_ns
from alpamayo_ros.msg import PlannerOutput


# ------------------------------------------------------------------------------- time
# builtin_interfaces/Time -> int ns (exact; no float round trip).
time_to_ns = stamp_to_ns


def ns_to_time(ns: int) -> Time:
    """int ns -> builtin_interfaces/Time (floor division keeps nanosec in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def duration_to_ns(duration: Duration) -> int:
    """builtin_interfaces/Duration -> int ns (sec may be negative, nanosec adds)."""
    return int(duration.sec) * NS_PER_S + int(duration.nanosec)


def ns_to_duration(ns: int) -> Duration:
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Duration(sec=sec, nanosec=nanosec)


# ----------------------------------------------------------------------------- images
def image_to_encoded(msg: Image) -> EncodedImage:
    """sensor_msgs/Image -> EncodedImage viewing msg.data (no copy).

    Raises DecodeError for an unsupported encoding or a data size that does not match
    height x step, so a bad message is rejected when it arrives, not when a tick uses it.
    """
    return checked_raw_image(msg.encoding, msg.height, msg.width, msg.step,
                             np.frombuffer(msg.data, dtype=np.uint8))


def compressed_to_encoded(msg: CompressedImage) -> EncodedImage:
    """sensor_msgs/CompressedImage -> EncodedImage viewing msg.data (size unknown = 0).

    Raises DecodeError for empty data, a format other than JPEG/PNG, or data whose
    signature contradicts the format (core.image_decode.checked_compressed_image, the rule
    the replay applies too); corruption inside the stream is found when it is decoded.
    """
    return checked_compressed_image(msg.format, np.frombuffer(msg.data, dtype=np.uint8))


# --------------------------------------------------------------------------- odometry
# nav_msgs/Odometry -> core OdometrySample, values as received.
odometry_to_sample = odometry_from_msg


# ---------------------------------------------------------------------------- outputs
@lru_cache(maxsize=None)
def message_class(type_name: str):
    """rclpy class of 'pkg/msg/Name' (ImportError when the package is not installed)."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def output_message_class(type_name: str, enabled_by: str):
    """rclpy class of an optional output's message type; ConfigError naming the parameter
    that enabled the output when the message package is not installed."""
    try:
        return message_class(type_name)
    except (ImportError, AttributeError) as exc:
        package = type_name.split("/")[0]
        raise ConfigError(f"{enabled_by} is true but the message package {package} is not "
                          f"installed ({type(exc).__name__}: {exc}); source the workspace "
                          f"that has it, or set {enabled_by} to false") from None


def _ros_value(value: Any) -> Any:
    if isinstance(value, MsgData):
        return to_ros_message(value)
    if isinstance(value, list):
        return [_ros_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def to_ros_message(data: MsgData):
    """The rclpy message of a plain-data description (core.plan_message)."""
    return message_class(data.type)(**{k: _ros_value(v) for k, v in data.fields.items()})


def poses_to_msgs(xyz: np.ndarray, rot: np.ndarray) -> list:
    """(N, 3) positions [m] + (N, 3, 3) rotations -> N geometry_msgs/Pose."""
    return [to_ros_message(p) for p in poses_data(xyz, rot)]


def core_pose_to_msg(pose: CorePose):
    """A core Pose -> geometry_msgs/Pose."""
    return to_ros_message(pose_data(pose.position, pose.quaternion_xyzw))


def plan_to_msg(result: PlanResult, context: OutputContext, *, latency_s: float,
                latency_wall_s: float = 0.0) -> PlannerOutput:
    """PlanResult -> alpamayo_ros/PlannerOutput (core.plan_message.planner_output_data)."""
    return to_ros_message(planner_output_data(result, context, latency_s=latency_s,
                                              latency_wall_s=latency_wall_s))


def plan_to_paths(result: PlanResult, base_frame_id: str) -> tuple[Path, Path]:
    """The selected sample as nav_msgs/Path in the t0 base frame and the odometry frame."""
    base, odom = path_data(result, base_frame_id)
    return to_ros_message(base), to_ros_message(odom)


def plan_to_coc(result: PlanResult) -> String:
    """The reasoning of the selected sample."""
    return to_ros_message(coc_data(result))
