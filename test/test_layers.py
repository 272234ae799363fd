"""The layer rules of docs/design.md, checked on the imports of every module.

Every folder of the package has one job and a place in ORDER (lowest first); it imports
only the folders ALLOWED lists, all of them below it. Outside packages: core/, control/
and sim/ import neither torch nor rclpy (nor ROS message packages); core/ no rosbags;
model/ never imports rclpy; bag/ and replay/ no rclpy; tools/ never imports rclpy or ros/;
ros/ and testbed/ never import torch themselves (models come through model.backends).
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
    "ros": ("torch", "transformers"),
    "control": ("torch", "transformers", "rclpy", "rosbags", *ROS_MESSAGE_PACKAGES),
    "sim": ("torch", "transformers", "rclpy", "rosbags", *ROS_MESSAGE_PACKAGES),
    "bag": ("torch", "transformers", "rclpy", *ROS_MESSAGE_PACKAGES),
    "replay": ("torch", "transformers", "rclpy", *ROS_MESSAGE_PACKAGES),
    "testbed": ("torch", "transformers"),
}

# The folders, lowest first, and the folders of the package each may import ("msg", "srv":
# the generated alpamayo_ros.msg and alpamayo_ros.srv). A new folder gets a row in both.
ORDER = ("msg", "srv", "core", "control", "bag", "model", "sim", "replay", "ros", "testbed", "tools")
ALLOWED = {
    "core": (),
    "control": ("core",),
    "bag": ("core",),
    "model": ("core",),
    "sim": ("core", "control", "bag"),
    "replay": ("core", "bag", "model"),
    "ros": ("msg", "srv", "core", "control", "model", "sim"),
    "testbed": ("msg", "srv", "core", "control", "bag", "sim", "ros"),
    "tools": ("core", "control", "bag", "model", "sim", "replay", "testbed"),
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


def _package_imports(layer: str) -> list[str]:
    """Imports of other folders of the package that ALLOWED does not list for `layer`."""
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in sorted(_imports(path)):
            parts = name.split(".")
            if parts[0] == "alpamayo_ros" and len(parts) > 1 and parts[1] != layer \
                    and parts[1] not in ALLOWED[layer]:
                found.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return found


def test_every_folder_has_a_place_and_imports_only_folders_below_it():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders - {"msg", "srv"} == set(ALLOWED) == set(ORDER) - {"msg", "srv"}
    assert folders <= set(FORBIDDEN) | {"msg", "srv"}
    for layer, allowed in ALLOWED.items():
        assert all(ORDER.index(a) < ORDER.index(layer) for a in allowed), layer


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_folders_import_only_the_folders_they_may(layer):
    assert _package_imports(layer) == []


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


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "alpamayo_ros" / "sim"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from alpamayo_ros.tools import make_bag\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "alpamayo_ros")
    assert _package_imports("sim") == ["alpamayo_ros/sim/bad.py imports alpamayo_ros.tools",
                                       "alpamayo_ros/sim/bad.py imports "
                                       "alpamayo_ros.tools.make_bag"]
