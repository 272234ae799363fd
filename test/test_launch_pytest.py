"""launch_pytest test of launch/planner.launch.py: `ros2 launch`'s own machinery starts the
planner (dry-run backend) and it appears on the graph with its outputs.

Needs launch, launch_ros and launch_pytest from a ROS 2 install; they are not on PyPI, so
on pip-only machines this module is skipped (test_launch_planner.py covers the same process
started by hand there).
"""
import time
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip("launch_pytest")
pytest.importorskip("launch_ros")
import rclpy  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def dry_run_params(tmp_path):
    """The shipped params file plus the constant-velocity backend (no checkpoint needed)."""
    text = (REPO / "config" / "planner.yaml").read_text()
    text = text.replace('backend: "alpamayo"', 'backend: "constant_velocity"')
    path = tmp_path / "planner_dry_run.yaml"
    path.write_text(text)
    return str(path)


@launch_pytest.fixture
def launch_description(dry_run_params):
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(REPO / "launch" / "planner.launch.py")),
        launch_arguments={"params_file": dry_run_params, "namespace": "launch_test"}.items())
    return LaunchDescription([include, launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=launch_description)
def test_launch_file_starts_the_planner():
    rclpy.init()
    try:
        node = rclpy.create_node("launch_probe")
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            names = node.get_node_names_and_namespaces()
            if ("alpamayo_planner", "/launch_test") in names and \
                    node.count_publishers("/launch_test/alpamayo/plan") >= 1:
                break
            time.sleep(0.2)
        assert ("alpamayo_planner", "/launch_test") in node.get_node_names_and_namespaces()
        assert node.count_publishers("/launch_test/alpamayo/plan") >= 1
        node.destroy_node()
    finally:
        rclpy.shutdown()
