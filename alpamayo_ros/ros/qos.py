"""QoS profiles of the planner's topics (one place, so nodes and tests agree).

Sensors: SensorDataQoS (best effort, keep last 5), the ROS convention for camera and
odometry drivers; a reliable subscriber would not match a best-effort driver.
Outputs: reliable, keep last, volatile, so controllers and recorders receive every plan.
"""
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

SENSOR_QOS: QoSProfile = qos_profile_sensor_data

PLAN_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)

DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)

# /clock published by tests or the bag player: keep last 1, reliable (as rosbag2 does).
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                       reliability=ReliabilityPolicy.RELIABLE)
