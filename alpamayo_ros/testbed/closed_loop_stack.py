"""The processes of a closed loop, defined once for the launch files, the tool and the tests.

`sim_stack()` is launch/sim_closed_loop.launch.py: CI simulator, planner (or route oracle),
controller and route navigation (instructions from the simulator's route), each an
executable of this package with parameter files from config/ plus overrides.
`carla_stack()` is the planner and controller of launch/carla_closed_loop.launch.py (the
bridge and the spawner come from carla-ros-bridge). The closed-loop tool and the tests
start exactly these specs as processes (`command_line`), so what they run is what the
launch files run.
No rclpy and no launch here: plain data.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.param_schema import param_literal, validate
from alpamayo_ros.core.parameter_file import read_parameter_file
from alpamayo_ros.core.planner_params import ROS_ONLY_PARAMETERS, validate_parameters
from alpamayo_ros.core.types import CAMERA_IMAGE_SHAPE
from alpamayo_ros.sim.closed_loop_params import NODE_PARAMETERS

PACKAGE = "alpamayo_ros"
PLANNERS = ("route_oracle", "constant_velocity", "alpamayo")
ROLE_NAME = "ego_vehicle"
# The ego blueprint of config/carla_objects.json and its rear axle in the actor frame [m]
# (docs/closed_loop.md says where the number comes from).
BLUEPRINT = "vehicle.lincoln.mkz_2017"
REAR_AXLE_OFFSET_XYZ = (-1.42, 0.0, 0.0)
# Sensor ids of the 4 model cameras (Alpamayo camera index -> id); the CI simulator and the
# planner's topics use the same ids.
CAMERA_IDS = {0: "cross_left_120fov", 1: "front_wide_120fov", 2: "cross_right_120fov",
              6: "front_tele_30fov"}


@dataclass(frozen=True)
class NodeSpec:
    """executable (lib/alpamayo_ros/<name>), node name, parameter files (names in config/,
    applied in order) and parameter overrides."""

    executable: str
    node_name: str
    params_files: tuple[str, ...]
    overrides: Mapping[str, Any] = field(default_factory=dict)


def config_dir() -> Path:
    """config/ of the source tree, else share/alpamayo_ros/config of the install."""
    here = Path(__file__).resolve()
    source = here.parents[2] / "config"
    if (source / "controller.yaml").is_file():
        return source
    for parent in here.parents:
        candidate = parent / "share" / PACKAGE / "config"
        if (candidate / "controller.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"config/controller.yaml not found near {here}")


def planner_spec(planner: str, rate_hz: float, checkpoint: str = "", device: str = "cpu",
                 extra: Optional[Mapping[str, Any]] = None) -> NodeSpec:
    """The planning node: the route oracle, or planner_node with a backend."""
    if planner == "route_oracle":
        return NodeSpec("route_oracle", "alpamayo_route_oracle", ("route_oracle.yaml",),
                        {"use_sim_time": True, "rate_hz": rate_hz, **(extra or {})})
    if planner not in PLANNERS:
        raise ValueError(f"planner: have {planner!r}, need one of {', '.join(PLANNERS)}")
    overrides: dict[str, Any] = {"use_sim_time": True, "rate_hz": rate_hz,
                                 "model.backend": planner}
    if planner == "alpamayo":
        overrides.update({"model.checkpoint_dir": checkpoint, "model.device": device})
    overrides.update(extra or {})
    return NodeSpec("planner_node", "alpamayo_planner", ("planner.yaml", "carla_planner.yaml"),
                    overrides)


def controller_spec(rate_hz: float, lockstep: bool = True,
                    extra: Optional[Mapping[str, Any]] = None) -> NodeSpec:
    return NodeSpec("controller_node", "alpamayo_controller", ("controller.yaml",),
                    {"use_sim_time": True, "lockstep.enabled": lockstep,
                     "lockstep.planning_period": 1.0 / rate_hz, **(extra or {})})


def navigation_spec(route_file: str = "") -> NodeSpec:
    """The route navigation node on the simulator's route (/carla/<role>/waypoints) and
    odometry; a route file's "instructions" replace the generated ones."""
    return NodeSpec("route_navigation", "alpamayo_route_navigation", ("route_navigation.yaml",),
                    {"use_sim_time": True, "route_topic": f"/carla/{ROLE_NAME}/waypoints",
                     "odometry_topic": f"/carla/{ROLE_NAME}/odometry",
                     "instructions_file": route_file, "source": "route"})


