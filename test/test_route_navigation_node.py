"""route_navigation as a real process: instructions on alpamayo/navigation from a
nav_msgs/Path or an Autoware Path and the odometry (text, stamp, frame, validity, source;
when they appear and expire), scripted instructions of a route file, a frame mismatch."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

import ros_harness

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402

from alpamayo_ros.core.types import NS_PER_S  # noqa: E402
from alpamayo_ros.msg import NavigationInstruction  # noqa: E402
from alpamayo_ros.ros.convert import ns_to_time, time_to_ns  # noqa: E402
from alpamayo_ros.ros.qos import NAVIGATION_QOS, route_qos  # noqa: E402

CONFIG = ros_harness.REPO_ROOT / "config" / "route_navigation.yaml"
ROUTE, ODOM, NAV = "/test/route", "/test/odom", "/test/navigation"


def left_turn_route(straight=100.0, radius=20.0, spacing=1.0):
    """Straight along x, then a 90 deg left arc: points and the arc's start station."""
    s = np.arange(0.0, straight, spacing)
    points = [np.stack([s, np.zeros_like(s)], axis=1)]
    angle = np.arange(0.0, math.pi / 2 + 1e-9, spacing / radius)
    points.append(np.stack([straight + radius * np.sin(angle),
                            radius * (1 - np.cos(angle))], axis=1))
    return np.concatenate(points), straight


def odometry(stamp_ns: int, x: float, y: float, frame: str = "map") -> Odometry:
    msg = Odometry()
    msg.header.stamp, msg.header.frame_id = ns_to_time(stamp_ns), frame
    msg.child_frame_id = "base_link"
    msg.pose.pose.position.x, msg.pose.pose.position.y = float(x), float(y)
    msg.pose.pose.orientation.w = 1.0
    return msg


def start(ros_process, **params):
    base = {"route_topic": ROUTE, "odometry_topic": ODOM, "navigation_topic": NAV}
    base.update(params)
    proc = ros_process("route_navigation", params_file=CONFIG,
                       node_name="alpamayo_route_navigation", params=base)
    proc.wait_for_output("route navigation: route")
    return proc


