"""HealthReport -> diagnostic_msgs/DiagnosticArray (conversion only; the logic is in
alpamayo_ros.core.planner_health)."""
from __future__ import annotations

from typing import Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from alpamayo_ros.core.planner_health import HealthReport
from alpamayo_ros.ros.convert import ns_to_time


def to_diagnostic_array(reports: Sequence[HealthReport], stamp_ns: int, hardware_id: str,
                        prefix: str) -> DiagnosticArray:
    """One DiagnosticStatus per report, named "<prefix>: <report name>", stamped stamp_ns."""
    array = DiagnosticArray()
    array.header.stamp = ns_to_time(stamp_ns)
    for report in reports:
        status = DiagnosticStatus(
            # DiagnosticStatus.level is a byte field: rclpy wants bytes, not an int.
            level=bytes([int(report.level)]),
            name=f"{prefix}: {report.name}", message=report.message,
            hardware_id=hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in report.values.items()])
        array.status.append(status)
    return array
