"""launch_pytest test of launch/planner.launch.py: `ros2 launch`'s own machinery starts the
planner (dry-run backend, `backend:=constant_velocity device:=cpu`) next to the synthetic
sensors, on a ROS domain of its own, and an OK plan arrives.

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


@launch_pytest.fixture
def launch_description(domain):
    planner = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(REPO / "launch" / "planner.launch.py")),
        launch_arguments={"namespace": NAMESPACE, "backend": "constant_velocity",
                          "device": "cpu", "use_sim_time": "true", "rate_hz": "5"}.items())
    sensors = Node(package="alpamayo_ros", executable="synthetic_sensors",
                   namespace=NAMESPACE, parameters=[{"publish_clock": True,
                                                     "width": 64, "height": 48}])
    return LaunchDescription([
        SetEnvironmentVariable("ROS_DOMAIN_ID", str(domain)),
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        planner, sensors, launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=launch_description)
def test_launch_file_starts_a_planner_that_plans(domain):
    from alpamayo_ros.msg import PlannerOutput
    from alpamayo_ros.ros.qos import PLAN_QOS

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        node = rclpy.create_node("launch_probe", context=context)
        ok = []
        node.create_subscription(PlannerOutput, f"/{NAMESPACE}/alpamayo/plan",
                                 lambda m: ok.append(m) if m.status == m.STATUS_OK else None,
                                 PLAN_QOS)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 60.0
        while not ok and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert ok, "no OK plan from the launched planner within 60 s"
        assert ok[0].model.dtype == "float64"  # the constant-velocity backend
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