def drive(ros_node, stations, frame="map"):
    """Odometry on the x axis at the given stations, 0.1 s apart; the instructions back."""
    sub, inbox = ros_node.subscribe(NAV, NavigationInstruction, qos=QoSProfile(
        depth=1000, reliability=NAVIGATION_QOS.reliability))
    pub = ros_node.node.create_publisher(Odometry, ODOM, 100)
    ros_node.wait_for_publisher_match(pub)
    ros_node.wait_for_subscription_match(sub)
    # Hand-shake: odometry (stamps before the drive's) until the node answers, so both
    # ends of the odometry topic have matched before the drive starts.
    for k in range(1, 10):
        pub.publish(odometry(k * NS_PER_S // 10, stations[0], 0.0, frame))
        if inbox.wait_for(1, 1.0):
            break
    with inbox.cond:
        inbox.messages.clear()
    stamps = []
    for k, s in enumerate(stations):
        stamps.append(NS_PER_S + k * NS_PER_S // 10)
        pub.publish(odometry(stamps[-1], s, 0.0, frame))
        time.sleep(0.02)  # the node's publisher keeps the last 10 (as a planner reads them)
    got = inbox.wait_until(lambda m: m and time_to_ns(m[-1].header.stamp) == stamps[-1], 30.0,
                           "the instruction of the last odometry")
    return {time_to_ns(m.header.stamp): m for m in got}, stamps


def publish_route(ros_node, points, msg_type=Path, transient=True, frame="map"):
    pub = ros_node.node.create_publisher(msg_type, ROUTE, route_qos(transient))
    ros_node.wait_for_publisher_match(pub)
    msg = msg_type()
    msg.header.frame_id = frame
    for x, y in points:
        if msg_type is Path:
            item = PoseStamped()
            item.header.frame_id = frame
            msg.poses.append(item)
        else:
            from autoware_planning_msgs.msg import PathPoint
            item = PathPoint()
            msg.points.append(item)
        item.pose.position.x, item.pose.position.y = float(x), float(y)
    pub.publish(msg)
    return pub


def test_instructions_from_a_path_appear_and_expire_at_the_right_distances(ros_process,
                                                                            ros_node):
    proc = start(ros_process, announce_distance=40.0, valid_for=0.5)
    points, turn_at = left_turn_route()
    publish_route(ros_node, points)
    proc.wait_for_output(r"route of \d+\.\d m in 'map': TURN_LEFT at")
    stations = np.arange(40.0, 110.0, 1.0)
    by_stamp, stamps = drive(ros_node, stations)
    texts = {s: by_stamp[t].text for s, t in zip(stations, stamps) if t in by_stamp}
    assert len(texts) == len(stations)  # one per odometry at 10 Hz of odometry time
    shown = sorted(s for s, text in texts.items() if text)
    # The turn starts at 100 m (+- a metre): announced from 60 m, gone at the turn.
    assert shown[0] == pytest.approx(turn_at - 40.0, abs=1.0)
    assert shown[-1] == pytest.approx(turn_at - 1.0, abs=1.0)
    assert shown == list(np.arange(shown[0], shown[-1] + 1.0, 1.0))
    assert texts[70.0] == "Turn left in 30m" and texts[89.0] == "Turn left in 11m"
    assert all(texts[s] == "" for s in texts if s > turn_at + 1.0 or s < turn_at - 41.0)
    m = by_stamp[stamps[30]]
    assert m.header.frame_id == "map" and m.source == "route"
    assert m.valid_for.sec == 0 and m.valid_for.nanosec == 500_000_000
    assert "instruction 'Turn left in 40m'" in proc.output()


def test_an_autoware_path_and_a_frame_mismatch(ros_process, ros_node):
    pytest.importorskip("autoware_planning_msgs.msg")
    from autoware_planning_msgs.msg import Path as AutowarePath

    proc = start(ros_process, route_type="autoware_planning_msgs/msg/Path",
                 route_transient_local=False)
    points, turn_at = left_turn_route(straight=30.0, radius=10.0)
    points[:, 1] *= -1.0  # a right turn
    publish_route(ros_node, points, AutowarePath, transient=False)
    proc.wait_for_output(r"TURN_RIGHT at")
    by_stamp, stamps = drive(ros_node, [10.0, 15.0])
    assert [by_stamp[t].text for t in stamps] == ["Turn right in 20m", "Turn right in 15m"]
    # Odometry in another frame than the route: no instruction, a warning.
    by_stamp, stamps = drive(ros_node, [16.0, 17.0], frame="odom")
    assert [by_stamp[t].text for t in stamps] == ["", ""]
    proc.wait_for_output("route in 'map' but odometry in 'odom': no instruction")


def test_scripted_instructions_of_a_route_file(ros_process, ros_node, tmp_path):
    route_file = tmp_path / "route.json"
    route_file.write_text(json.dumps({
        "segments": [{"type": "straight", "length": 200.0, "speed_limit": 10.0}],
        "instructions": [{"s": 20.0, "text": "Turn right in 40m"},
                         {"s": 30.0, "text": ""}]}))
    proc = start(ros_process, instructions_file=str(route_file))
    assert "2 scripted instructions" in proc.output()
    publish_route(ros_node, [(0.0, 0.0), (200.0, 0.0)])
    proc.wait_for_output("route of 200.0 m")
    stations = [10.0, 19.0, 20.5, 29.0, 30.5, 40.0]
    by_stamp, stamps = drive(ros_node, stations)
    assert [by_stamp[t].text for t in stamps] == ["", "", "Turn right in 40m",
                                                   "Turn right in 40m", "", ""]


def test_a_bad_instructions_file_stops_the_node_in_one_line(ros_process, tmp_path):
    route_file = tmp_path / "route.json"
    route_file.write_text(json.dumps({"instructions": [{"s": 5.0, "text": "a <|b"}]}))
    proc = ros_process("route_navigation", params_file=CONFIG,
                       node_name="alpamayo_route_navigation",
                       params={"instructions_file": str(route_file)})
    assert proc.wait_exit(30.0) == 2
    errors = [line for line in proc.output().splitlines() if "instructions[0].text" in line]
    assert len(errors) == 1 and "special-token" in errors[0]
