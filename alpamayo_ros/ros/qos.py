"""QoS profiles of the planner's topics (one place, so nodes and tests agree).

Sensors: SensorDataQoS (best effort, keep last 5), the ROS convention for camera and
odometry drivers; a reliable subscriber would not match a best-effort driver.
Outputs: reliable, keep last, volatile, so controllers and recorders receive every plan.
"""
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

SENSOR_QOS: QoSProfile = qos_profile_sensor_data


def _sensor_subscription(depth: int) -> QoSProfile:
    """Best effort (matches any sensor driver) with a deeper reader queue."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


# The planner's subscriptions queue more than the 5 samples of SensorDataQoS: a Python
# executor can stall (GIL, garbage collection, a busy core), and keep-last 5 then
# overwrites odometry (seen in test_launch_planner.py as 0.3 s history gaps at 50 Hz).
# 100 samples are 1-2 s of odometry; 10 frames are 0.17-1 s of a 10-60 Hz camera (frames
# are kept undecoded).
ODOMETRY_SUBSCRIPTION_QOS: QoSProfile = _sensor_subscription(100)
CAMERA_SUBSCRIPTION_QOS: QoSProfile = _sensor_subscription(10)


def reliable(profile: QoSProfile) -> QoSProfile:
    """The profile with reliable delivery (the planner's inputs.reliable: only for
    publishers that publish reliably, as carla_sim and carla-ros-bridge do)."""
    return QoSProfile(history=profile.history, depth=profile.depth,
                      reliability=ReliabilityPolicy.RELIABLE, durability=profile.durability)

# Navigation instructions: few and important, so reliable with a small queue (volatile:
# a publisher of any durability connects).
NAVIGATION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.VOLATILE)

PLAN_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)

DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)

# What the planner (and the route oracle) publish plans with, what the controller subscribes
# with, and what the nodes publish /diagnostics with: transient local ("latched"), so a
# subscriber that discovers the publisher only after the first messages (a loaded machine)
# still gets the last 10 on matching; in lockstep a plan lost that way would hold the
# simulator until lockstep.timeout, and the recorder would miss the first statuses.
# Volatile subscribers (PLAN_QOS, DIAGNOSTICS_QOS, diagnostic_aggregator) match these
# publishers too and get only new messages.
LATCHED_PLAN_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)
LATCHED_DIAGNOSTICS_QOS = LATCHED_PLAN_QOS

# carla-ros-bridge's publishers and subscriptions (a plain depth-10 profile: reliable).
BRIDGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                        reliability=ReliabilityPolicy.RELIABLE)
# The closed-loop controller's odometry: reliable like the bridge's publisher, queued deeper
# so that a short executor stall loses no sample (each one gets its command in lockstep).
CONTROL_ODOMETRY_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                  reliability=ReliabilityPolicy.RELIABLE)

# A route (nav_msgs/Path) published once and kept for late subscribers, as
# carla_waypoint_publisher's; route_qos(False) for volatile publishers (Autoware's paths).
def route_qos(transient_local: bool = True) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=(DurabilityPolicy.TRANSIENT_LOCAL if transient_local
                                  else DurabilityPolicy.VOLATILE))


# /clock published by tests or the bag player: keep last 1, reliable (as rosbag2 does).
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                       reliability=ReliabilityPolicy.RELIABLE)
