"""What the planner publishes for a tick, as plain data: the one mapping from a PlanResult
to the fields of PlannerOutput and nav_msgs/Path.

The node turns a `MsgData` tree into rclpy messages (ros/convert.py) and the replay tool
into rosbags messages for its output bag (bag/bag_io.py), so both write the same fields
by construction. A MsgData names its message type ("geometry_msgs/msg/Pose") and gives
every field: nested messages as MsgData, sequences of messages as lists, primitive arrays
as numpy arrays of the field's type (float32[] -> float32), scalars as Python values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.plan_result import PlanResult, PlanStatus
from alpamayo_ros.core.types import NS_PER_S, ModelDescription

PLANNER_OUTPUT_TYPE = "alpamayo_ros/msg/PlannerOutput"
PATH_TYPE = "nav_msgs/msg/Path"
STRING_TYPE = "std_msgs/msg/String"


@dataclass(frozen=True)
class MsgData:
    """One message: its type name and every field's value (see the module docstring)."""

    type: str
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class OutputContext:
    """What a PlannerOutput needs besides the PlanResult: the base frame name, the camera
    topics and indices of the inputs, and the loaded model."""

    base_frame_id: str
    camera_topics: Sequence[str]
    camera_indices: Sequence[int]
    model: ModelDescription


# ------------------------------------------------------------------------ basic types
def time_data(ns: int) -> MsgData:
    """builtin_interfaces/Time of int ns (floor division keeps nanosec in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return MsgData("builtin_interfaces/msg/Time", {"sec": sec, "nanosec": nanosec})


def duration_data(ns: int) -> MsgData:
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return MsgData("builtin_interfaces/msg/Duration", {"sec": sec, "nanosec": nanosec})


def header_data(stamp_ns: int, frame_id: str) -> MsgData:
    return MsgData("std_msgs/msg/Header", {"stamp": time_data(stamp_ns),
                                           "frame_id": frame_id})


def pose_data(xyz: Sequence[float], quat_xyzw: Sequence[float]) -> MsgData:
    x, y, z = (float(v) for v in xyz)
    qx, qy, qz, qw = (float(v) for v in quat_xyzw)
    return MsgData("geometry_msgs/msg/Pose", {
        "position": MsgData("geometry_msgs/msg/Point", {"x": x, "y": y, "z": z}),
        "orientation": MsgData("geometry_msgs/msg/Quaternion",
                               {"x": qx, "y": qy, "z": qz, "w": qw})})


def poses_data(xyz: np.ndarray, rot: np.ndarray) -> list[MsgData]:
    """(N, 3) positions [m] + (N, 3, 3) rotations -> N geometry_msgs/Pose."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if len(xyz) == 0:
        return []
    quats = Rotation.from_matrix(np.asarray(rot, dtype=np.float64)).as_quat()
    return [pose_data(p, q) for p, q in zip(xyz, quats)]


