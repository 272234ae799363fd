"""Conversions between ROS messages and the core's plain types.

Inbound: sensor_msgs/Image and CompressedImage -> EncodedImage (a zero-copy numpy view of
msg.data; decoding happens later, only for selected frames); nav_msgs/Odometry -> an
`OdometrySample`. Outbound: PlanResult -> PlannerOutput, nav_msgs/Path (t0 base frame and
odometry frame) and std_msgs/String. Stamps are int nanoseconds throughout.
cv_bridge is not used (not available for ROS 2 from PyPI, and it would copy the pixels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from nav_msgs.msg import Odometry, Path
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from alpamayo_ros.core.geometry import Pose as CorePose
from alpamayo_ros.core.image_decode import (EncodedImage, checked_compressed_image,
                                            checked_raw_image)
from alpamayo_ros.core.plan_result import PlanResult, PlanStatus
from alpamayo_ros.core.types import NS_PER_S
from alpamayo_ros.model.backends import ModelDescription  # noqa: F401 (re-exported)
from alpamayo_ros.msg import (InputManifest, ModelInfo, PlannerOutput, PlannerTiming,
                              TrajectoryCandidate)


# ------------------------------------------------------------------------------- time
def time_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> int ns (exact; no float round trip)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_time(ns: int) -> Time:
    """int ns -> builtin_interfaces/Time (floor division keeps nanosec in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


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
@dataclass(frozen=True)
class OdometrySample:
    """Pose of the odometry child frame in the odometry frame at stamp_ns.

    xyz (3,) [m]; quat_xyzw (4,) unit quaternion, scipy order.
    """

    stamp_ns: int
    frame_id: str
    xyz: np.ndarray
    quat_xyzw: np.ndarray


def odometry_to_sample(msg: Odometry) -> OdometrySample:
    """nav_msgs/Odometry -> OdometrySample (values as received; PlannerCore.add_odometry
    rejects non-finite poses and zero quaternions, and normalises the quaternion)."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return OdometrySample(time_to_ns(msg.header.stamp), msg.header.frame_id,
                          np.array([p.x, p.y, p.z], dtype=np.float64),
                          np.array([q.x, q.y, q.z, q.w], dtype=np.float64))


# ---------------------------------------------------------------------------- outputs
def poses_to_msgs(xyz: np.ndarray, rot: np.ndarray) -> list[Pose]:
    """(N, 3) positions [m] + (N, 3, 3) rotations -> N geometry_msgs/Pose."""
    quats = Rotation.from_matrix(np.asarray(rot, dtype=np.float64)).as_quat()
    return [Pose(position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                 orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                        w=float(q[3])))
            for p, q in zip(np.asarray(xyz, dtype=np.float64), quats)]


def core_pose_to_msg(pose: CorePose) -> Pose:
    return poses_to_msgs(pose.position[None], pose.rotation[None])[0]


def model_info_msg(desc: ModelDescription) -> ModelInfo:
    o = desc.options
    return ModelInfo(checkpoint=desc.checkpoint, model_id=desc.model_id, device=desc.device,
                     dtype=desc.dtype, num_samples=o.num_samples,
                     diffusion_steps=o.diffusion_steps, max_coc_tokens=o.max_coc_tokens,
                     sample_coc=o.sample_coc, seed=-1 if o.seed is None else int(o.seed))


def _float_list(values: Optional[np.ndarray]) -> list[float]:
    return [] if values is None else [float(v) for v in np.asarray(values).ravel()]


def output_stamp_ns(result: PlanResult) -> int:
    """t0 when the tick got that far, else the tick time (a skipped tick has no t0)."""
    return result.t0_ns if result.t0_ns is not None else result.now_ns


def plan_to_msg(result: PlanResult, *, base_frame_id: str, odom_frame_id: str,
                camera_topics: Sequence[str], camera_indices: Sequence[int],
                model: ModelDescription, latency_s: float) -> PlannerOutput:
    """PlanResult -> alpamayo_ros/PlannerOutput, every field filled.

    header.stamp = t0; candidate poses in the t0 base frame (base_frame_id);
    latency_s: publication time - t0 on the node clock [s].
    """
    msg = PlannerOutput()
    msg.header.stamp = ns_to_time(output_stamp_ns(result))
    msg.header.frame_id = base_frame_id
    msg.status = int(result.status)
    msg.status_reason = result.reason
    msg.tick_stamp = ns_to_time(result.now_ns)
    msg.odom_frame_id = odom_frame_id
    if result.t0_pose_odom is not None:
        msg.t0_pose_odom = core_pose_to_msg(result.t0_pose_odom)
    msg.v0 = float(result.v0)  # NaN when the model did not run
    offsets_ns = None
    if result.waypoint_stamps_ns is not None and result.t0_ns is not None:
        offsets_ns = np.asarray(result.waypoint_stamps_ns, dtype=np.int64) - result.t0_ns
    for cand in result.candidates:
        c = TrajectoryCandidate()
        c.poses = poses_to_msgs(cand.xyz, cand.rot)
        if offsets_ns is not None:
            c.time_from_t0 = [ns_to_duration(d) for d in offsets_ns]
        c.yaw = _float_list(cand.yaw)
        c.speed = _float_list(cand.speed)
        c.acceleration = _float_list(cand.acceleration)
        c.curvature = _float_list(cand.curvature)
        c.coc = cand.coc
        c.coc_token_count = int(cand.coc_token_count)
        c.coc_truncated = bool(cand.coc_truncated)
        c.valid = bool(cand.valid)
        c.invalid_reason = cand.invalid_reason
        msg.candidates.append(c)
    msg.selected_index = int(result.selected_index)
    msg.inputs = _manifest(result, camera_topics, camera_indices)
    msg.timing = _timing(result, latency_s)
    msg.model = model_info_msg(model)
    return msg


def _manifest(result: PlanResult, camera_topics: Sequence[str],
              camera_indices: Sequence[int]) -> InputManifest:
    m = InputManifest()
    m.camera_indices = [int(i) for i in camera_indices]
    m.camera_topics = list(camera_topics)
    if result.frame_stamps_ns is not None:
        m.frame_stamps = [ns_to_time(s) for s in result.frame_stamps_ns]
        m.frame_skew = _float_list(result.frame_skews)
        m.max_frame_skew = float(result.max_frame_skew)
    m.camera_skew = float(result.camera_skew)
    if result.history_stamps_ns is not None:
        m.history_start = ns_to_time(result.history_stamps_ns[0])
        m.history_end = ns_to_time(result.history_stamps_ns[-1])
    if result.history_xyz is not None:
        m.history_poses = poses_to_msgs(result.history_xyz, result.history_rot)
    m.odometry_samples = int(result.odometry_samples)
    if result.odometry_newest_ns is not None:
        m.odometry_newest = ns_to_time(result.odometry_newest_ns)
    return m


def _timing(result: PlanResult, latency_s: float) -> PlannerTiming:
    t = result.timings
    return PlannerTiming(preprocess=t.model.preprocess, vision_prefill=t.model.vision_prefill,
                         coc_decode=t.model.coc_decode, diffusion=t.model.diffusion,
                         postprocess=t.model.postprocess, model_total=t.model.total,
                         input_preparation=t.input_preparation, latency=float(latency_s))


def plan_to_paths(result: PlanResult, *, base_frame_id: str, odom_frame_id: str
                  ) -> tuple[Path, Path]:
    """The selected sample as nav_msgs/Path in the t0 base frame and in the odometry frame.

    Both headers carry t0; each PoseStamped carries its waypoint time t0 + 0.1 (i + 1) s.
    Only call for results with status OK.
    """
    if result.status != PlanStatus.OK or result.selected is None:
        raise ValueError(f"paths need an OK plan, have status {result.status.name}")
    cand = result.selected
    stamp = ns_to_time(result.t0_ns)
    paths = []
    for frame, xyz, rot in ((base_frame_id, cand.xyz, cand.rot),
                            (odom_frame_id, cand.xyz_odom, cand.rot_odom)):
        path = Path()
        path.header.stamp = stamp
        path.header.frame_id = frame
        for pose, wp_ns in zip(poses_to_msgs(xyz, rot), result.waypoint_stamps_ns):
            ps = PoseStamped(pose=pose)
            ps.header.stamp = ns_to_time(wp_ns)
            ps.header.frame_id = frame
            path.poses.append(ps)
        paths.append(path)
    return paths[0], paths[1]


def plan_to_coc(result: PlanResult) -> String:
    """The reasoning of the selected sample."""
    cand = result.selected
    return String(data=cand.coc if cand is not None else "")
