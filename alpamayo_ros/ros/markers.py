"""PlanResult -> visualization_msgs/MarkerArray for RViz: candidate paths and the CoC text.

Markers are in the odometry frame (the path_odom poses: each candidate anchored with the
base pose interpolated at t0), stamped t0 and not frame_locked: a plan is a set of places
on the ground, so RViz must not move it with the car. (In the t0 base frame and
frame_locked, RViz draws it with the newest base transform and the path slides ahead by
speed x plan age.) Each array starts with DELETEALL so candidates of an earlier plan with
more samples do not linger.
"""
from __future__ import annotations

from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from alpamayo_ros.core.plan_message import output_stamp_ns
from alpamayo_ros.core.plan_result import PlanResult
from alpamayo_ros.ros.convert import ns_to_time

NAMESPACE_PATHS = "alpamayo_candidates"
NAMESPACE_COC = "alpamayo_coc"
_SELECTED = ColorRGBA(r=0.1, g=0.9, b=0.2, a=1.0)
_OTHER = ColorRGBA(r=0.2, g=0.5, b=1.0, a=0.6)
_INVALID = ColorRGBA(r=1.0, g=0.2, b=0.1, a=0.8)
_TEXT = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)


def plan_to_markers(result: PlanResult, base_frame_id: str,
                    text_height: float = 0.6) -> MarkerArray:
    """LINE_STRIP per candidate (selected green and wider, invalid red) + a CoC text marker
    3 m above the t0 pose, in the odometry frame (result.odom_frame_id). A result without
    a t0 pose (nothing to anchor) gets only the text, at the origin of base_frame_id.

    Markers have no lifetime: each stays until the next array's DELETEALL replaces it.
    """
    stamp = ns_to_time(output_stamp_ns(result))
    anchored = result.t0_pose_odom is not None and bool(result.odom_frame_id)
    frame_id = result.odom_frame_id if anchored else base_frame_id
    clear = Marker(action=Marker.DELETEALL)
    clear.header.frame_id = frame_id
    clear.header.stamp = stamp
    array = MarkerArray(markers=[clear])
    for i, cand in enumerate(result.candidates if anchored else ()):
        selected = i == result.selected_index
        m = _marker(frame_id, stamp, NAMESPACE_PATHS, i, Marker.LINE_STRIP)
        m.scale.x = 0.3 if selected else 0.12
        m.color = _INVALID if not cand.valid else (_SELECTED if selected else _OTHER)
        m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
                    for p in cand.xyz_odom]
        array.markers.append(m)
    selected = result.selected
    text = selected.coc if selected is not None and selected.coc else ""
    if not result.ok:
        text = f"[{result.status.name}] {result.reason}"
    if text:
        m = _marker(frame_id, stamp, NAMESPACE_COC, 0, Marker.TEXT_VIEW_FACING)
        if anchored:
            x, y, z = (float(v) for v in result.t0_pose_odom.position)
            m.pose.position.x, m.pose.position.y, m.pose.position.z = x, y, z + 3.0
        else:
            m.pose.position.z = 3.0
        m.scale.z = float(text_height)
        m.color = _TEXT
        m.text = text
        array.markers.append(m)
    return array


def _marker(frame_id, stamp, ns, marker_id, marker_type) -> Marker:
    m = Marker(ns=ns, id=marker_id, type=marker_type, action=Marker.ADD, frame_locked=False)
    m.header.frame_id = frame_id
    m.header.stamp = stamp
    m.pose.orientation.w = 1.0
    return m
