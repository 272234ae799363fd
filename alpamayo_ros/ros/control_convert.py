"""Messages <-> the controller's plain types (odometry, plans, vehicle commands).

carla_msgs is imported here only (the bridge's package on a real install, the test-only
copy in CI); ackermann_msgs is optional: ACKERMANN_AVAILABLE says whether it imports.
"""
from __future__ import annotations

import numpy as np
from carla_msgs.msg import CarlaEgoVehicleControl
from nav_msgs.msg import Odometry

from alpamayo_ros.control.plan_check import check_sizes
from alpamayo_ros.control.reference_plan import PlanRejected, ReferencePlan
from alpamayo_ros.control.tracking_controller import Command, OdometryInput
from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.msg import PlannerOutput
from alpamayo_ros.ros.convert import ns_to_time, time_to_ns

try:  # optional output, "where that package is installed"
    from ackermann_msgs.msg import AckermannDriveStamped
    ACKERMANN_AVAILABLE = True
except ImportError:  # not on PyPI; present on ROS installs with ros-<distro>-ackermann-msgs
    AckermannDriveStamped = None
    ACKERMANN_AVAILABLE = False


def odometry_input(msg: Odometry) -> OdometryInput:
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return OdometryInput(stamp_ns=time_to_ns(msg.header.stamp), frame_id=msg.header.frame_id,
                         xyz=np.array([p.x, p.y, p.z], dtype=np.float64),
                         quat_xyzw=np.array([q.x, q.y, q.z, q.w], dtype=np.float64),
                         speed=float(msg.twist.twist.linear.x))


def reference_plan(msg: PlannerOutput, max_waypoints: int) -> ReferencePlan:
    """The selected candidate of an OK PlannerOutput, anchored at its t0 pose.

    Raises PlanRejected when the message cannot describe a trajectory; arrays longer than
    max_waypoints are refused before anything is converted."""
    if not msg.candidates:
        raise PlanRejected("plan has no candidates")
    if msg.selected_index >= len(msg.candidates):
        raise PlanRejected(f"selected_index {msg.selected_index} out of range "
                           f"({len(msg.candidates)} candidates)")
    cand = msg.candidates[msg.selected_index]
    check_sizes({"poses": len(cand.poses), "waypoint times": len(cand.time_from_t0),
                 "yaw values": len(cand.yaw), "speed values": len(cand.speed),
                 "acceleration values": len(cand.acceleration),
                 "curvature values": len(cand.curvature)}, max_waypoints)
    if not cand.time_from_t0:
        raise PlanRejected("selected candidate has no waypoint times (time_from_t0)")
    p, q = msg.t0_pose_odom.position, msg.t0_pose_odom.orientation
    quat = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
    if not np.all(np.isfinite(quat)) or np.linalg.norm(quat) < 1e-6:
        raise PlanRejected(f"t0 pose has an invalid orientation {quat.tolist()}")
    position = np.array([p.x, p.y, p.z], dtype=np.float64)
    if not np.all(np.isfinite(position)):
        raise PlanRejected("plan has non-finite t0 pose position")
    xyz = np.array([[w.position.x, w.position.y, w.position.z] for w in cand.poses],
                   dtype=np.float64).reshape(-1, 3)
    offsets = np.array([d.sec + d.nanosec * 1e-9 for d in cand.time_from_t0])
    return ReferencePlan(t0_ns=time_to_ns(msg.header.stamp), tick_ns=time_to_ns(msg.tick_stamp),
                         odom_frame_id=msg.odom_frame_id,
                         t0_pose=Pose.from_xyz_quat(position, quat / np.linalg.norm(quat)),
                         offsets_s=offsets, xyz_t0=xyz, yaw_t0=np.asarray(cand.yaw),
                         speed=np.asarray(cand.speed), acceleration=np.asarray(cand.acceleration),
                         curvature=np.asarray(cand.curvature), v0=float(msg.v0))


def vehicle_control(command: Command, stamp_ns: int, frame_id: str = "") -> CarlaEgoVehicleControl:
    """The bridge's command: forward gear, automatic gearbox (manual_gear_shift false)."""
    msg = CarlaEgoVehicleControl()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.header.frame_id = frame_id
    msg.throttle = float(command.throttle)
    msg.brake = float(command.brake)
    msg.steer = float(command.steer)
    msg.hand_brake = False
    msg.reverse = False
    msg.gear = 1
    msg.manual_gear_shift = False
    return msg


def ackermann_drive(wheel_angle: float, speed: float, acceleration: float, stamp_ns: int,
                    frame_id: str = "base_link"):
    """AckermannDriveStamped (wheel angle + = left, speed and acceleration references);
    None when ackermann_msgs is not installed."""
    if not ACKERMANN_AVAILABLE:
        return None
    msg = AckermannDriveStamped()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.header.frame_id = frame_id
    msg.drive.steering_angle = float(wheel_angle)
    msg.drive.speed = float(speed)
    msg.drive.acceleration = float(acceleration)
    return msg
