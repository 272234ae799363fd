"""Autoware's planning interface as plain data: a PlanResult -> autoware_planning_msgs/Trajectory.

The selected sample of an OK plan, in the odometry frame (``map`` in Autoware), anchored at
the base pose interpolated at t0 (the same poses as ``alpamayo/path_odom``): header stamp
t0, one TrajectoryPoint per waypoint at t0 + 0.1 .. 6.4 s with

* ``time_from_start``: waypoint time - t0 (0.1 s .. 6.4 s);
* ``pose``: position and orientation (heading) in the odometry frame;
* ``longitudinal_velocity_mps`` / ``acceleration_mps2``: the model's own speed at the
  waypoint and the acceleration of the step ending there (the unicycle action space
  integrates exactly these, so they are not re-derived from positions);
* ``heading_rate_rps``: curvature x speed, the yaw rate of the unicycle at the waypoint;
* ``front_wheel_angle_rad``: atan(wheelbase x curvature), the front-wheel angle of a
  kinematic bicycle whose rear axle (Autoware's base_link) follows the curvature;
* ``lateral_velocity_mps`` and ``rear_wheel_angle_rad``: 0 (the model plans a vehicle that
  does not slip and steers its front wheels only).

The node turns the description into an rclpy message (ros/convert.py) and the replay into
a rosbags message (bag/bag_io.py), as for every core.plan_message description. The
message package is Autoware's (``autoware_planning_msgs``); tests build a copy of its
published definitions (test/interfaces/autoware_planning_msgs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from alpamayo_ros.core.param_schema import BOOL, FLOAT, STRING, ParamSpec
from alpamayo_ros.core.plan_message import MsgData, duration_data, header_data, poses_data
from alpamayo_ros.core.plan_result import PlanResult, PlanStatus

MESSAGE_PACKAGE = "autoware_planning_msgs"
TRAJECTORY_TYPE = f"{MESSAGE_PACKAGE}/msg/Trajectory"
TRAJECTORY_POINT_TYPE = f"{MESSAGE_PACKAGE}/msg/TrajectoryPoint"

ENABLED_PARAMETER = "autoware.trajectory.enabled"
TOPIC_PARAMETER = "autoware.trajectory.topic"
WHEELBASE_PARAMETER = "autoware.wheelbase"
DEFAULT_TOPIC = "alpamayo/trajectory"
# Autoware's sample vehicle [m].
DEFAULT_WHEELBASE_M = 2.79

AUTOWARE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(ENABLED_PARAMETER, BOOL, False,
              "Publish the selected sample of every OK plan as "
              "autoware_planning_msgs/Trajectory (odometry frame, stamped t0) on "
              "autoware.trajectory.topic; needs Autoware's autoware_planning_msgs "
              "(configure fails with the reason when it is missing)."),
    ParamSpec(TOPIC_PARAMETER, STRING, DEFAULT_TOPIC,
              "Topic of the Autoware Trajectory (relative names resolve in the node's "
              "namespace)."),
    ParamSpec(WHEELBASE_PARAMETER, FLOAT, DEFAULT_WHEELBASE_M,
              "Wheelbase [m] (rear to front axle) for the Trajectory's "
              "front_wheel_angle_rad = atan(wheelbase x curvature); the default is "
              "Autoware's sample vehicle.", minimum=0.5, maximum=10.0),
)


def front_wheel_angle(curvature: np.ndarray, wheelbase_m: float) -> np.ndarray:
    """Front-wheel angle [rad] of a kinematic bicycle with its reference on the rear axle
    driving curvature [1/m] (+ = left)."""
    return np.arctan(float(wheelbase_m) * np.asarray(curvature, dtype=np.float64))


def trajectory_data(result: PlanResult, wheelbase_m: float) -> MsgData:
    """autoware_planning_msgs/Trajectory of an OK plan's selected sample (see the module
    docstring). Raises ValueError unless the result is an OK plan."""
    if result.status != PlanStatus.OK or result.selected is None:
        raise ValueError(f"a Trajectory needs an OK plan, have status {result.status.name}")
    cand = result.selected
    speed = np.asarray(cand.speed, dtype=np.float64)
    curvature = np.asarray(cand.curvature, dtype=np.float64)
    heading_rate = curvature * speed
    wheel_angle = front_wheel_angle(curvature, wheelbase_m)
    offsets_ns = np.asarray(result.waypoint_stamps_ns, dtype=np.int64) - result.t0_ns
    points = [MsgData(TRAJECTORY_POINT_TYPE, {
        "time_from_start": duration_data(int(offset)), "pose": pose,
        "longitudinal_velocity_mps": float(v), "lateral_velocity_mps": 0.0,
        "acceleration_mps2": float(a), "heading_rate_rps": float(w),
        "front_wheel_angle_rad": float(delta), "rear_wheel_angle_rad": 0.0})
        for offset, pose, v, a, w, delta in zip(
            offsets_ns, poses_data(cand.xyz_odom, cand.rot_odom), speed,
            np.asarray(cand.acceleration, dtype=np.float64), heading_rate, wheel_angle)]
    return MsgData(TRAJECTORY_TYPE, {"header": header_data(result.t0_ns, result.odom_frame_id),
                                     "points": points})


def ok_plan_trajectory(result: PlanResult, wheelbase_m: float) -> Optional[MsgData]:
    """The Trajectory of an OK plan; None for every other tick (Autoware's validators see
    a stale stamp instead)."""
    if result.status != PlanStatus.OK or result.selected is None:
        return None
    return trajectory_data(result, wheelbase_m)


@dataclass(frozen=True)
class TrajectoryOutput:
    """The Trajectory output as the parameters configure it: topic (relative names resolve
    in the namespace), wheelbase, message type, enabling parameter, and the builder
    (ok_plan_trajectory). The node and the replay publish it as the autoware_trajectory row
    of core.outputs.OUTPUTS."""

    topic: str
    wheelbase_m: float
    msg_type: str = TRAJECTORY_TYPE
    enabled_by: str = ENABLED_PARAMETER

    def build(self, result: PlanResult) -> Optional[MsgData]:
        return ok_plan_trajectory(result, self.wheelbase_m)


def trajectory_output(values: Mapping[str, Any]) -> Optional[TrajectoryOutput]:
    """The Trajectory output of validated planner parameters; None when it is disabled."""
    if not values[ENABLED_PARAMETER]:
        return None
    return TrajectoryOutput(values[TOPIC_PARAMETER], float(values[WHEELBASE_PARAMETER]))
