"""The route navigation node (issue 16 item 5): a nav_msgs/Path route and odometry in,
NavigationInstructions in the official phrasing out on alpamayo/navigation."""
from __future__ import annotations

import math
import time

import pytest

pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402

from alpamayo_ros.core.route_navigation import RouteNavigator  # noqa: E402
from alpamayo_ros.msg import NavigationInstruction  # noqa: E402
from alpamayo_ros.ros.qos import CONTROL_ODOMETRY_QOS, NAVIGATION_QOS, PLAN_QOS  # noqa: E402

pytestmark = pytest.mark.ros
WAIT_S = 30.0


def _route_points():
    """120 m straight along +x, then a 90 degree left arc of radius 20 m, then 40 m."""
    points = [(0.5 * k, 0.0) for k in range(241)]
    for k in range(1, 64):
        angle = math.pi / 2 * k / 63
        points.append((120.0 + 20.0 * math.sin(angle), 20.0 * (1.0 - math.cos(angle))))
    points += [(140.0, 20.0 + 0.5 * k) for k in range(1, 81)]
    return points


def test_instructions_follow_the_ego_along_the_route(ros_process, ros_node):
    ros_process("route_navigation", params={"rate_hz": 10.0, "announce_distance": 50.0,
                                            "valid_for": 0.5})
    node = ros_node.node
    route_pub = node.create_publisher(Path, "/route", PLAN_QOS)
    odom_pub = node.create_publisher(Odometry, "/odometry", CONTROL_ODOMETRY_QOS)
    sub, inbox = ros_node.subscribe("/alpamayo/navigation", NavigationInstruction,
                                    qos=NAVIGATION_QOS)
    ros_node.wait_for_subscription_match(sub)
    route = Path()
    route.header.frame_id = "odom"
    for x, y in _route_points():
        pose = PoseStamped()
        pose.pose.position.x, pose.pose.position.y = x, y
        route.poses.append(pose)
    turn = RouteNavigator(_route_points()).maneuvers[0].station
    for ego_x, want in ((turn - 70.0, ""), (turn - 30.2, "Turn left in 30m")):
        odom = Odometry()
        odom.header.stamp.sec = int(ego_x)
        odom.pose.pose.position.x = ego_x
        deadline = time.monotonic() + WAIT_S
        while not any(m.text == want and m.header.stamp.sec == int(ego_x)
                      for m in list(inbox.messages)):
            assert time.monotonic() < deadline, (
                f"no {want!r} at {ego_x} m: "
                f"{[(m.text, m.header.stamp.sec) for m in inbox.messages[-5:]]}")
            route_pub.publish(route)  # the node may subscribe after the first ones
            odom_pub.publish(odom)
            time.sleep(0.2)
    last = [m for m in inbox.messages if m.text][-1]
    assert last.source == "route" and last.valid_for.nanosec == 500_000_000
