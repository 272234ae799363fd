"""Autoware drop-in: the preset (config/autoware.yaml, `preset:=autoware`) and the
autoware_planning_msgs/Trajectory output, on data in Autoware's conventions (JPEG
CompressedImage cameras on /sensing/camera/cameraN/image_raw/compressed, 50 Hz
/localization/kinematic_state of base_link in map), through the replay and live through
the node started as the launch file starts it.

Every Trajectory must be the selected candidate of the same tick's PlannerOutput in the
odometry frame (pose = t0 pose x t0-frame pose, time, speed, acceleration), stamped t0 in
the odometry frame, time_from_start strictly increasing from 0.1 s; ticks without an OK plan
publish nothing on it.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ros_harness
from alpamayo_ros.core import planner_params as P
from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.parameter_file import normalised_parameter_file, read_parameter_file
from alpamayo_ros.ros import launch_support as L
from alpamayo_ros.bag import bag_io
from alpamayo_ros.tools import make_bag, replay
from alpamayo_ros.replay.outputs import PLAN_TOPIC
from alpamayo_ros.sim.scenario import default_cameras, make_preset

CONFIG = ros_harness.REPO_ROOT / "config"
PRESET = CONFIG / "autoware.yaml"
# The reference Autoware node's camera mapping: Autoware camera -> Alpamayo camera index.
AUTOWARE_CAMERAS = {0: "/sensing/camera/camera3/image_raw/compressed",
                    1: "/sensing/camera/camera1/image_raw/compressed",
                    2: "/sensing/camera/camera4/image_raw/compressed",
                    6: "/sensing/camera/camera2/image_raw/compressed"}
KINEMATIC_STATE = "/localization/kinematic_state"
TRAJECTORY_TOPIC = "/alpamayo/predicted_trajectory"
NS = 1_000_000_000
DRY_RUN = {"backend": "constant_velocity", "device": "cpu"}


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


def _pose(msg) -> Pose:
    p, q = msg.position, msg.orientation
    return Pose.from_xyz_quat([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])


def assert_trajectory_is_the_plan(traj, plan) -> None:
    """One Trajectory against its tick's PlannerOutput (rclpy or rosbags messages): the
    selected candidate moved into the odometry frame by the plan's t0 pose."""
    assert plan.status == 0  # OK
    assert traj.header.frame_id == plan.odom_frame_id == "map"
    assert _stamp_ns(traj.header.stamp) == _stamp_ns(plan.header.stamp)
    cand = plan.candidates[plan.selected_index]
    assert len(traj.points) == len(cand.poses) == 64
    offsets = [_stamp_ns(p.time_from_start) for p in traj.points]
    assert offsets[0] == NS // 10 and all(b > a for a, b in zip(offsets, offsets[1:]))
    assert offsets == [_stamp_ns(d) for d in cand.time_from_t0]
    t0 = _pose(plan.t0_pose_odom)
    for k, point in enumerate(traj.points):
        written, expected = _pose(point.pose), t0.compose(_pose(cand.poses[k]))
        np.testing.assert_allclose(written.position, expected.position, atol=1e-6)
        np.testing.assert_allclose(written.rotation, expected.rotation, atol=1e-6)
    np.testing.assert_array_equal([p.longitudinal_velocity_mps for p in traj.points],
                                  np.asarray(cand.speed, dtype=np.float32))
    np.testing.assert_array_equal([p.acceleration_mps2 for p in traj.points],
                                  np.asarray(cand.acceleration, dtype=np.float32))


