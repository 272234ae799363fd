"""Closed-loop configuration agrees with itself: schemas vs ControllerConfig, config/*.yaml vs
the schemas, generated docs, vehicle and camera numbers across the planner, controller,
simulator and objects.json, the launch files vs the process specs; and the message
conversions of the controller (carla_msgs, optional ackermann_msgs)."""
from __future__ import annotations

import importlib.util
import json
import math

import pytest

import ros_harness
from alpamayo_ros.control.config import ControllerConfig
from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.ros import closed_loop_params as CP
from alpamayo_ros.core import planner_params
from alpamayo_ros.core.parameter_file import read_parameter_file
from alpamayo_ros.testbed import closed_loop_stack as stack
from alpamayo_ros.sim.scenario import RIG_CAMERAS

CONFIG = ros_harness.REPO_ROOT / "config"


def test_controller_schema_defaults_are_the_controller_config_defaults():
    config = CP.controller_config(CP.defaults(CP.CONTROLLER_PARAMETERS))
    assert config == ControllerConfig()
    assert set(CP.CONTROLLER_FIELDS.values()) == set(ControllerConfig().to_dict())


@pytest.mark.parametrize("name, specs, cross", [
    ("controller.yaml", CP.CONTROLLER_PARAMETERS, CP.controller_cross_checks),
    ("carla_sim.yaml", CP.SIM_PARAMETERS, CP.sim_cross_checks),
    ("route_oracle.yaml", CP.ORACLE_PARAMETERS, None),
])
def test_config_files_set_every_parameter_to_its_default(name, specs, cross):
    values = read_parameter_file(CONFIG / name, "any_node")
    assert set(values) == {s.name for s in specs}
    assert CP.validate(values, specs, cross) == CP.defaults(specs)


def test_invalid_parameters_are_refused_with_have_need():
    with pytest.raises(ConfigError, match=r"lateral.lookahead_min .* > lateral.lookahead_max"):
        CP.validate({"lateral.lookahead_min": 30.0, "lateral.lookahead_max": 10.0},
                    CP.CONTROLLER_PARAMETERS, CP.controller_cross_checks)
    with pytest.raises(ConfigError, match="camera_rate: have period"):
        CP.validate({"camera_rate": 7.0}, CP.SIM_PARAMETERS, CP.sim_cross_checks)


def test_docs_tables_are_generated_from_the_schemas():
    text = CP.DOCS_PATH.read_text()
    assert CP.render_docs(text) == text, (
        "docs/closed_loop.md is out of date: run python -m alpamayo_ros.ros.closed_loop_params "
        "--write-docs")


def test_the_planner_files_for_the_bridge_validate_and_name_the_simulator_topics():
    flat = read_parameter_file(CONFIG / "planner.yaml", "alpamayo_planner")
    flat.update(read_parameter_file(CONFIG / "carla_planner.yaml", "alpamayo_planner"))
    flat.pop("use_sim_time", None)
    flat["model.backend"] = "constant_velocity"
    values = planner_params.validate_parameters(flat)
    sim = CP.defaults(CP.SIM_PARAMETERS)
    role = sim["role_name"]
    assert values["camera_topics"] == [f"/carla/{role}/{cid}/image" for cid in sim["camera_ids"]]
    assert values["camera_indices"] == sim["camera_indices"]
    assert values["odometry_topic"] == f"/carla/{role}/odometry"
    assert stack.CAMERA_IDS == dict(zip(sim["camera_indices"], sim["camera_ids"]))


def test_one_rear_axle_offset_and_vehicle_everywhere():
    offset = list(stack.REAR_AXLE_OFFSET_XYZ)
    planner = read_parameter_file(CONFIG / "carla_planner.yaml", "alpamayo_planner")
    assert planner["core.base_offset_xyz"] == offset
    controller = CP.defaults(CP.CONTROLLER_PARAMETERS)
    sim = CP.defaults(CP.SIM_PARAMETERS)
    oracle = CP.defaults(CP.ORACLE_PARAMETERS)
    assert controller["vehicle.rear_axle_offset_xyz"] == offset
    assert sim["vehicle.rear_axle_offset_xyz"] == offset
    assert oracle["rear_axle_offset_xyz"] == offset
    for name in ("wheelbase", "max_wheel_angle_deg", "full_throttle_accel", "full_brake_decel"):
        assert controller[f"vehicle.{name}"] == sim[f"vehicle.{name}"], name


