"""launch/planner.launch.py: its defaults agree with the parameter schema, and what it starts
(planner_node + params file + namespace + remaps) works, run here without `ros2 launch`."""
from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

import ros_harness
from alpamayo_ros.core import planner_params as P

LAUNCH_FILE = ros_harness.REPO_ROOT / "launch" / "planner.launch.py"


def _load_launch_module():
    spec = importlib.util.spec_from_file_location("planner_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # launch/launch_ros are imported lazily inside
    return module


def test_launch_defaults_match_the_parameter_schema():
    launch = _load_launch_module()
    assert launch.EXECUTABLE == "planner_node" and launch.NODE_NAME == "alpamayo_planner"
    assert list(launch.CAMERA_TOPICS) == P.PARAMETERS_BY_NAME["camera_topics"].default
    assert launch.ODOMETRY_TOPIC == P.PARAMETERS_BY_NAME["odometry_topic"].default
    for name in ("params_file", "namespace", "use_sim_time", "checkpoint_dir",
                 "odometry_topic", *(f"camera_{k}_topic" for k in range(4))):
        assert name in launch.LAUNCH_ARGUMENTS
    # By default every remap is the identity: the node sees its configured topics.
    for src, arg in launch.REMAPPINGS:
        assert launch.LAUNCH_ARGUMENTS[arg][0] == src
    # The installed share/ files the launch file resolves exist in the source tree.
    assert (ros_harness.REPO_ROOT / "config" / "planner.yaml").is_file()


def test_launch_description_builds_with_launch_ros():
    pytest.importorskip("launch_ros")
    launch = _load_launch_module()
    description = launch.generate_launch_description()
    declared = {a.name for a in description.get_launch_arguments()}
    assert declared == set(launch.LAUNCH_ARGUMENTS)


@pytest.mark.ros
def test_what_the_launch_file_starts_plans_under_namespace_and_remaps(ros_process, ros_node):
    """Same executable, default params file, namespace and remaps as the launch file; the
    model is switched to the constant-velocity dry run so no checkpoint is needed."""
    pytest.importorskip("rclpy")
    from alpamayo_ros.msg import PlannerOutput
    from alpamayo_ros.ros.qos import PLAN_QOS
    from alpamayo_ros.ros.scenario_publisher import ScenarioPublisher
    from alpamayo_ros.tools import scenario as sc

    launch = _load_launch_module()
    targets = {f"camera_{k}_topic": f"/sensing/cam{k}/image" for k in range(4)}
    targets["odometry_topic"] = "/localization/kinematic_state"
    remaps = {src: targets[arg] for src, arg in launch.REMAPPINGS}
    proc = ros_process(launch.EXECUTABLE, params_file=ros_harness.REPO_ROOT / "config" / "planner.yaml",
                       namespace="/ego", remaps=remaps, node_name=launch.NODE_NAME,
                       params={"use_sim_time": True, "model.backend": "constant_velocity"})
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