def test_node_and_replay_write_the_same_trajectory():
    """The rclpy message the node publishes and the rosbags message the replay writes, both
    serialised and read back by rclpy, are equal (one description,
    core.autoware_trajectory), and the registered types hash as rosidl's do."""
    pytest.importorskip("autoware_planning_msgs.msg")
    from rclpy.serialization import deserialize_message, serialize_message

    from alpamayo_ros.core.autoware_trajectory import TRAJECTORY_TYPE, trajectory_data
    from alpamayo_ros.core.config import PlannerConfig
    from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
    from alpamayo_ros.core.planner_core import PlannerCore
    from alpamayo_ros.ros import convert
    from core_scenarios import Scenario, now_ns

    core = PlannerCore(PlannerConfig(), ConstantVelocityModel())
    Scenario().advance(core, 3.0)
    result = core.tick(now_ns(3.02))
    assert result.ok, result.reason
    data = trajectory_data(result, 2.79)
    cls = convert.message_class(TRAJECTORY_TYPE)
    published = deserialize_message(serialize_message(convert.to_ros_message(data)), cls)
    raw = bag_io.typestore().serialize_cdr(bag_io.to_bag_message(data), data.type)
    assert deserialize_message(bytes(raw), cls) == published
    assert published.points[0].front_wheel_angle_rad == pytest.approx(
        np.arctan(2.79 / 50.0), abs=1e-3)  # the 50 m circle of the scenario
    share = Path(sys.prefix) / "share" / "autoware_planning_msgs" / "msg"
    for name in ("Trajectory", "TrajectoryPoint", "Path", "PathPoint"):
        rosidl = json.loads((share / f"{name}.json").read_text())
        hashes = {h["type_name"]: h["hash_string"] for h in rosidl["type_hashes"]}
        type_name = f"autoware_planning_msgs/msg/{name}"
        bag_io.msg_class(type_name)
        assert bag_io.typestore().hash_rihs01(type_name) == hashes[type_name]


# ------------------------------------------------------------------ preset and launch rules
def test_preset_maps_autowares_topics_and_validates_over_planner_yaml():
    flat = read_parameter_file(PRESET, P.NODE_NAME)
    assert dict(zip(flat["camera_indices"], flat["camera_topics"])) == AUTOWARE_CAMERAS
    assert flat["camera_transports"] == ["compressed"] * 4
    assert flat["odometry_topic"] == KINEMATIC_STATE
    assert flat["core.base_offset_xyz"] == [0.0, 0.0, 0.0]  # base_link is the rear axle
    assert flat["autoware.trajectory.enabled"] is True
    assert flat["autoware.trajectory.topic"] == TRAJECTORY_TOPIC
    values = P.validate_parameters({**read_parameter_file(CONFIG / "planner.yaml", P.NODE_NAME),
                                    **flat, "model.checkpoint_dir": "/models/ar1"})
    assert [o.topic for o in P.optional_outputs(values)] == [TRAJECTORY_TOPIC]
    assert normalised_parameter_file(PRESET, P.NODE_NAME, P.PLANNER_PARAMETERS) is None


def test_preset_argument_applies_the_preset_and_set_arguments_win():
    defaults = {a.name: a.default for a in L.LAUNCH_ARGUMENTS}
    assert L.parameter_overrides(defaults) == {}  # no preset: nothing
    overrides = L.parameter_overrides({**defaults, "preset": "autoware", "rate_hz": "5",
                                       "trajectory_topic": "/planning/alpamayo"})
    assert overrides["camera_topics"] == list(AUTOWARE_CAMERAS.values())
    assert overrides["rate_hz"] == 5.0
    assert overrides["autoware.trajectory.topic"] == "/planning/alpamayo"
    # A topic argument remaps the topic the preset configures.
    remaps = L.topic_remaps(CONFIG / "planner.yaml",
                            {"preset": "autoware", "camera_3_topic": "/cam/tele"})
    assert remaps == [(AUTOWARE_CAMERAS[6], "/cam/tele")]
    with pytest.raises(ConfigError, match="launch argument preset: have 'apollo'"):
        L.parameter_overrides({"preset": "apollo"})


def test_launch_file_declares_the_preset_argument():
    pytest.importorskip("launch_ros")
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "planner_launch", ros_harness.REPO_ROOT / "launch" / "planner.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    declared = {a.name: a for a in module.generate_launch_description().get_launch_arguments()}
    assert {"preset", "trajectory_topic"} <= set(declared)