# carla_sim's vehicle_control_timeout in lockstep [wall s] (sim_stack).
LOCKSTEP_CONTROL_TIMEOUT_S = 30.0


def sim_stack(planner: str = "constant_velocity", *, rate_hz: float = 2.0,
              lockstep: bool = True, checkpoint: str = "", device: str = "cpu",
              sim: Optional[Mapping[str, Any]] = None,
              planner_extra: Optional[Mapping[str, Any]] = None,
              controller_extra: Optional[Mapping[str, Any]] = None,
              navigation: Optional[bool] = None) -> list[NodeSpec]:
    """carla_sim + planner + controller (+ route navigation: alpamayo/navigation for an
    Alpamayo 1.5 planner; None = with the model planner only, the one that can use
    instructions). The simulator starts stepping once the controller and the
    planner subscribe (so the planner's timer exists before the first /clock and its
    ticks fall on multiples of its period), and the navigation node; lockstep off =
    real-time mode. In lockstep the planner subscribes reliably and the simulator
    publishes a tick's /clock once its data is acknowledged (tick_settle.await_acks): a
    tick plans on every sample up to it, however loaded the machine."""
    camera_subscribers = 0 if planner == "route_oracle" else 1
    if navigation is None:
        navigation = planner == "alpamayo"
    sim_overrides: dict[str, Any] = {
        "synchronous_mode": lockstep,
        "tick_settle.period": 1.0 / rate_hz if lockstep else 0.0,
        "start.min_odometry_subscribers": 3 if navigation else 2,
        "start.await_first_command": lockstep,
        "start.min_camera_subscribers": camera_subscribers,
        "tick_settle.await_acks": lockstep,
        # The bridge's 1 s: on a loaded machine (load average 14 on 2 cores) the controller
        # answered steps later than that 7 to 23 times per route, the simulator stepped on
        # the old command, and the trajectory changed. The controller answers every step
        # (it PAUSEs the simulator while it waits for a plan), so lockstep waits longer.
        "vehicle_control_timeout": LOCKSTEP_CONTROL_TIMEOUT_S if lockstep else 1.0,
        **(sim or {})}
    if lockstep and planner != "route_oracle":
        planner_extra = {"inputs.reliable": True, **(planner_extra or {})}
    specs = [NodeSpec("carla_sim", "carla_sim", ("carla_sim.yaml",), sim_overrides),
             planner_spec(planner, rate_hz, checkpoint, device, planner_extra),
             controller_spec(rate_hz, lockstep, controller_extra)]
    if navigation:
        specs.append(navigation_spec(sim_overrides.get("route_file", "")))
    return specs


def carla_stack(*, rate_hz: float = 2.0, checkpoint: str = "", device: str = "cuda",
                processor: str = "") -> list[NodeSpec]:
    """Planner (real model) and controller for CARLA + carla-ros-bridge."""
    extra = {"model.processor_dir": processor} if processor else {}
    return [planner_spec("alpamayo", rate_hz, checkpoint, device, extra),
            controller_spec(rate_hz, lockstep=True)]


def executable_path(name: str) -> Path:
    """lib/alpamayo_ros/<name> of this interpreter's prefix, else scripts/<name>."""
    installed = Path(sys.prefix) / "lib" / PACKAGE / name
    if installed.is_file():
        return installed
    source = Path(__file__).resolve().parents[2] / "scripts" / name
    if source.is_file():
        return source
    raise FileNotFoundError(f"no executable {name!r}: have neither {installed} nor {source}")


