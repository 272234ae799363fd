"""PlanResult -> visualization_msgs/MarkerArray for RViz (core.outputs.markers_data, which
explains the frames and colours, as an rclpy message)."""
from __future__ import annotations

from visualization_msgs.msg import MarkerArray

from alpamayo_ros.core.outputs import markers_data
from alpamayo_ros.core.plan_result import PlanResult
from alpamayo_ros.ros.convert import to_ros_message


def plan_to_markers(result: PlanResult, base_frame_id: str,
                    text_height: float = 0.6) -> MarkerArray:
    """The candidates and the CoC text of a tick as a MarkerArray (core.outputs)."""
    return to_ros_message(markers_data(result, base_frame_id, text_height))
