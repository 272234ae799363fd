"""ControllerConfig: every number of the tracking controller, validated, ROS-free.

The node's parameter schema (alpamayo_ros/ros/controller_params.py) maps its parameters
one to one onto these fields (test_controller_params.py checks the defaults agree). Units:
metres, seconds, radians, m/s, m/s^2; steer and pedals are CARLA's normalised values.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from alpamayo_ros.core.errors import ConfigError


@dataclass(frozen=True)
class ControllerConfig:
    # Vehicle (of the CARLA blueprint; see docs/closed_loop.md).
    wheelbase: float = 2.85
    max_wheel_angle: float = math.radians(70.0)
    rear_axle_offset_xyz: tuple = (-1.42, 0.0, 0.0)
    full_throttle_accel: float = 3.0
    full_brake_decel: float = 8.0
    max_vehicle_speed: float = 60.0
    # Lateral: pure pursuit on the rear axle.
    lookahead_base: float = 2.0
    lookahead_gain: float = 0.6
    lookahead_min: float = 3.0
    lookahead_max: float = 20.0
    steer_rate_limit: float = 2.0
    # Longitudinal: PI on the planned speed, planned acceleration as feed-forward.
    speed_kp: float = 0.8
    speed_ki: float = 0.2
    speed_integral_limit: float = 5.0
    preview_time: float = 0.2
    brake_deadband: float = 0.15
    throttle_rate_limit: float = 2.0
    # Plans.
    max_plan_age: float = 1.0
    max_anchor_error: float = 2.0
    max_t0_ahead: float = 0.2
    max_plan_speed: float = 40.0
    max_plan_lateral_accel: float = 6.0
    max_plan_acceleration: float = 10.0
    max_plan_waypoints: int = 256
    max_plan_message_bytes: int = 1 << 20
    max_plan_horizon: float = 20.0
    max_plan_motion_mismatch: float = 2.0
    max_plan_accel_mismatch: float = 2.0
    max_plan_curvature_mismatch: float = 0.05
    # Stops.
    stop_deceleration: float = 3.0
    standstill_speed: float = 0.2
    standstill_brake: float = 0.5
    # Odometry.
    max_position_jump: float = 2.0
    max_yaw_jump: float = 0.5
    odometry_timeout: float = 0.5

    def __post_init__(self) -> None:
        errors = []
        positive = ("wheelbase", "max_wheel_angle", "full_throttle_accel", "full_brake_decel",
                    "lookahead_min", "lookahead_max", "steer_rate_limit",
                    "throttle_rate_limit", "max_plan_age", "max_anchor_error",
                    "max_plan_speed", "max_plan_lateral_accel", "max_plan_acceleration",
                    "max_plan_waypoints", "max_plan_message_bytes", "max_plan_horizon",
                    "max_plan_motion_mismatch",
                    "max_plan_accel_mismatch", "max_plan_curvature_mismatch",
                    "max_vehicle_speed",
                    "stop_deceleration", "standstill_speed", "max_position_jump",
                    "max_yaw_jump", "odometry_timeout")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                errors.append(f"{name}: have {value!r}, need a finite number > 0")
        for name, least in (("max_plan_waypoints", 2), ("max_plan_message_bytes", 1)):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= least):
                errors.append(f"{name}: have {value!r}, need an integer >= {least}")
        if self.lookahead_min > self.lookahead_max:
            errors.append(f"lookahead_min {self.lookahead_min} > lookahead_max "
                          f"{self.lookahead_max}")
        if len(tuple(self.rear_axle_offset_xyz)) != 3:
            errors.append(f"rear_axle_offset_xyz: have {self.rear_axle_offset_xyz!r}, need 3 "
                          "numbers")
        if not 0.0 <= self.standstill_brake <= 1.0:
            errors.append(f"standstill_brake: have {self.standstill_brake}, need 0..1")
        if errors:
            raise ConfigError("invalid controller configuration:\n  " + "\n  ".join(errors))
        object.__setattr__(self, "rear_axle_offset_xyz",
                           tuple(float(v) for v in self.rear_axle_offset_xyz))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ControllerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown controller settings {unknown}; have {sorted(known)}")
        return cls(**dict(values))

    @property
    def max_path_curvature(self) -> float:
        """Tightest curvature the car can drive [1/m]: tan(max wheel angle) / wheelbase."""
        return math.tan(min(self.max_wheel_angle, math.radians(89.0))) / self.wheelbase

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
