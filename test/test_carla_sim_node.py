"""carla_sim as a real process: the bridge's topics, types and conventions, and its
synchronous mode (waits for a command, the bridge's timeout, PAUSE / PLAY)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import ros_harness

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")
pytest.importorskip("carla_msgs.msg")

from carla_msgs.msg import CarlaControl, CarlaEgoVehicleControl  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from alpamayo_ros.ros.convert import ns_to_time, time_to_ns  # noqa: E402
from alpamayo_ros.ros.qos import BRIDGE_QOS, route_qos  # noqa: E402
from alpamayo_ros.sim.route import Route  # noqa: E402

CONFIG = ros_harness.REPO_ROOT / "config" / "carla_sim.yaml"
PREFIX = "/carla/ego_vehicle"
IDS = ("cross_left_120fov", "front_wide_120fov", "cross_right_120fov", "front_tele_30fov")


def test_bridge_topics_types_and_conventions(ros_process, ros_node):
    proc = ros_process("carla_sim", params_file=CONFIG, node_name="carla_sim",
                       params={"start.min_odometry_subscribers": 1,
                               "start.min_camera_subscribers": 1, "camera_width": 64,
                               "camera_height": 36, "vehicle_control_timeout": 0.0})
    proc.wait_for_output("route default")
    subs = {}
    for cid in IDS:
        subs[cid] = ros_node.subscribe(f"{PREFIX}/{cid}/image", Image, qos=BRIDGE_QOS)
        subs[cid + "/info"] = ros_node.subscribe(f"{PREFIX}/{cid}/camera_info", CameraInfo,
                                                 qos=BRIDGE_QOS)
    odom_sub, odom = ros_node.subscribe(f"{PREFIX}/odometry", Odometry, qos=BRIDGE_QOS)
    _, clock = ros_node.subscribe("/clock", Clock, qos=BRIDGE_QOS)
    first = odom.wait_for(1, 20.0)
    assert first, proc.describe()
    msg = first[0]
    assert msg.header.frame_id == "map" and msg.child_frame_id == "ego_vehicle"
    assert time_to_ns(msg.header.stamp) == 0
    # The actor origin: 1.42 m ahead of the rear axle, which starts on the route at (0, 0).
    assert (msg.pose.pose.position.x, msg.pose.pose.position.y) == pytest.approx((1.42, 0.0))
    images = {cid: subs[cid][1].wait_for(1, 10.0) for cid in IDS}
    for cid, got in images.items():
        assert got, f"no image on {cid}"
        image = got[0]
        assert image.encoding == "bgra8" and (image.width, image.height) == (64, 36)
        assert image.step == 64 * 4 and image.header.frame_id == f"ego_vehicle/{cid}"
        pixels = np.frombuffer(image.data, np.uint8).reshape(36, 64, 4)
        assert np.all(pixels[..., 3] == 255)
        assert pixels[-1, 32, 2] != pixels[0, 32, 2]  # ground differs from sky
        info = subs[cid + "/info"][1].wait_for(1, 10.0)[0]
        fov = 30.0 if "30fov" in cid else 120.0
        assert info.k[0] == pytest.approx(32.0 / math.tan(math.radians(fov) / 2))
    # Synchronous mode with no timeout: nothing moves until a command arrives.
    assert len(odom.messages) == 1
    cmd_pub = ros_node.node.create_publisher(CarlaEgoVehicleControl,
                                             f"{PREFIX}/vehicle_control_cmd", BRIDGE_QOS)
    ros_node.wait_for_publisher_match(cmd_pub, timeout=20.0)
    command = CarlaEgoVehicleControl(throttle=1.0)
    command.header.stamp = ns_to_time(0)
    cmd_pub.publish(command)
    got = odom.wait_for(2, 10.0)
    assert len(got) == 2 and time_to_ns(got[1].header.stamp) == 50_000_000
    assert got[1].twist.twist.linear.x > 0.0  # throttle drives forwards (+x, no y flip)
    assert abs(got[1].pose.pose.position.y) < 1e-9
    assert clock.wait_for(2, 10.0)[-1].clock == got[1].header.stamp
    # The route, latched as carla_waypoint_publisher's: the default route's centre line in
    # map, 1 m apart, from the start to the end.
    route = ros_node.wait_for_message(f"{PREFIX}/waypoints", Path, qos=route_qos())
    xy = np.array([(p.pose.position.x, p.pose.position.y) for p in route.poses])
    default = Route.load()
    assert route.header.frame_id == "map" and len(xy) == int(default.length) + 2
    assert xy[0] == pytest.approx([0.0, 0.0]) and xy[-1] == pytest.approx(default.xy[-1])
    assert np.hypot(*np.diff(xy, axis=0).T)[:-1] == pytest.approx(1.0, abs=0.01)


def test_synchronous_mode_times_out_like_the_bridge_and_honours_pause(ros_process, ros_node):
    proc = ros_process("carla_sim", params_file=CONFIG, node_name="carla_sim",
                       params={"start.min_odometry_subscribers": 1, "camera_width": 32,
                               "camera_height": 18, "vehicle_control_timeout": 0.2})
    proc.wait_for_output("route default")
    _, odom = ros_node.subscribe(f"{PREFIX}/odometry", Odometry, qos=BRIDGE_QOS)
    # Without commands it steps every 0.2 s of wall time, saying why.
    assert len(odom.wait_for(3, 20.0)) >= 3
    proc.wait_for_output(r"Timeout \(0\.2 s\) while waiting for a vehicle control command")
    pause = ros_node.node.create_publisher(CarlaControl, "/carla/control", BRIDGE_QOS)
    ros_node.wait_for_publisher_match(pause, timeout=20.0)
    pause.publish(CarlaControl(command=CarlaControl.PAUSE))
    # Paused: no step for several timeouts' worth of waiting (at most one was under way).
    n = len(odom.wait_for(1, 1.0))
    with pytest.raises(ros_harness.HarnessError):
        ros_node.wait_until(lambda: len(odom.messages) > n + 1, 1.5, "a step while paused")
    pause.publish(CarlaControl(command=CarlaControl.PLAY))
    assert len(odom.wait_for(n + 3, 10.0)) >= n + 3