# ----------------------------------------------------------------------------- the replay
def _autoware_bag(path: Path, duration_s: float = 9.0) -> make_bag.BagSummary:
    """curved_drive in Autoware's conventions, with a 1 s odometry gap that skips ticks."""
    scenario = make_preset("curved_drive", duration_s=duration_s, odom_frame="map",
                           cameras=default_cameras(10.0, 64, 48, "jpeg"))
    layout = make_bag.BagLayout(odometry_topic=KINEMATIC_STATE, odometry_rate_hz=50.0,
                                camera_topics=AUTOWARE_CAMERAS)
    faults = make_bag.BagFaults(gaps=[(KINEMATIC_STATE, 4.6, 5.8)])
    return make_bag.write_scenario_bag(path, scenario, "mcap", layout, faults)


def test_replay_of_an_autoware_bag_writes_the_plan_as_trajectory(tmp_path):
    """`alpamayo-replay <bag> --params config/autoware.yaml`: one Trajectory per OK tick,
    equal to that tick's PlannerOutput; none for the skipped ticks (before 1.5 s of
    history, and while the odometry is missing)."""
    summary = _autoware_bag(tmp_path / "awf")
    assert summary.camera_transports == {k: "compressed" for k in AUTOWARE_CAMERAS}
    out = tmp_path / "out"
    code = replay.main([str(tmp_path / "awf"), "--params", str(PRESET), "-o", str(out),
                        "--quiet", "--no-plot", "--backend", "constant_velocity",
                        "--device", "cpu"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    statuses = [t["status"] for t in report["bags"][0]["ticks"]]
    assert "OK" in statuses and "SKIPPED" in statuses
    with bag_io.BagReader(out / "00_awf_plan") as reader:
        assert reader.topics[TRAJECTORY_TOPIC] == "autoware_planning_msgs/msg/Trajectory"
        plans = {m.log_time_ns: m.msg for m in reader.messages([PLAN_TOPIC])}
        trajectories = {m.log_time_ns: m.msg for m in reader.messages([TRAJECTORY_TOPIC])}
    ok_ticks = {t for t, p in plans.items() if p.status == 0}
    assert len(plans) == len(statuses) and len(ok_ticks) == statuses.count("OK")
    assert set(trajectories) == ok_ticks  # nothing on skipped ticks
    skipped_between = [t for t, p in plans.items()
                       if p.status != 0 and min(ok_ticks) < t < max(ok_ticks)]
    assert skipped_between, "the odometry gap must skip ticks between OK ones"
    for tick in ok_ticks:
        assert_trajectory_is_the_plan(trajectories[tick], plans[tick])


def test_replay_with_the_trajectory_enabled_and_no_message_package_is_one_error(
        tmp_path, monkeypatch, capsys):
    summary = _autoware_bag(tmp_path / "awf", duration_s=3.0)
    del summary
    monkeypatch.setattr(bag_io, "_share_msg_dirs", lambda package: [tmp_path / "nowhere"])
    bag_io.typestore.cache_clear()
    bag_io.register_package_types.cache_clear()
    try:
        code = replay.main([str(tmp_path / "awf"), "--params", str(PRESET), "-o",
                            str(tmp_path / "out"), "--quiet", "--no-plot",
                            "--backend", "constant_velocity", "--device", "cpu"])
    finally:
        bag_io.typestore.cache_clear()
        bag_io.register_package_types.cache_clear()
    assert code == replay.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("alpamayo-replay: error: autoware.trajectory.enabled is true but "
                          "message package autoware_planning_msgs is not installed")


# ------------------------------------------------------------------------------ live node
@pytest.mark.ros
def test_preset_live_publishes_the_plan_as_trajectory_only_on_ok_ticks(ros_process,
                                                                       ros_node):
    """planner_node with planner.yaml and what `preset:=autoware backend:=constant_velocity
    device:=cpu use_sim_time:=true` adds, fed Autoware's topics (JPEG, 50 Hz
    kinematic_state in map, /clock); the odometry pauses for 1.2 s so ticks skip."""
    pytest.importorskip("rclpy")
    Trajectory = pytest.importorskip("autoware_planning_msgs.msg").Trajectory
    from alpamayo_ros.msg import PlannerOutput
    from alpamayo_ros.ros.qos import PLAN_QOS
    from alpamayo_ros.testbed.scenario_publisher import ScenarioPublisher

    args = {a.name: a.default for a in L.LAUNCH_ARGUMENTS}
    args.update(DRY_RUN, preset="autoware", use_sim_time="true")
    proc = ros_process("planner_node", params_file=CONFIG / "planner.yaml",
                       node_name=P.NODE_NAME, params=L.parameter_overrides(args),
                       remaps=dict(L.topic_remaps(CONFIG / "planner.yaml", args)))
    proc.wait_for_output("planning at", timeout=60.0)

    scenario = make_preset("curved_drive", duration_s=9.0, odom_frame="map",
                           cameras=default_cameras(10.0, 64, 48, "jpeg"))
    driver = ScenarioPublisher(ros_node.node, scenario,
                               [AUTOWARE_CAMERAS[s.index] for s in scenario.cameras],
                               ["jpeg"] * 4, odometry_topic=KINEMATIC_STATE,
                               publish_clock=True)
    driver.odometry_filter = lambda t, msg: None if 4.6 <= t < 5.8 else msg
    plan_sub, plans = ros_node.subscribe("/alpamayo/plan", PlannerOutput, qos=PLAN_QOS)
    traj_sub, trajectories = ros_node.subscribe(TRAJECTORY_TOPIC, Trajectory, qos=PLAN_QOS)
    for sub in (plan_sub, traj_sub):
        ros_node.wait_for_subscription_match(sub, timeout=20.0)
    for pub in driver.camera_publishers + [driver.odometry_publisher]:
        ros_node.wait_for_publisher_match(pub, timeout=20.0)
    for t in np.arange(0.0, 9.0, 0.01):
        driver.advance_to(float(t))
        time.sleep(0.004)

    def ok_count() -> int:
        return sum(p.status == 0 for p in list(plans.messages))

    # The sim clock stops with the drive, so no tick follows; a Trajectory is published
    # right after its tick's plan.
    ros_node.wait_until(lambda: ok_count() >= 4 and len(trajectories.messages) >= ok_count(),
                        timeout=20.0, what="4 OK plans and their Trajectories")
    time.sleep(0.5)  # anything published on a skipped tick would arrive by now
    received = list(plans.messages)
    ok = {_stamp_ns(p.header.stamp): p for p in received if p.status == 0}
    by_stamp = {_stamp_ns(m.header.stamp): m for m in list(trajectories.messages)}
    assert any(p.status != 0 for p in received), proc.describe()
    assert set(by_stamp) == set(ok), proc.describe()  # nothing on skipped ticks
    for stamp, plan in ok.items():
        assert_trajectory_is_the_plan(by_stamp[stamp], plan)
    statuses = [p.status for p in received]
    first_ok, last_ok = statuses.index(0), len(statuses) - 1 - statuses[::-1].index(0)
    assert any(s != 0 for s in statuses[first_ok:last_ok]), \
        "the odometry pause must skip ticks between OK ones: " + str(statuses)


@pytest.mark.ros
def test_enabled_without_the_message_package_fails_configure_with_one_line(ros_process,
                                                                          ros_env, tmp_path):
    """Where autoware_planning_msgs cannot be imported (an importable package of that name
    without messages shadows the installed one), configure fails with the reason."""
    shadow = tmp_path / "shadow" / "autoware_planning_msgs"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    path = f"{tmp_path / 'shadow'}:{ros_env.get('PYTHONPATH', '')}"
    proc = ros_process("planner_node", params_file=CONFIG / "planner.yaml",
                       node_name=P.NODE_NAME, env={"PYTHONPATH": path},
                       params={"model.backend": "constant_velocity", "model.device": "cpu",
                               "autoware.trajectory.enabled": True})
    assert proc.wait_exit(timeout=60.0) != 0
    line = proc.wait_for_output(r"configure failed: [^\n]*").group(0)
    assert "autoware.trajectory.enabled is true but the message package " \
           "autoware_planning_msgs is not installed" in line
    assert "Traceback" not in proc.output()
