"""launch_pytest test of launch/planner.launch.py: `ros2 launch`'s own machinery starts the
planner (dry-run backend, `backend:=constant_velocity device:=cpu`) next to the synthetic
sensors, on a ROS domain of its own, and an OK plan arrives; with `preset:=autoware` and
sensors on Autoware's topics, an autoware_planning_msgs/Trajectory in map arrives.

Needs launch, launch_ros and launch_pytest from a ROS 2 install (`colcon test` on a ROS
install runs it); they are not on PyPI, so on pip-only machines this module is skipped.
test_launch_planner.py covers the same behaviour there: the launch file's rules
(alpamayo_ros.ros.launch_support) and the processes it starts, started by hand.
"""
import os
import time
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip("launch_pytest")
pytest.importorskip("launch_ros")
import rclpy  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription, SetEnvironmentVariable  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_ros.actions import Node  # noqa: E402

import ros_harness  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "launch_test"


@pytest.fixture(scope="module")
def domain():
    """A ROS domain of this module's own (launch sets it in this process's environment for
    the launched nodes; the previous value comes back afterwards)."""
    previous = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID",
                                               "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    with ros_harness.DomainIdLease() as lease:
        yield lease.domain_id
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _planner_and_sensors(domain, planner_arguments: dict, sensor_parameters: dict):
    """planner.launch.py (dry-run backend, sim time) and the synthetic sensors, in the
    module's domain and namespace."""
    planner = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(REPO / "launch" / "planner.launch.py")),
        launch_arguments={"namespace": NAMESPACE, "backend": "constant_velocity",
                          "device": "cpu", "use_sim_time": "true", "rate_hz": "5",
                          **planner_arguments}.items())
    sensors = Node(package="alpamayo_ros", executable="synthetic_sensors",
                   namespace=NAMESPACE, parameters=[{"publish_clock": True, "width": 64,
                                                     "height": 48, **sensor_parameters}])
    return LaunchDescription([
        SetEnvironmentVariable("ROS_DOMAIN_ID", str(domain)),
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        planner, sensors, launch_pytest.actions.ReadyToTest()])


def _first_message(domain, msg_type, topic: str, accept=lambda m: True,
                   timeout_s: float = 60.0):
    """The first accepted message on topic within timeout_s (None if none came)."""
    from alpamayo_ros.ros.qos import PLAN_QOS

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        node = rclpy.create_node("launch_probe", context=context)
        received = []
        node.create_subscription(msg_type, topic,
                                 lambda m: received.append(m) if accept(m) else None,
                                 PLAN_QOS)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + timeout_s
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        node.destroy_node()
        return received[0] if received else None
    finally:
        rclpy.shutdown(context=context)


@launch_pytest.fixture
def launch_description(domain):
    return _planner_and_sensors(domain, {}, {})


@pytest.mark.launch(fixture=launch_description)
def test_launch_file_starts_a_planner_that_plans(domain):
    from alpamayo_ros.msg import PlannerOutput

    plan = _first_message(domain, PlannerOutput, f"/{NAMESPACE}/alpamayo/plan",
                          lambda m: m.status == m.STATUS_OK)
    assert plan is not None, "no OK plan from the launched planner within 60 s"
    assert plan.model.dtype == "float64"  # the constant-velocity backend


# Autoware's topics as config/autoware.yaml names them (camera index order 0, 1, 2, 6).
AUTOWARE_CAMERA_TOPICS = [f"/sensing/camera/camera{n}/image_raw/compressed" for n in (3, 1, 4, 2)]


@launch_pytest.fixture
def autoware_launch_description(domain):
    """`preset:=autoware` next to sensors on Autoware's topics: JPEG cameras, 50 Hz
    /localization/kinematic_state of base_link in map."""
    return _planner_and_sensors(domain, {"preset": "autoware"}, {
        "camera_topics": AUTOWARE_CAMERA_TOPICS, "camera_encodings": ["jpeg"] * 4,
        "odometry_topic": "/localization/kinematic_state", "odom_frame_id": "map"})


@pytest.mark.launch(fixture=autoware_launch_description)
def test_autoware_preset_publishes_the_plan_as_an_autoware_trajectory(domain):
    from autoware_planning_msgs.msg import Trajectory

    traj = _first_message(domain, Trajectory, "/alpamayo/predicted_trajectory")
    assert traj is not None, "no Trajectory from the launched planner within 60 s"
    assert traj.header.frame_id == "map" and len(traj.points) == 64
    first = traj.points[0].time_from_start
    assert (first.sec, first.nanosec) == (0, 100_000_000)
