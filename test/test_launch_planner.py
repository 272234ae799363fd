"""launch/planner.launch.py: its defaults agree with the parameter schema, and what it starts
(planner_node + params file + namespace + remaps) works, run here without `ros2 launch`."""
from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

import ros_harness
from alpamayo_ros.core import planner_params as P
from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.ros import launch_support as L

LAUNCH_FILE = ros_harness.REPO_ROOT / "launch" / "planner.launch.py"


def _load_launch_module():
    spec = importlib.util.spec_from_file_location("planner_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # launch/launch_ros are imported lazily inside
    return module


def test_launch_file_names_the_planner():
    launch = _load_launch_module()
    assert launch.EXECUTABLE == "planner_node" and launch.NODE_NAME == P.NODE_NAME
    assert (ros_harness.REPO_ROOT / "config" / "planner.yaml").is_file()


def test_empty_arguments_pass_nothing_and_set_ones_are_typed():
    """Only what the user set reaches the node: an empty use_sim_time must not override
    the params file or a parent launch file's SetParameter."""
    defaults = {a.name: a.default for a in L.LAUNCH_ARGUMENTS}
    assert L.parameter_overrides(defaults) == {}
    given = dict(defaults, use_sim_time="true", rate_hz="2", backend="constant_velocity",
                 device="cpu", autostart="false", checkpoint_dir="/models/ar1")
    assert L.parameter_overrides(given) == {
        "use_sim_time": True, "rate_hz": 2.0, "model.backend": "constant_velocity",
        "model.device": "cpu", "autostart": False, "model.checkpoint_dir": "/models/ar1"}


@pytest.mark.parametrize("name, value, pattern", [
    ("use_sim_time", "ture", r"launch argument use_sim_time: have 'ture', need 'true', "
                             r"'false' or empty"),
    ("backend", "onnx", r"launch argument backend: have 'onnx'"),
    ("rate_hz", "fast", r"launch argument rate_hz: have 'fast', need a number"),
    ("rate_hz", "500", r"launch argument rate_hz: have 500.0, need <= 50.0"),
    ("log_level", "loud", r"launch argument log_level: have 'loud'"),
])
def test_bad_arguments_stop_the_launch_with_the_reason(name, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        L.parameter_overrides({name: value})


def test_topic_arguments_remap_the_topic_the_params_file_configures(tmp_path):
    """A params file that renames camera_topics does not turn camera_<k>_topic into a
    silent no-op: the remap starts at the configured name."""
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text("alpamayo_planner:\n  ros__parameters:\n    camera_topics: "
                       "['a/cam0', 'a/cam1', 'a/cam2', 'a/cam6']\n    odometry_topic: "
                       "'loc/odom'\n")
    args = {"camera_1_topic": "/sensing/front/image", "odometry_topic": "/localization/kin"}
    assert L.topic_remaps(renamed, args) == [("a/cam1", "/sensing/front/image"),
                                             ("loc/odom", "/localization/kin")]
    assert L.topic_remaps(None, args)[0] == (P.PARAMETERS_BY_NAME["camera_topics"].default[1],
                                            "/sensing/front/image")
    assert L.remap_pair(renamed, {}, "camera_2_topic") == ("a/cam2", "a/cam2")  # no-op
    with pytest.raises(ConfigError, match="cannot read parameter file"):
        L.topic_remaps(tmp_path / "missing.yaml", args)


def test_launch_description_builds_with_launch_ros():
    pytest.importorskip("launch_ros")
    launch = _load_launch_module()
    description = launch.generate_launch_description()
    declared = {a.name for a in description.get_launch_arguments()}
    assert declared == {a.name for a in L.LAUNCH_ARGUMENTS}


@pytest.mark.ros
def test_what_the_launch_file_starts_plans_under_namespace_and_remaps(ros_process, ros_node,
                                                                    tmp_path):
    """What `ros2 launch alpamayo_ros planner.launch.py params_file:=... namespace:=ego
    backend:=constant_velocity camera_<k>_topic:=... odometry_topic:=...` starts, with the
    launch file's own rules (launch_support): the params file renames the camera topics and
    sets use_sim_time true; use_sim_time is not given at launch, so the file's value holds;
    every topic argument wins over the renamed topics."""
    pytest.importorskip("rclpy")
    from alpamayo_ros.msg import PlannerOutput
    from alpamayo_ros.ros.qos import PLAN_QOS
    from alpamayo_ros.testbed.scenario_publisher import ScenarioPublisher
    from alpamayo_ros.sim import scenario as sc

    launch = _load_launch_module()
    params_file = tmp_path / "renamed.yaml"
    params_file.write_text((ros_harness.REPO_ROOT / "config" / "planner.yaml").read_text()
                           .replace("cameras/", "renamed/")
                           .replace("  ros__parameters:\n", "  ros__parameters:\n"
                                    "    use_sim_time: true\n", 1))
    targets = {f"camera_{k}_topic": f"/sensing/cam{k}/image" for k in range(4)}
    targets["odometry_topic"] = "/localization/kinematic_state"
    args = {a.name: a.default for a in L.LAUNCH_ARGUMENTS}
    args.update(targets, namespace="ego", backend="constant_velocity", device="cpu")
    overrides = L.parameter_overrides(args)
    assert "use_sim_time" not in overrides
    remaps = dict(L.topic_remaps(params_file, args))
    assert remaps["renamed/front_tele_30fov/image"] == "/sensing/cam3/image"
    proc = ros_process(launch.EXECUTABLE, params_file=params_file, namespace="/ego",
                       remaps=remaps, node_name=launch.NODE_NAME, params=overrides)
    proc.wait_for_output("planning at", timeout=30.0)
    assert "/sensing/cam3/image" in proc.output()  # the log names the resolved topics

    scenario = sc.straight_constant(duration_s=6.0,
                                    cameras=sc.default_cameras(width=32, height=32))
    driver = ScenarioPublisher(ros_node.node, scenario, [targets[f"camera_{k}_topic"] for k in range(4)],
                               ["rgb8"] * 4, odometry_topic=targets["odometry_topic"],
                               publish_clock=True)
    plan_sub, plans = ros_node.subscribe("/ego/alpamayo/plan", PlannerOutput, qos=PLAN_QOS)
    # Plans published before discovery matched our subscription would be lost.
    ros_node.wait_for_subscription_match(plan_sub, timeout=20.0)
    for pub in driver.camera_publishers + [driver.odometry_publisher]:
        ros_node.wait_for_publisher_match(pub, timeout=20.0)

    def ok_plans():
        return [p for p in list(plans.messages) if p.status == PlannerOutput.STATUS_OK]

    # Drive (sim time) until an OK plan arrived: 1.5 s of history are needed first.
    for t in np.arange(0.0, 5.5, 0.01):
        driver.advance_to(float(t))
        time.sleep(0.005)
        if t > 2.5 and ok_plans():
            break
    deadline = time.monotonic() + 10.0
    while not ok_plans() and time.monotonic() < deadline:
        time.sleep(0.05)
    ok = ok_plans()
    assert ok, proc.describe() + "\nplans:\n" + "\n".join(
        f"{p.header.stamp.sec}.{p.header.stamp.nanosec:09d} status {p.status}: {p.status_reason}"
        for p in list(plans.messages))
    assert list(ok[-1].inputs.camera_topics) == [targets[f"camera_{k}_topic"] for k in range(4)]
    assert ros_node.node.count_subscribers("/localization/kinematic_state") >= 1
