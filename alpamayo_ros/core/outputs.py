"""The planner's published outputs, one table for the node and the replay.

Each row of OUTPUTS is one topic the planner node publishes and the replay writes to its
output bag: the topic (a fixed relative name, or the parameter that names it; relative
names resolve in the node's namespace), the message type, the builder that turns a tick's
PlanResult into plain message data (core.plan_message.MsgData), the bool parameter that
enables it (None: always on) and whether late subscribers get the last message (latched).
The node creates one publisher per enabled row and publishes each built message
(ros/convert.py makes rclpy messages of them); the replay writes the same messages with
rosbags (replay/outputs.py). Adding an output is one row here and one builder. Message
types of other packages (Autoware's Trajectory) are checked when their row is enabled: the
node and the replay refuse to start, naming the parameter, when the package is missing.

Builders get an OutputTick and return None when the row publishes nothing for that tick
(path, CoC, markers and the Autoware Trajectory only go out for OK plans; PlannerOutput
goes out every tick).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from alpamayo_ros.core import autoware_trajectory

from alpamayo_ros.core.plan_message import (PATH_TYPE, PLANNER_OUTPUT_TYPE, STRING_TYPE,
                                            MsgData, OutputContext, base_path_data, coc_data,
                                            header_data, odom_path_data, output_stamp_ns,
                                            planner_output_data)
from alpamayo_ros.core.plan_result import PlanResult

MARKER_ARRAY_TYPE = "visualization_msgs/msg/MarkerArray"

PLAN_TOPIC = "alpamayo/plan"
PATH_TOPIC = "alpamayo/path"
PATH_ODOM_TOPIC = "alpamayo/path_odom"
COC_TOPIC = "alpamayo/coc"
MARKERS_TOPIC = "alpamayo/markers"


@dataclass(frozen=True)
class OutputTick:
    """What a builder gets for one tick: the result, the output context and the latencies.

    latency_s: publication - t0 on the node clock (replay: tick time - t0) [s];
    latency_wall_s: wall time from the newest used frame's arrival to publication [s]
    (0 in the replay); marker_text_height: height of the CoC text marker [m];
    values: the validated planner parameters (builders of configurable rows read theirs).
    """

    result: PlanResult
    context: OutputContext
    latency_s: float
    latency_wall_s: float = 0.0
    marker_text_height: float = 0.6
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputRow:
    """One published output: name, topic (the default; topic_parameter names the parameter
    that sets it, if any), message type, builder, the bool parameter that enables it (None:
    always published), and latched (late subscribers get the last message)."""

    name: str
    topic: str
    type: str
    build: Callable[[OutputTick], Optional[MsgData]]
    enabled_by: Optional[str] = None
    topic_parameter: Optional[str] = None
    latched: bool = False

    def enabled(self, values: Mapping[str, Any]) -> bool:
        return self.enabled_by is None or bool(values[self.enabled_by])

    def topic_in(self, values: Mapping[str, Any]) -> str:
        """The topic as configured (unresolved: relative names are in the namespace)."""
        return self.topic if self.topic_parameter is None else values[self.topic_parameter]


# ------------------------------------------------------------------------------ builders
def _plan(tick: OutputTick) -> MsgData:
    return planner_output_data(tick.result, tick.context, latency_s=tick.latency_s,
                               latency_wall_s=tick.latency_wall_s)


def _path(tick: OutputTick) -> Optional[MsgData]:
    return base_path_data(tick.result, tick.context.base_frame_id) if tick.result.ok else None


def _path_odom(tick: OutputTick) -> Optional[MsgData]:
    return odom_path_data(tick.result) if tick.result.ok else None


def _coc(tick: OutputTick) -> Optional[MsgData]:
    return coc_data(tick.result) if tick.result.ok else None


def _markers(tick: OutputTick) -> Optional[MsgData]:
    if not tick.result.ok:
        return None
    return markers_data(tick.result, tick.context.base_frame_id, tick.marker_text_height)


def _autoware_trajectory(tick: OutputTick) -> Optional[MsgData]:
    wheelbase = tick.values.get(autoware_trajectory.WHEELBASE_PARAMETER,
                                autoware_trajectory.DEFAULT_WHEELBASE_M)
    return autoware_trajectory.ok_plan_trajectory(tick.result, float(wheelbase))


OUTPUTS: tuple[OutputRow, ...] = (
    # Latched: a subscriber that joins late (a controller started after the first plan)
    # still gets the newest plan.
    OutputRow("plan", PLAN_TOPIC, PLANNER_OUTPUT_TYPE, _plan, latched=True),
    OutputRow("path", PATH_TOPIC, PATH_TYPE, _path),
    OutputRow("path_odom", PATH_ODOM_TOPIC, PATH_TYPE, _path_odom),
    OutputRow("coc", COC_TOPIC, STRING_TYPE, _coc),
    OutputRow("markers", MARKERS_TOPIC, MARKER_ARRAY_TYPE, _markers, "markers.enabled"),
    OutputRow("autoware_trajectory", autoware_trajectory.DEFAULT_TOPIC,
              autoware_trajectory.TRAJECTORY_TYPE, _autoware_trajectory,
              autoware_trajectory.ENABLED_PARAMETER, autoware_trajectory.TOPIC_PARAMETER),
)


def enabled_outputs(values: Mapping[str, Any]) -> tuple[OutputRow, ...]:
    """The rows of OUTPUTS that the parameter values enable."""
    return tuple(row for row in OUTPUTS if row.enabled(values))


# ------------------------------------------------------------------------------ markers
# PlanResult -> visualization_msgs/MarkerArray for RViz: candidate paths and the CoC text.
# Markers are in the odometry frame (the path_odom poses: each candidate anchored with the
# base pose interpolated at t0), stamped t0 and not frame_locked: a plan is a set of
# places on the ground, so RViz must not move it with the car. (In the t0 base frame and
# frame_locked, RViz draws it with the newest base transform and the path slides ahead by
# speed x plan age.) Each array starts with DELETEALL so candidates of an earlier plan
# with more samples do not linger.
MARKER_NAMESPACE_PATHS = "alpamayo_candidates"
MARKER_NAMESPACE_COC = "alpamayo_coc"
# visualization_msgs/Marker constants (type and action)
LINE_STRIP, TEXT_VIEW_FACING = 4, 9
ADD, DELETEALL = 0, 3
_SELECTED = (0.1, 0.9, 0.2, 1.0)
_OTHER = (0.2, 0.5, 1.0, 0.6)
_INVALID = (1.0, 0.2, 0.1, 0.8)
_TEXT = (1.0, 1.0, 1.0, 1.0)


def _color(rgba: tuple) -> MsgData:
    r, g, b, a = rgba
    return MsgData("std_msgs/msg/ColorRGBA", {"r": r, "g": g, "b": b, "a": a})


def _point(x: float, y: float, z: float) -> MsgData:
    return MsgData("geometry_msgs/msg/Point", {"x": float(x), "y": float(y), "z": float(z)})


def _marker(header: MsgData, ns: str, marker_id: int, marker_type: int, action: int = ADD,
            **fields) -> MsgData:
    """A Marker with the fields every distribution's message has (the bag writer fills
    the ones newer distributions added); identity orientation, no lifetime."""
    base = {"header": header, "ns": ns, "id": marker_id, "type": marker_type,
            "action": action, "frame_locked": False,
            "pose": MsgData("geometry_msgs/msg/Pose", {
                "position": _point(0.0, 0.0, 0.0),
                "orientation": MsgData("geometry_msgs/msg/Quaternion",
                                       {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0})}),
            "scale": MsgData("geometry_msgs/msg/Vector3", {"x": 0.0, "y": 0.0, "z": 0.0}),
            "color": _color((0.0, 0.0, 0.0, 0.0))}
    base.update(fields)
    return MsgData("visualization_msgs/msg/Marker", base)


def markers_data(result: PlanResult, base_frame_id: str, text_height: float = 0.6) -> MsgData:
    """MarkerArray: DELETEALL, a LINE_STRIP per candidate (selected green and wider, invalid
    red) and a CoC text marker 3 m above the t0 pose, in the odometry frame
    (result.odom_frame_id). A result without a t0 pose (nothing to anchor) gets only the
    text, at the origin of base_frame_id. Markers have no lifetime: each stays until the
    next array's DELETEALL replaces it."""
    anchored = result.t0_pose_odom is not None and bool(result.odom_frame_id)
    header = header_data(output_stamp_ns(result),
                         result.odom_frame_id if anchored else base_frame_id)
    markers = [_marker(header, "", 0, 0, DELETEALL)]
    for i, cand in enumerate(result.candidates if anchored else ()):
        selected = i == result.selected_index
        width = 0.3 if selected else 0.12
        markers.append(_marker(
            header, MARKER_NAMESPACE_PATHS, i, LINE_STRIP,
            scale=MsgData("geometry_msgs/msg/Vector3", {"x": width, "y": 0.0, "z": 0.0}),
            color=_color(_INVALID if not cand.valid else (_SELECTED if selected else _OTHER)),
            points=[_point(*p) for p in cand.xyz_odom]))
    selected = result.selected
    text = selected.coc if selected is not None and selected.coc else ""
    if not result.ok:
        text = f"[{result.status.name}] {result.reason}"
    if text:
        x, y, z = (float(v) for v in result.t0_pose_odom.position) if anchored else (0, 0, 0)
        markers.append(_marker(
            header, MARKER_NAMESPACE_COC, 0, TEXT_VIEW_FACING,
            pose=MsgData("geometry_msgs/msg/Pose", {
                "position": _point(x, y, z + 3.0),
                "orientation": MsgData("geometry_msgs/msg/Quaternion",
                                       {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0})}),
            scale=MsgData("geometry_msgs/msg/Vector3",
                          {"x": 0.0, "y": 0.0, "z": float(text_height)}),
            color=_color(_TEXT), text=text))
    return MsgData(MARKER_ARRAY_TYPE, {"markers": markers})