def command_line(spec: NodeSpec, configs: Optional[Path] = None) -> list[str]:
    """argv that runs `spec` with this interpreter (what launch_ros would run)."""
    configs = configs or config_dir()
    argv = [sys.executable, str(executable_path(spec.executable)), "--ros-args",
            "-r", f"__node:={spec.node_name}"]
    for name in spec.params_files:
        argv += ["--params-file", str(configs / name)]
    for key, value in spec.overrides.items():
        argv += ["-p", f"{key}:={param_literal(value)}"]
    return argv


def check_parameters(spec: NodeSpec, configs: Optional[Path] = None) -> dict[str, Any]:
    """The validated parameters `spec` starts its node with (its parameter files, then its
    overrides), checked by the node's own schema table and rules before any process
    starts; ConfigError naming the node and every problem on one line."""
    configs = configs or config_dir()
    values: dict[str, Any] = {}
    try:
        for name in spec.params_files:
            values.update(read_parameter_file(configs / name, spec.node_name))
        values.update(spec.overrides)
        values = {k: v for k, v in values.items() if k not in ROS_ONLY_PARAMETERS}
        if spec.executable == "planner_node":
            return validate_parameters(values)
        table, cross_checks = NODE_PARAMETERS[spec.executable]
        return validate(values, table, cross_checks)
    except ConfigError as exc:
        problems = "; ".join(line.strip() for line in str(exc).splitlines()
                             if line.strip() and line.strip() != "invalid parameters:")
        raise ConfigError(f"{spec.node_name} ({spec.executable}): {problems}") from None


def describe(specs: Sequence[NodeSpec]) -> list[dict]:
    return [{"executable": s.executable, "node": s.node_name, "params_files": list(s.params_files),
             "overrides": dict(s.overrides)} for s in specs]


def carla_objects(width: int = CAMERA_IMAGE_SHAPE[1], height: int = CAMERA_IMAGE_SHAPE[0],
                  sensor_tick: float = 0.1) -> dict:
    """objects.json for carla_spawn_objects: the ego with the 4 Alpamayo cameras at the rig's
    poses and FOVs, the odometry pseudo sensor, the collision and lane invasion sensors
    (/carla/<role>/collision and /lane_invasion, scored by sim/scoring.py) and the actor
    list pseudo sensor (/carla/actor_list: the collided actors' types)
    (config/carla_objects.json is this).

    Spawn points are in the ROS convention of the bridge (x forward, y left, z up, yaw in
    degrees + = left; the bridge converts to CARLA's left-handed frame), relative to the
    actor origin: rig position (rear-axle frame) + the rear axle's offset.
    """
    from alpamayo_ros.sim.scenario import RIG_CAMERAS  # numpy only
    import math
    sensors = []
    for index, sensor_id in CAMERA_IDS.items():
        place = RIG_CAMERAS[index]
        x, y, z = (round(a + b, 4) for a, b in zip(place.xyz, REAR_AXLE_OFFSET_XYZ))
        sensors.append({"type": "sensor.camera.rgb", "id": sensor_id,
                        "spawn_point": {"x": x, "y": y, "z": z, "roll": 0.0, "pitch": 0.0,
                                        "yaw": round(math.degrees(place.yaw), 4)},
                        "image_size_x": width, "image_size_y": height,
                        "fov": place.fov_deg, "sensor_tick": sensor_tick})
    sensors.append({"type": "sensor.pseudo.odom", "id": "odometry"})
    origin = {"x": 0.0, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0, "yaw": 0.0}
    sensors.append({"type": "sensor.other.collision", "id": "collision",
                    "spawn_point": dict(origin)})
    sensors.append({"type": "sensor.other.lane_invasion", "id": "lane_invasion",
                    "spawn_point": dict(origin)})
    return {"objects": [{"type": "sensor.pseudo.actor_list", "id": "actor_list"},
                        {"type": BLUEPRINT, "id": ROLE_NAME, "sensors": sensors}]}