def _core_pose_data(pose: Optional[Pose]) -> MsgData:
    if pose is None:
        return pose_data((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    return pose_data(pose.position, pose.quaternion_xyzw)


def _float32s(values) -> np.ndarray:
    return np.zeros(0, np.float32) if values is None else \
        np.asarray(values, dtype=np.float32).ravel()


def _finite(value: float) -> float:
    """A float field's value; NaN (e.g. v0 of a tick the model did not run) is written as
    0.0 so every published float is finite (the status says the value is meaningless)."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


# ------------------------------------------------------------------------ PlannerOutput
def output_stamp_ns(result: PlanResult) -> int:
    """Header stamp of a tick's outputs: t0, or the tick time when no t0 was found."""
    return result.t0_ns if result.t0_ns is not None else result.now_ns


def model_info_data(model: ModelDescription) -> MsgData:
    o = model.options
    return MsgData("alpamayo_ros/msg/ModelInfo", {
        "checkpoint": model.checkpoint, "model_id": model.model_id, "family": model.family,
        "device": model.device, "dtype": model.dtype, "num_samples": int(o.num_samples),
        "diffusion_steps": int(o.diffusion_steps), "max_coc_tokens": int(o.max_coc_tokens),
        "sample_coc": bool(o.sample_coc), "seed": -1 if o.seed is None else int(o.seed),
        "nav_guidance_scale": float(o.nav_guidance_scale),
        "inference_path": model.path.name, "inference_problem": model.path.problem})


def _candidate_data(cand, offsets_ns: Optional[np.ndarray]) -> MsgData:
    return MsgData("alpamayo_ros/msg/TrajectoryCandidate", {
        "poses": poses_data(cand.xyz, cand.rot),
        "time_from_t0": [] if offsets_ns is None else [duration_data(d) for d in offsets_ns],
        "yaw": _float32s(cand.yaw), "speed": _float32s(cand.speed),
        "acceleration": _float32s(cand.acceleration), "curvature": _float32s(cand.curvature),
        "coc": cand.coc, "coc_token_count": int(cand.coc_token_count),
        "coc_truncated": bool(cand.coc_truncated), "valid": bool(cand.valid),
        "invalid_reason": cand.invalid_reason})


def _manifest_data(result: PlanResult, ctx: OutputContext) -> MsgData:
    zero = time_data(0)
    frames = result.frame_stamps_ns
    history = result.history_stamps_ns
    return MsgData("alpamayo_ros/msg/InputManifest", {
        "camera_indices": np.asarray(ctx.camera_indices, dtype=np.uint8),
        "camera_topics": list(ctx.camera_topics),
        "frame_stamps": [] if frames is None else [time_data(s) for s in frames],
        "frame_skew": _float32s(result.frame_skews),
        "max_frame_skew": _finite(result.max_frame_skew),
        "camera_skew": _finite(result.camera_skew),
        "history_start": zero if history is None else time_data(history[0]),
        "history_end": zero if history is None else time_data(history[-1]),
        "odometry_samples": int(result.odometry_samples),
        "odometry_newest": zero if result.odometry_newest_ns is None
        else time_data(result.odometry_newest_ns),
        "history_poses": [] if result.history_xyz is None
        else poses_data(result.history_xyz, result.history_rot)})


def _timing_data(result: PlanResult, latency_s: float, latency_wall_s: float) -> MsgData:
    t = result.timings
    return MsgData("alpamayo_ros/msg/PlannerTiming", {
        "preprocess": _finite(t.model.preprocess),
        "vision_prefill": _finite(t.model.vision_prefill),
        "coc_decode": _finite(t.model.coc_decode), "diffusion": _finite(t.model.diffusion),
        "postprocess": _finite(t.model.postprocess), "model_total": _finite(t.model.total),
        "input_preparation": _finite(t.input_preparation),
        "tick_to_model_start": _finite(t.tick_to_model_start),
        "latency": _finite(latency_s), "latency_wall": _finite(latency_wall_s)})


def planner_output_data(result: PlanResult, ctx: OutputContext, *, latency_s: float,
                        latency_wall_s: float = 0.0) -> MsgData:
    """alpamayo_ros/PlannerOutput of one tick, every field filled.

    header.stamp = t0 (the tick time for ticks skipped before t0 was found), frame = the
    t0 base frame; latency_s: publication - t0 on the node clock [s]; latency_wall_s: wall
    time from the arrival of the newest frame used to publication [s] (0 when unknown).
    """
    offsets_ns = None
    if result.waypoint_stamps_ns is not None and result.t0_ns is not None:
        offsets_ns = np.asarray(result.waypoint_stamps_ns, dtype=np.int64) - result.t0_ns
    return MsgData(PLANNER_OUTPUT_TYPE, {
        "header": header_data(output_stamp_ns(result), ctx.base_frame_id),
        "status": int(result.status), "reason_code": int(result.reason_code),
        "status_reason": result.reason, "tick_stamp": time_data(result.now_ns),
        "odom_frame_id": result.odom_frame_id,
        "t0_pose_odom": _core_pose_data(result.t0_pose_odom),
        "v0": _finite(result.v0),
        "candidates": [_candidate_data(c, offsets_ns) for c in result.candidates],
        "selected_index": int(result.selected_index),
        "inputs": _manifest_data(result, ctx),
        "timing": _timing_data(result, latency_s, latency_wall_s),
        "model": model_info_data(ctx.model), "navigation_text": result.navigation_text})


# ------------------------------------------------------------------------------ Paths
def path_data(result: PlanResult, base_frame_id: str) -> tuple[MsgData, MsgData]:
    """The selected sample as nav_msgs/Path in the t0 base frame and in the odometry frame
    (base_path_data, odom_path_data)."""
    return base_path_data(result, base_frame_id), odom_path_data(result)


def base_path_data(result: PlanResult, base_frame_id: str) -> MsgData:
    """The selected sample as nav_msgs/Path in the t0 base frame (see _path_data)."""
    cand = _selected_plan(result)
    return _path_data(result, base_frame_id, cand.xyz, cand.rot)


def odom_path_data(result: PlanResult) -> MsgData:
    """The selected sample as nav_msgs/Path in the odometry frame (see _path_data)."""
    cand = _selected_plan(result)
    return _path_data(result, result.odom_frame_id, cand.xyz_odom, cand.rot_odom)


def _selected_plan(result: PlanResult):
    """The selected candidate; ValueError unless the result is an OK plan."""
    if result.status != PlanStatus.OK or result.selected is None:
        raise ValueError(f"paths need an OK plan, have status {result.status.name}")
    return result.selected


def _path_data(result: PlanResult, frame: str, xyz: np.ndarray, rot: np.ndarray) -> MsgData:
    """Path in `frame`: the header carries t0; each PoseStamped carries its waypoint time
    t0 + 0.1 (i + 1) s."""
    poses = [MsgData("geometry_msgs/msg/PoseStamped",
                     {"header": header_data(wp_ns, frame), "pose": pose})
             for pose, wp_ns in zip(poses_data(xyz, rot), result.waypoint_stamps_ns)]
    return MsgData(PATH_TYPE, {"header": header_data(result.t0_ns, frame), "poses": poses})


def coc_data(result: PlanResult) -> MsgData:
    """std_msgs/String with the reasoning of the selected sample ("" when none)."""
    cand = result.selected
    return MsgData(STRING_TYPE, {"data": cand.coc if cand is not None else ""})