def test_objects_json_carries_the_rig_cameras_at_1080p():
    objects = json.loads((CONFIG / "carla_objects.json").read_text())
    assert objects == stack.carla_objects()
    actor_list, ego = objects["objects"]
    assert actor_list == {"type": "sensor.pseudo.actor_list", "id": "actor_list"}
    assert ego["type"] == stack.BLUEPRINT and ego["id"] == stack.ROLE_NAME
    cameras = [s for s in ego["sensors"] if s["type"] == "sensor.camera.rgb"]
    assert [c["fov"] for c in cameras] == [120.0, 120.0, 120.0, 30.0]
    assert all((c["image_size_x"], c["image_size_y"]) == (1920, 1080) for c in cameras)
    for cam, index in zip(cameras, (0, 1, 2, 6)):
        rig = RIG_CAMERAS[index]
        sp = cam["spawn_point"]
        # Actor origin = rear axle - offset: the camera sits 1.42 m further back in x.
        assert sp["x"] == pytest.approx(rig.xyz[0] + stack.REAR_AXLE_OFFSET_XYZ[0])
        assert (sp["y"], sp["z"]) == pytest.approx(rig.xyz[1:])
        assert sp["yaw"] == pytest.approx(math.degrees(rig.yaw))  # + = left (ROS convention)
    assert {"type": "sensor.pseudo.odom", "id": "odometry"} in ego["sensors"]
    # The events the leaderboard scores use: /carla/ego_vehicle/collision, /lane_invasion.
    assert [s["id"] for s in ego["sensors"] if s["type"].startswith("sensor.other.")] == [
        "collision", "lane_invasion"]


def _load(name):
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"),
                                                  ros_harness.REPO_ROOT / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_files_declare_their_arguments_and_run_the_stack_specs():
    sim_launch = _load("sim_closed_loop.launch.py")
    carla_launch = _load("carla_closed_loop.launch.py")
    assert {"planner", "checkpoint_dir", "mode", "plan_rate"} <= set(sim_launch.LAUNCH_ARGUMENTS)
    assert carla_launch.BRIDGE_ARGUMENTS["synchronous_mode"] == "True"
    assert carla_launch.BRIDGE_ARGUMENTS[
        "synchronous_mode_wait_for_vehicle_control_command"] == "True"
    assert "fixed_delta_seconds" in carla_launch.LAUNCH_ARGUMENTS
    # What the launch files start are the specs the tool and the tests run as processes.
    launch_dir = ros_harness.REPO_ROOT / "launch"
    assert "sim_stack(" in (launch_dir / "sim_closed_loop.launch.py").read_text()
    assert "carla_stack(" in (launch_dir / "carla_closed_loop.launch.py").read_text()
    specs = stack.sim_stack("alpamayo", checkpoint="/ckpt")
    assert [s.executable for s in specs] == ["carla_sim", "planner_node", "controller_node",
                                             "route_navigation"]
    assert specs[0].overrides["start.min_odometry_subscribers"] == 3
    assert specs[3].overrides["route_topic"] == "/carla/ego_vehicle/waypoints"
    assert specs[3].overrides["odometry_topic"] == specs[0].overrides.get(
        "odometry_topic", "/carla/ego_vehicle/odometry")
    plain = stack.sim_stack("alpamayo", checkpoint="/ckpt", navigation=False)
    assert [s.executable for s in plain] == ["carla_sim", "planner_node", "controller_node"]
    assert plain[0].overrides["start.min_odometry_subscribers"] == 2
    # Without the model planner, only when asked for.
    assert len(stack.sim_stack("route_oracle")) == 3
    assert stack.sim_stack("route_oracle", navigation=True)[3].executable == "route_navigation"
    for spec in specs + stack.carla_stack(checkpoint="/ckpt"):
        for name in spec.params_files:
            assert (CONFIG / name).is_file(), name
        assert (ros_harness.REPO_ROOT / "scripts" / spec.executable).is_file()
    planner, controller = stack.carla_stack(rate_hz=4.0)
    assert controller.overrides["lockstep.planning_period"] == 0.25
    assert planner.overrides["rate_hz"] == 4.0
    assert planner.params_files == ("planner.yaml", "carla_planner.yaml")


def test_launch_descriptions_build_with_launch_ros():
    pytest.importorskip("launch_ros")
    for name in ("sim_closed_loop.launch.py", "carla_closed_loop.launch.py",
                 "route_navigation.launch.py"):
        module = _load(name)
        declared = {a.name for a in module.generate_launch_description().get_launch_arguments()}
        assert declared == set(module.LAUNCH_ARGUMENTS)


# ------------------------------------------------------------------ message conversion
def test_control_conversions_and_the_ackermann_absence_path():
    pytest.importorskip("carla_msgs.msg")
    from alpamayo_ros.control.reference_plan import PlanRejected
    from alpamayo_ros.control.tracking_controller import Command
    from alpamayo_ros.msg import PlannerOutput
    from alpamayo_ros.ros import control_convert

    msg = control_convert.vehicle_control(Command(0.25, 0.0, -0.5), 1_500_000_000)
    assert (msg.throttle, msg.brake, msg.steer) == (0.25, 0.0, -0.5)
    assert (msg.gear, msg.manual_gear_shift, msg.reverse) == (1, False, False)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1, 500_000_000)
    out = PlannerOutput()
    with pytest.raises(PlanRejected, match="no candidates"):
        control_convert.reference_plan(out, max_waypoints=256)
    try:
        import ackermann_msgs  # noqa: F401
    except ImportError:
        assert not control_convert.ACKERMANN_AVAILABLE
        assert control_convert.ackermann_drive(0.1, 5.0, 0.0, 0) is None
    else:
        drive = control_convert.ackermann_drive(0.1, 5.0, 0.0, 0)
        assert drive.drive.steering_angle == pytest.approx(0.1)
