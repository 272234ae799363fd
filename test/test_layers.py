"""The layer rules of docs/design.md, checked on the imports of every module.

core/ imports neither torch nor rclpy (nor ROS message packages, rosbags or the other
layers); model/ never imports rclpy; tools/ never imports rclpy or ros/; sim/ imports
neither torch nor rclpy, ROS messages, ros/ or model/; ros/ never imports torch itself (it
gets models through model.backends).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "alpamayo_ros"
ROS_MESSAGE_PACKAGES = ("builtin_interfaces", "std_msgs", "geometry_msgs", "nav_msgs",
                        "sensor_msgs", "visualization_msgs", "diagnostic_msgs",
                        "rosgraph_msgs", "rcl_interfaces", "carla_msgs", "ackermann_msgs",
                        "autoware_planning_msgs")
FORBIDDEN = {
    "core": ("torch", "transformers", "rclpy", "rosbags", "alpamayo_ros.msg",
             "alpamayo_ros.ros", "alpamayo_ros.model", "alpamayo_ros.tools",
             *ROS_MESSAGE_PACKAGES),
    "model": ("rclpy", "alpamayo_ros.ros", "alpamayo_ros.tools", "alpamayo_ros.msg",
              *ROS_MESSAGE_PACKAGES),
    "tools": ("rclpy", "alpamayo_ros.ros", "alpamayo_ros.msg", *ROS_MESSAGE_PACKAGES),
    # The closed loop's world, oracle, report and scores: numpy/scipy (bags via tools).
    "sim": ("torch", "transformers", "rclpy", "alpamayo_ros.ros", "alpamayo_ros.model",
            "alpamayo_ros.msg", *ROS_MESSAGE_PACKAGES),
    "ros": ("torch", "transformers"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _violations(layer: str) -> list[str]:
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in sorted(_imports(path)):
            for banned in FORBIDDEN[layer]:
                if name == banned or name.startswith(banned + "."):
                    found.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_follow_the_rules(layer):
    assert (PACKAGE / layer).is_dir()
    assert _violations(layer) == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    fake = tmp_path / "alpamayo_ros" / "tools"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from alpamayo_ros.ros.qos import PLAN_QOS\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "alpamayo_ros")
    assert _violations("tools") == ["alpamayo_ros/tools/bad.py imports alpamayo_ros.ros.qos",
                                    "alpamayo_ros/tools/bad.py imports "
                                    "alpamayo_ros.ros.qos.PLAN_QOS"]
