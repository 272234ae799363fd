"""Kinematic bicycle on the rear axle with actuator lag and limits, driven by CARLA commands.

Command -> wanted wheel angle (steer + = right, so angle = -steer * max_wheel_angle) and
wanted acceleration (throttle * full_throttle_accel - brake * full_brake_decel minus
rolling resistance and aerodynamic drag while moving). Each actuator follows its wanted
value as a first-order lag (time constants steer_lag, accel_lag), the wheel also at most
steer_rate_max. Motion over one step is the exact arc of the rear axle at constant
curvature tan(angle) / wheelbase with constant acceleration; speed stops at 0 (no
reverse: CARLA's reverse gear is not modelled, a reverse command only brakes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from alpamayo_ros.core.errors import ConfigError


@dataclass(frozen=True)
class VehicleParams:
    """Geometry and actuators [m, s, rad, m/s^2]; rear_axle_offset_x: rear axle position
    along the actor's x axis (negative: behind the actor origin)."""

    wheelbase: float = 2.85
    rear_axle_offset_x: float = -1.42
    max_wheel_angle: float = math.radians(70.0)
    steer_rate_max: float = math.radians(120.0)
    steer_lag: float = 0.1
    accel_lag: float = 0.2
    full_throttle_accel: float = 3.0
    full_brake_decel: float = 8.0
    rolling_decel: float = 0.1
    drag_coefficient: float = 0.0005  # deceleration per (m/s)^2

    def __post_init__(self) -> None:
        for name in ("wheelbase", "max_wheel_angle", "steer_rate_max", "steer_lag",
                     "accel_lag", "full_throttle_accel", "full_brake_decel"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"vehicle {name}: have {value!r}, need a finite number > 0")


@dataclass(frozen=True)
class VehicleState:
    """The one vehicle state of the simulators: rear-axle pose (x, y [m], yaw [rad]) in the
    world frame, speed [m/s], actual acceleration [m/s^2], wheel angle [rad, + = left],
    path curvature [1/m, + = left] and the height z [m] of the (flat) ground.

    KinematicBicycle fills every field (the curvature of its wheel angle); the scripted
    motion of sim/scenario.py fills the pose, speed, acceleration and curvature and leaves
    the wheel angle (it has no steering) at 0.
    """

    x: float
    y: float
    yaw: float
    speed: float = 0.0
    acceleration: float = 0.0
    wheel_angle: float = 0.0
    curvature: float = 0.0
    z: float = 0.0

    @property
    def xyz(self) -> np.ndarray:
        """(3,) position [m]."""
        return np.array([self.x, self.y, self.z])

    @property
    def quat_xyzw(self) -> np.ndarray:
        """(4,) orientation, a rotation about z by yaw (scipy order)."""
        return np.array([0.0, 0.0, math.sin(0.5 * self.yaw), math.cos(0.5 * self.yaw)])

    @property
    def yaw_rate(self) -> float:
        """[rad/s] of the motion along the curvature."""
        return self.speed * self.curvature


class KinematicBicycle:
    """Steps a VehicleState under a held command (see module docstring)."""

    def __init__(self, params: VehicleParams) -> None:
        self.params = params

    def wanted(self, state: VehicleState, throttle: float, brake: float, steer: float,
               reverse: bool = False) -> tuple[float, float]:
        """(wanted wheel angle, wanted acceleration) of a command."""
        p = self.params
        throttle = float(np.clip(throttle, 0.0, 1.0)) if not reverse else 0.0
        brake = float(np.clip(brake, 0.0, 1.0)) if not reverse else max(brake, throttle)
        angle = -float(np.clip(steer, -1.0, 1.0)) * p.max_wheel_angle
        accel = throttle * p.full_throttle_accel - brake * p.full_brake_decel
        if state.speed > 1e-3:
            accel -= p.rolling_decel + p.drag_coefficient * state.speed ** 2
        return angle, accel

    def yaw_rate(self, state: VehicleState) -> float:
        return state.speed * math.tan(state.wheel_angle) / self.params.wheelbase

    def step(self, state: VehicleState, throttle: float, brake: float, steer: float,
             dt: float, reverse: bool = False) -> VehicleState:
        p = self.params
        want_angle, want_accel = self.wanted(state, throttle, brake, steer, reverse)
        # First-order lags, exact for a held input over dt.
        k_steer = 1.0 - math.exp(-dt / p.steer_lag)
        k_accel = 1.0 - math.exp(-dt / p.accel_lag)
        delta = (want_angle - state.wheel_angle) * k_steer
        max_delta = p.steer_rate_max * dt
        angle = float(np.clip(state.wheel_angle + np.clip(delta, -max_delta, max_delta),
                              -p.max_wheel_angle, p.max_wheel_angle))
        accel = float(np.clip(state.acceleration + (want_accel - state.acceleration) * k_accel,
                              -p.full_brake_decel - p.rolling_decel, p.full_throttle_accel))
        if state.speed <= 0.0 and accel < 0.0:
            # Standing: brakes and resistance hold the car; no rolling backwards.
            return replace(state, speed=0.0, acceleration=0.0, wheel_angle=angle,
                           curvature=math.tan(angle) / p.wheelbase)
        tau = dt
        if state.speed + accel * dt < 0.0:
            tau = state.speed / -accel  # stops inside the step
        kappa = math.tan(angle) / p.wheelbase
        s = state.speed * tau + 0.5 * accel * tau * tau
        half = 0.5 * kappa * s
        chord = s * float(np.sinc(half / math.pi))  # exact arc, stable as kappa -> 0
        x = state.x + chord * math.cos(state.yaw + half)
        y = state.y + chord * math.sin(state.yaw + half)
        speed = max(state.speed + accel * tau, 0.0)
        return VehicleState(x=x, y=y, yaw=state.yaw + kappa * s, speed=speed,
                            acceleration=accel if speed > 0.0 else 0.0, wheel_angle=angle,
                            curvature=kappa, z=state.z)

    def actor_origin(self, state: VehicleState) -> tuple[float, float]:
        """World position of the actor origin (the point CARLA's odometry reports)."""
        back = -self.params.rear_axle_offset_x
        return (state.x + back * math.cos(state.yaw), state.y + back * math.sin(state.yaw))

    def from_actor_origin(self, x: float, y: float, yaw: float, speed: float = 0.0
                          ) -> VehicleState:
        back = -self.params.rear_axle_offset_x
        return VehicleState(x=x - back * math.cos(yaw), y=y - back * math.sin(yaw), yaw=yaw,
                            speed=speed)
