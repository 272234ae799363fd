"""Parameter schemas of the closed-loop nodes: controller, CI simulator and route oracle
(the route navigation node's: core.route_navigation).

Each table lists every parameter once (ParamSpec: name, type, default, description,
range). The nodes declare and validate them through alpamayo_ros.ros.closed_loop_params;
the closed-loop tool checks a run's parameter files and overrides with them before it
starts any process (NODE_PARAMETERS); the tables of docs/closed_loop.md are generated from
them (`python -m alpamayo_ros.ros.closed_loop_params --write-docs`). No rclpy here.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from alpamayo_ros.control.config import ControllerConfig
from alpamayo_ros.core.param_schema import (BOOL, FLOAT, FLOAT_ARRAY, INT, INT_ARRAY, STRING,
                                            STRING_ARRAY, CrossChecks, ParamSpec)
from alpamayo_ros.core.navigation import NAVIGATION_TOPIC
from alpamayo_ros.core.outputs import PLAN_TOPIC
from alpamayo_ros.core.route_navigation import ROUTE_NAVIGATION_PARAMETERS
from alpamayo_ros.core.types import DEFAULT_CAMERA_INDICES, NUM_CAMERAS

_CFG = ControllerConfig()
ROLE_NAME = "ego_vehicle"

# Controller parameter -> ControllerConfig field (angles given in degrees are converted).
CONTROLLER_FIELDS = {
    "vehicle.wheelbase": "wheelbase",
    "vehicle.max_wheel_angle_deg": "max_wheel_angle",
    "vehicle.rear_axle_offset_xyz": "rear_axle_offset_xyz",
    "vehicle.full_throttle_accel": "full_throttle_accel",
    "vehicle.full_brake_decel": "full_brake_decel",
    "vehicle.max_speed": "max_vehicle_speed",
    "lateral.lookahead_base": "lookahead_base",
    "lateral.lookahead_gain": "lookahead_gain",
    "lateral.lookahead_min": "lookahead_min",
    "lateral.lookahead_max": "lookahead_max",
    "lateral.steer_rate_limit": "steer_rate_limit",
    "longitudinal.speed_kp": "speed_kp",
    "longitudinal.speed_ki": "speed_ki",
    "longitudinal.integral_limit": "speed_integral_limit",
    "longitudinal.preview_time": "preview_time",
    "longitudinal.brake_deadband": "brake_deadband",
    "longitudinal.throttle_rate_limit": "throttle_rate_limit",
    "plan.max_age": "max_plan_age",
    "plan.max_anchor_error": "max_anchor_error",
    "plan.max_t0_ahead": "max_t0_ahead",
    "plan.max_speed": "max_plan_speed",
    "plan.max_lateral_accel": "max_plan_lateral_accel",
    "plan.max_acceleration": "max_plan_acceleration",
    "plan.max_waypoints": "max_plan_waypoints",
    "plan.max_message_bytes": "max_plan_message_bytes",
    "plan.max_horizon": "max_plan_horizon",
    "plan.max_motion_mismatch": "max_plan_motion_mismatch",
    "plan.max_accel_mismatch": "max_plan_accel_mismatch",
    "plan.max_curvature_mismatch": "max_plan_curvature_mismatch",
    "stop.deceleration": "stop_deceleration",
    "stop.standstill_speed": "standstill_speed",
    "stop.standstill_brake": "standstill_brake",
    "odometry.max_position_jump": "max_position_jump",
    "odometry.max_yaw_jump": "max_yaw_jump",
    "odometry.timeout": "odometry_timeout",
}

_VEHICLE = (
    ParamSpec("vehicle.wheelbase", FLOAT, _CFG.wheelbase,
              "Wheelbase of the vehicle [m] (pure pursuit geometry).", minimum=0.5, maximum=10.0),
    ParamSpec("vehicle.max_wheel_angle_deg", FLOAT, round(math.degrees(_CFG.max_wheel_angle), 6),
              "Front wheel angle of steer = 1.0 [deg] (CARLA: max_steer_angle of the front "
              "wheels of the blueprint).", minimum=1.0, maximum=90.0),
    ParamSpec("vehicle.rear_axle_offset_xyz", FLOAT_ARRAY, list(_CFG.rear_axle_offset_xyz),
              "Rear axle in the odometry child frame (CARLA: the actor origin) [m]; the same "
              "numbers as the planner's core.base_offset_xyz.", minimum=-10.0, maximum=10.0,
              length=3),
    ParamSpec("vehicle.full_throttle_accel", FLOAT, _CFG.full_throttle_accel,
              "Acceleration of throttle = 1 [m/s^2] (pedal map of the PI output).",
              minimum=0.1, maximum=20.0),
    ParamSpec("vehicle.full_brake_decel", FLOAT, _CFG.full_brake_decel,
              "Deceleration of brake = 1 [m/s^2].", minimum=0.1, maximum=30.0),
    ParamSpec("vehicle.max_speed", FLOAT, _CFG.max_vehicle_speed,
              "Fastest the vehicle can go [m/s]: a larger odometry speed counts as this "
              "for the jump limit and a stop's start speed.", minimum=1.0, maximum=150.0),
)

CONTROLLER_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("role_name", STRING, ROLE_NAME,
              "CARLA role name of the ego vehicle; the default topics are /carla/<role_name>/..."),
    ParamSpec("odometry_topic", STRING, "",
              "nav_msgs/Odometry of the vehicle (actor origin in map); \"\" = "
              "/carla/<role_name>/odometry."),
    ParamSpec("plan_topic", STRING, PLAN_TOPIC, "alpamayo_ros/PlannerOutput to follow."),
    ParamSpec("control_topic", STRING, "",
              "carla_msgs/CarlaEgoVehicleControl output; \"\" = "
              "/carla/<role_name>/vehicle_control_cmd."),
    ParamSpec("ackermann.enabled", BOOL, False,
              "Also publish ackermann_msgs/AckermannDriveStamped where ackermann_msgs is "
              "installed (a warning and no output where it is not)."),
    ParamSpec("ackermann.topic", STRING, "",
              "AckermannDriveStamped output; \"\" = /carla/<role_name>/ackermann_cmd."),
    ParamSpec("lockstep.enabled", BOOL, True,
              "Withhold the command of a step whose stamp is a planning tick until the "
              "planner's output for that tick arrived (docs/closed_loop.md)."),
    ParamSpec("lockstep.planning_period", FLOAT, 0.5,
              "The planner's tick period [s] (1 / its rate_hz); a multiple of the simulation "
              "step.", minimum=0.01, maximum=60.0),
    ParamSpec("lockstep.timeout", FLOAT, 120.0,
              "Wall-clock seconds to wait for a tick's output before sending the command "
              "anyway (logged, counted).", minimum=0.1, maximum=3600.0),
    ParamSpec("lockstep.pause_topic", STRING, "/carla/control",
              "carla_msgs/CarlaControl topic: PAUSE while waiting, PLAY after (the bridge "
              "waits at most 1 s for a command by itself); \"\" = do not publish."),
    ParamSpec("diagnostics.period", FLOAT, 1.0,
              "Period of the /diagnostics status on the node clock [s]; mode changes are "
              "published at once.", minimum=0.05, maximum=60.0),
    *_VEHICLE,
    ParamSpec("lateral.lookahead_base", FLOAT, _CFG.lookahead_base,
              "Pure pursuit lookahead at standstill [m] ...", minimum=0.0, maximum=50.0),
    ParamSpec("lateral.lookahead_gain", FLOAT, _CFG.lookahead_gain,
              "... plus this many seconds of the current speed [s] ...", minimum=0.0,
              maximum=5.0),
    ParamSpec("lateral.lookahead_min", FLOAT, _CFG.lookahead_min,
              "... clamped to at least [m] ...", minimum=0.5, maximum=50.0),
    ParamSpec("lateral.lookahead_max", FLOAT, _CFG.lookahead_max,
              "... and at most [m].", minimum=0.5, maximum=100.0),
    ParamSpec("lateral.steer_rate_limit", FLOAT, _CFG.steer_rate_limit,
              "Largest change of the steer command per second [1/s] (full range is 2).",
              minimum=0.01, maximum=100.0),
    ParamSpec("longitudinal.speed_kp", FLOAT, _CFG.speed_kp,
              "Proportional gain of the speed loop [(m/s^2)/(m/s)].", minimum=0.0, maximum=20.0),
    ParamSpec("longitudinal.speed_ki", FLOAT, _CFG.speed_ki,
              "Integral gain of the speed loop [(m/s^2)/m].", minimum=0.0, maximum=20.0),
    ParamSpec("longitudinal.integral_limit", FLOAT, _CFG.speed_integral_limit,
              "Bound of the speed error integral [m].", minimum=0.0, maximum=100.0),
    ParamSpec("longitudinal.preview_time", FLOAT, _CFG.preview_time,
              "The speed and acceleration references are read this far after now [s] "
              "(covers the actuator lag).", minimum=0.0, maximum=2.0),
    ParamSpec("longitudinal.brake_deadband", FLOAT, _CFG.brake_deadband,
              "Wanted decelerations below this coast instead of braking [m/s^2].",
              minimum=0.0, maximum=5.0),
    ParamSpec("longitudinal.throttle_rate_limit", FLOAT, _CFG.throttle_rate_limit,
              "Largest rise of the throttle per second [1/s] (releasing is immediate).",
              minimum=0.01, maximum=100.0),
    ParamSpec("plan.max_age", FLOAT, _CFG.max_plan_age,
              "A plan older than this (now - t0) is stale: controlled stop [s].",
              minimum=0.05, maximum=6.4),
    ParamSpec("plan.max_anchor_error", FLOAT, _CFG.max_anchor_error,
              "Refuse a plan whose t0 pose is farther than this from where the odometry had "
              "the rear axle at t0 [m].", minimum=0.01, maximum=100.0),
    ParamSpec("plan.max_t0_ahead", FLOAT, _CFG.max_t0_ahead,
              "Refuse a plan whose t0 is more than this after the newest odometry [s]; a "
              "plan less ahead waits until the odometry reaches its t0 (anchor check).",
              minimum=0.0, maximum=10.0),
    ParamSpec("plan.max_speed", FLOAT, _CFG.max_plan_speed,
              "Refuse a plan faster than this anywhere [m/s].", minimum=0.1, maximum=100.0),
    ParamSpec("plan.max_lateral_accel", FLOAT, _CFG.max_plan_lateral_accel,
              "Refuse a plan whose speed x yaw rate exceeds this anywhere, the yaw rate "
              "taken from its yaw array and from the headings of its own path [m/s^2].",
              minimum=0.1, maximum=50.0),
    ParamSpec("plan.max_acceleration", FLOAT, _CFG.max_plan_acceleration,
              "Refuse a plan with a larger |acceleration| anywhere [m/s^2].",
              minimum=0.1, maximum=50.0),
    ParamSpec("plan.max_waypoints", INT, _CFG.max_plan_waypoints,
              "Refuse a plan with more waypoints (checked on the message before any "
              "conversion).", minimum=2, maximum=10000),
    ParamSpec("plan.max_message_bytes", INT, _CFG.max_plan_message_bytes,
              "Refuse a serialized plan larger than this before deserializing it [bytes] "
              "(16 candidates with 4096-token reasoning take about 0.6 MB).",
              minimum=65536, maximum=67108864),
    ParamSpec("plan.max_horizon", FLOAT, _CFG.max_plan_horizon,
              "Refuse a plan whose last waypoint is later than this after t0 [s].",
              minimum=0.1, maximum=600.0),
    ParamSpec("plan.max_motion_mismatch", FLOAT, _CFG.max_plan_motion_mismatch,
              "Refuse a plan whose poses are not where its speeds and yaws lead: each step "
              "within this times its duration of the trapezoid of its end velocities "
              "[m/s].", minimum=0.01, maximum=50.0),
    ParamSpec("plan.max_accel_mismatch", FLOAT, _CFG.max_plan_accel_mismatch,
              "Refuse a plan whose acceleration at a waypoint lies more than this outside "
              "the slopes of its speeds just before and after it [m/s^2].", minimum=0.01,
              maximum=50.0),
    ParamSpec("plan.max_curvature_mismatch", FLOAT, _CFG.max_plan_curvature_mismatch,
              "Refuse a plan whose curvature array differs more than this from the "
              "curvature of its own path [1/m] (the path's curvature itself may not exceed "
              "tan(max wheel angle) / wheelbase).", minimum=0.001, maximum=10.0),
    ParamSpec("stop.deceleration", FLOAT, _CFG.stop_deceleration,
              "Deceleration of a controlled stop [m/s^2].", minimum=0.1, maximum=10.0),
    ParamSpec("stop.standstill_speed", FLOAT, _CFG.standstill_speed,
              "Below this speed a stopped vehicle holds the brake [m/s].", minimum=0.01,
              maximum=2.0),
    ParamSpec("stop.standstill_brake", FLOAT, _CFG.standstill_brake,
              "Brake held at standstill [0..1].", minimum=0.0, maximum=1.0),
    ParamSpec("odometry.max_position_jump", FLOAT, _CFG.max_position_jump,
              "Position change beyond 2 x speed x dt plus this is a jump (teleport, reset) "
              "[m]; the speed counts at most vehicle.max_speed.", minimum=0.1,
              maximum=100.0),
    ParamSpec("odometry.max_yaw_jump", FLOAT, _CFG.max_yaw_jump,
              "Yaw change beyond speed x dt [rad/m x m] plus this is a jump [rad].",
              minimum=0.01, maximum=3.2),
    ParamSpec("odometry.timeout", FLOAT, _CFG.odometry_timeout,
              "No odometry for this long on the node clock: full brake, cause in "
              "/diagnostics [s].", minimum=0.05, maximum=60.0),
)

SIM_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("role_name", STRING, ROLE_NAME, "Role name of the ego vehicle (topic prefix)."),
    ParamSpec("route_file", STRING, "",
              "Route JSON (docs/closed_loop.md); \"\" = the default route of the package."),
    ParamSpec("synchronous_mode", BOOL, True,
              "true: step when the previous step's command arrived (or timed out); false: "
              "step on wall time, one fixed_delta_seconds per fixed_delta_seconds "
              "(real-time mode)."),
    ParamSpec("synchronous_mode_wait_for_vehicle_control_command", BOOL, True,
              "In synchronous mode wait for a vehicle control command after each step "
              "(the bridge's parameter)."),
    ParamSpec("vehicle_control_timeout", FLOAT, 1.0,
              "Wall seconds to wait for that command before stepping anyway (the bridge "
              "waits 1 s); 0 = forever.", minimum=0.0, maximum=3600.0),
    ParamSpec("fixed_delta_seconds", FLOAT, 0.05, "Simulation step [s].", minimum=0.001,
              maximum=1.0),
    ParamSpec("tick_settle.period", FLOAT, 0.0,
              "Synchronous mode: at steps whose time is a multiple of this (the planning "
              "period), publish /clock only tick_settle.wall_time after the step's data, so a "
              "lagging planner takes that data before its tick fires; 0 = off "
              "(docs/closed_loop.md).", minimum=0.0, maximum=60.0),
    ParamSpec("tick_settle.wall_time", FLOAT, 0.1,
              "Wall seconds between a settled step's data and its /clock.", minimum=0.0,
              maximum=10.0),
    ParamSpec("tick_settle.await_acks", BOOL, False,
              "At a settled step (the first step is one), publish /clock also only once "
              "every reliable subscription of the odometry and the cameras acknowledged all "
              "their data (DDS acknowledgements: the data is in the subscriber's queue). "
              "With a planner that subscribes reliably (inputs.reliable) its tick then has "
              "every sample up to the tick, whatever the load, and none is lost to "
              "discovery at the start."),
    ParamSpec("tick_settle.ack_timeout", FLOAT, 10.0,
              "Wall seconds to wait for those acknowledgements; then /clock goes out "
              "with a warning (a subscriber that stopped reading).", minimum=0.0,
              maximum=600.0),
    ParamSpec("duration", FLOAT, 0.0,
              "Sim seconds to run; 0 = until stopped.", minimum=0.0, maximum=86400.0),
    ParamSpec("exit_when_done", BOOL, True,
              "Exit after `duration` (closing the recorded bag)."),
    ParamSpec("initial_speed", FLOAT, 0.0, "Speed at the start [m/s].", minimum=0.0,
              maximum=60.0),
    ParamSpec("start_station", FLOAT, 0.0, "Start on the route at this station [m].",
              minimum=0.0, maximum=100000.0),
    ParamSpec("start_lateral", FLOAT, 0.0, "... and this lateral offset [m, + = left].",
              minimum=-10.0, maximum=10.0),
    ParamSpec("camera_ids", STRING_ARRAY,
              ["cross_left_120fov", "front_wide_120fov", "cross_right_120fov",
               "front_tele_30fov"],
              "Sensor id of each camera: topics /carla/<role_name>/<id>/image and "
              "camera_info.", length=NUM_CAMERAS),
    ParamSpec("camera_indices", INT_ARRAY, list(DEFAULT_CAMERA_INDICES),
              "Alpamayo rig camera of each id (placement and FOV: 120/120/120/30 deg).",
              minimum=0, maximum=6, length=NUM_CAMERAS),
    ParamSpec("camera_width", INT, 320, "Image width [px].", minimum=16, maximum=4096),
    ParamSpec("camera_height", INT, 180, "Image height [px].", minimum=16, maximum=4096),
    ParamSpec("camera_rate", FLOAT, 10.0,
              "Camera rate [Hz] (sensor_tick); the period must be a multiple of the step.",
              minimum=0.1, maximum=100.0),
    ParamSpec("vehicle.wheelbase", FLOAT, 2.85, "Wheelbase [m].", minimum=0.5, maximum=10.0),
    ParamSpec("vehicle.rear_axle_offset_xyz", FLOAT_ARRAY, list(_CFG.rear_axle_offset_xyz),
              "Rear axle in the actor frame [m] (only x is modelled).", minimum=-10.0,
              maximum=10.0, length=3),
    ParamSpec("vehicle.max_wheel_angle_deg", FLOAT, 70.0,
              "Front wheel angle at steer = 1 [deg].", minimum=1.0, maximum=90.0),
    ParamSpec("vehicle.steer_rate_max_deg", FLOAT, 120.0,
              "Fastest wheel angle change [deg/s].", minimum=1.0, maximum=2000.0),
    ParamSpec("vehicle.steer_lag", FLOAT, 0.1, "Steering first-order lag [s].", minimum=0.001,
              maximum=5.0),
    ParamSpec("vehicle.accel_lag", FLOAT, 0.2, "Drive/brake first-order lag [s].",
              minimum=0.001, maximum=5.0),
    ParamSpec("vehicle.full_throttle_accel", FLOAT, 3.0,
              "Acceleration at throttle 1 [m/s^2].", minimum=0.1, maximum=20.0),
    ParamSpec("vehicle.full_brake_decel", FLOAT, 8.0, "Deceleration at brake 1 [m/s^2].",
              minimum=0.1, maximum=30.0),
    ParamSpec("start.min_odometry_subscribers", INT, 0,
              "Before the first step, wait until the odometry has this many matched "
              "subscriptions (the planner's timer must exist before the first /clock).",
              minimum=0, maximum=100),
    ParamSpec("start.min_camera_subscribers", INT, 0,
              "... and every camera image topic this many.", minimum=0, maximum=100),
    ParamSpec("start.timeout", FLOAT, 120.0, "... for at most this many wall seconds.",
              minimum=0.0, maximum=3600.0),
    ParamSpec("start.await_first_command", BOOL, False,
              "Synchronous mode: wait for the first vehicle control command up to "
              "start.timeout instead of vehicle_control_timeout (the controller answers "
              "only once it has discovered this node; a run must not start by stepping "
              "without it)."),
    ParamSpec("record_path", STRING, "",
              "Write a rosbag2 bag here: odometry, commands and record_topics (\"\" = no bag)."),
    ParamSpec("record_topics", STRING_ARRAY,
              ["/" + PLAN_TOPIC, "/" + NAVIGATION_TOPIC, "/diagnostics"],
              "Further topics to record (subscribed as they appear)."),
    ParamSpec("record_storage", STRING, "mcap", "Bag storage.", choices=("mcap", "sqlite3")),
)

ORACLE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("route_file", STRING, "", "Route JSON; \"\" = the default route."),
    ParamSpec("odometry_topic", STRING, f"/carla/{ROLE_NAME}/odometry",
              "nav_msgs/Odometry of the actor origin."),
    ParamSpec("rate_hz", FLOAT, 2.0, "Planning rate on the node clock [Hz] (as the planner).",
              minimum=0.05, maximum=50.0),
    ParamSpec("plan_delay", FLOAT, 0.0,
              "Plan each tick from the odometry this much older (t0 = tick - plan_delay) [s]: "
              "plans reach the controller that old (plan-age tests).", minimum=0.0,
              maximum=5.0),
    ParamSpec("rear_axle_offset_xyz", FLOAT_ARRAY, list(_CFG.rear_axle_offset_xyz),
              "Rear axle in the odometry child frame [m].", minimum=-10.0, maximum=10.0,
              length=3),
    ParamSpec("acceleration", FLOAT, 1.5, "Largest planned acceleration [m/s^2].",
              minimum=0.1, maximum=10.0),
    ParamSpec("deceleration", FLOAT, 2.0, "Largest planned deceleration [m/s^2].",
              minimum=0.1, maximum=10.0),
    ParamSpec("blend_time", FLOAT, 2.0, "Time to blend a lateral offset to the centre [s].",
              minimum=0.1, maximum=6.4),
    ParamSpec("base_frame_id", STRING, "base_link", "frame_id of the t0 base frame."),
)


def topic_names(values: Mapping[str, Any]) -> dict[str, str]:
    """Resolved controller topics (\"\" parameters -> the bridge's /carla/<role>/... names)."""
    role = values["role_name"]
    return {"odometry": values["odometry_topic"] or f"/carla/{role}/odometry",
            "plan": values["plan_topic"],
            "control": values["control_topic"] or f"/carla/{role}/vehicle_control_cmd",
            "ackermann": values["ackermann.topic"] or f"/carla/{role}/ackermann_cmd"}


def controller_config(values: Mapping[str, Any]) -> ControllerConfig:
    """ControllerConfig from validated controller parameters."""
    out = {}
    for name, field_name in CONTROLLER_FIELDS.items():
        value = values[name]
        if name.endswith("_deg"):
            value = math.radians(value)
        out[field_name] = tuple(value) if isinstance(value, list) else value
    return ControllerConfig.from_dict(out)


def controller_cross_checks(values: Mapping[str, Any]) -> list[str]:
    errors = []
    if values["lateral.lookahead_min"] > values["lateral.lookahead_max"]:
        errors.append(f"lateral.lookahead_min {values['lateral.lookahead_min']} > "
                      f"lateral.lookahead_max {values['lateral.lookahead_max']}")
    if not values["role_name"] and not (values["odometry_topic"] and values["control_topic"]):
        errors.append("role_name: have \"\", need a role name or both odometry_topic and "
                      "control_topic")
    return errors


def sim_cross_checks(values: Mapping[str, Any]) -> list[str]:
    errors = []
    step_ns = int(round(values["fixed_delta_seconds"] * 1e9))
    camera_ns = int(round(1e9 / values["camera_rate"]))
    if camera_ns % step_ns:
        errors.append(f"camera_rate: have period {camera_ns} ns, need a multiple of the step "
                      f"{step_ns} ns")
    settle_ns = int(round(values["tick_settle.period"] * 1e9))
    if settle_ns % step_ns:
        errors.append(f"tick_settle.period: have {settle_ns} ns, need a multiple of the step "
                      f"{step_ns} ns")
    ids = values["camera_ids"]
    if len(set(ids)) != len(ids) or not all(ids):
        errors.append(f"camera_ids: have {ids}, need 4 distinct non-empty ids")
    return errors


# Executable -> (its parameter table, its cross-parameter checks or None).
NODE_PARAMETERS: dict[str, tuple[tuple[ParamSpec, ...], Optional[CrossChecks]]] = {
    "controller_node": (CONTROLLER_PARAMETERS, controller_cross_checks),
    "carla_sim": (SIM_PARAMETERS, sim_cross_checks),
    "route_oracle": (ORACLE_PARAMETERS, None),
    "route_navigation": (ROUTE_NAVIGATION_PARAMETERS, None),
}
