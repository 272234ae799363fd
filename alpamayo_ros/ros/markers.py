"""PlanResult -> visualization_msgs/MarkerArray for RViz: candidate paths and the CoC text.

Markers are in the t0 base frame, stamped t0 and frame_locked (RViz re-transforms them
with the frame's current TF, so they stay attached to the base frame instead of freezing
at the pose of the moment they arrived). Each array starts with DELETEALL so candidates of
an earlier plan with more samples do not linger.
"""
from __future__ import annotations

from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from alpamayo_ros.core.plan_result import PlanResult
from alpamayo_ros.ros.convert import ns_to_time, output_stamp_ns

NAMESPACE_PATHS = "alpamayo_candidates"
NAMESPACE_COC = "alpamayo_coc"
_SELECTED = ColorRGBA(r=0.1, g=0.9, b=0.2, a=1.0)
_OTHER = ColorRGBA(r=0.2, g=0.5, b=1.0, a=0.6)
_INVALID = ColorRGBA(r=1.0, g=0.2, b=0.1, a=0.8)
_TEXT = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)


def plan_to_markers(result: PlanResult, base_frame_id: str,
                    text_height: float = 0.6) -> MarkerArray:
    """LINE_STRIP per candidate (selected green and wider, invalid red) + a CoC text marker.

    Markers have no lifetime: each stays until the next array's DELETEALL replaces it.
    """
    stamp = ns_to_time(output_stamp_ns(result))
    clear = Marker(action=Marker.DELETEALL)
    clear.header.frame_id = base_frame_id
    clear.header.stamp = stamp
    array = MarkerArray(markers=[clear])
    for i, cand in enumerate(result.candidates):
        selected = i == result.selected_index
        m = _marker(base_frame_id, stamp, NAMESPACE_PATHS, i, Marker.LINE_STRIP)
        m.scale.x = 0.3 if selected else 0.12
        m.color = _INVALID if not cand.valid else (_SELECTED if selected else _OTHER)
        m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in cand.xyz]
        array.markers.append(m)
    selected = result.selected
    text = selected.coc if selected is not None and selected.coc else ""
    if not result.ok:
        text = f"[{result.status.name}] {result.reason}"
    if text:
        m = _marker(base_frame_id, stamp, NAMESPACE_COC, 0, Marker.TEXT_VIEW_FACING)
        m.pose.position.z = 3.0
        m.scale.z = float(text_height)
        m.color = _TEXT
        m.text = text
        array.markers.append(m)
    return array


def _marker(frame_id, stamp, ns, marker_id, marker_type) -> Marker:
    m = Marker(ns=ns, id=marker_id, type=marker_type, action=Marker.ADD, frame_locked=True)
    m.header.frame_id = frame_id
    m.header.stamp = stamp
    m.pose.orientation.w = 1.0
    return m
