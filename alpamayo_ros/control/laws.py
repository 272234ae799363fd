"""The control laws: pure pursuit on the rear axle, a PI speed loop with the planned
acceleration as feed-forward, and the mapping to CARLA's throttle/brake/steer.

Conventions: angles in rad, + = left (REP-103); CARLA's steer is + = right, so a left
wheel angle is a negative steer value. Nothing here keeps time itself: callers pass dt.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def lookahead_distance(speed: float, base_m: float, gain_s: float, min_m: float,
                       max_m: float) -> float:
    """Speed-dependent lookahead [m]: base + gain * |speed|, clamped to [min, max]."""
    return float(np.clip(base_m + gain_s * abs(speed), min_m, max_m))


def pure_pursuit_angle(rear_axle_xy, yaw: float, target_xy, wheelbase_m: float) -> float:
    """Front wheel angle [rad, + = left] of the arc from the rear axle (tangent to the
    heading) through the target point: atan(2 L sin(alpha) / d), alpha the bearing of the
    target in the vehicle frame and d its distance."""
    dx, dy = np.asarray(target_xy, dtype=np.float64) - np.asarray(rear_axle_xy, np.float64)
    distance = math.hypot(dx, dy)
    if distance < 1e-6:
        return 0.0
    alpha = math.atan2(dy, dx) - yaw
    return math.atan2(2.0 * wheelbase_m * math.sin(alpha), distance)


def wheel_angle_to_steer(angle_rad: float, max_wheel_angle_rad: float) -> float:
    """Wheel angle (+ = left) -> CARLA steer in [-1, 1] (+ = right)."""
    return float(np.clip(-angle_rad / max_wheel_angle_rad, -1.0, 1.0))


def steer_to_wheel_angle(steer: float, max_wheel_angle_rad: float) -> float:
    """CARLA steer (+ = right) -> wheel angle [rad, + = left]."""
    return -float(np.clip(steer, -1.0, 1.0)) * max_wheel_angle_rad


def rate_limit(previous: float, wanted: float, max_rate_per_s: float, dt_s: float) -> float:
    """Move from previous towards wanted by at most max_rate * dt (a slew limiter: one clip,
    scipy's filters would need a state of their own for this). A non-finite wanted value
    keeps previous, so a limiter's state never becomes non-finite."""
    if not math.isfinite(wanted):
        return float(previous) if math.isfinite(previous) else 0.0
    if not math.isfinite(previous):
        return float(wanted)
    step = max_rate_per_s * max(dt_s, 0.0)
    return float(np.clip(wanted, previous - step, previous + step))


@dataclass
class SpeedPI:
    """a_cmd = a_ref + kp (v_ref - v) + ki * integral; the integral stops growing while the
    output saturates (conditional integration anti-windup) and is clamped to +-limit. A
    non-finite input leaves the integral as it is (the output is then non-finite, which the
    caller's guard catches)."""

    kp: float
    ki: float
    integral_limit: float
    integral: float = 0.0

    def update(self, v_ref: float, v: float, a_ref: float, dt_s: float, a_min: float,
               a_max: float) -> float:
        error = v_ref - v
        unclamped = a_ref + self.kp * error + self.ki * self.integral
        saturated_high = unclamped >= a_max and error > 0
        saturated_low = unclamped <= a_min and error < 0
        if (dt_s > 0 and math.isfinite(error * dt_s) and math.isfinite(unclamped)
                and not (saturated_high or saturated_low)):
            self.integral = float(np.clip(self.integral + error * dt_s,
                                          -self.integral_limit, self.integral_limit))
        return float(np.clip(a_ref + self.kp * error + self.ki * self.integral, a_min, a_max))

    def reset(self) -> None:
        self.integral = 0.0


def acceleration_to_pedals(accel: float, full_throttle_accel: float, full_brake_decel: float,
                           brake_deadband: float) -> tuple[float, float]:
    """(throttle, brake) in [0, 1] for a wanted acceleration [m/s^2]: linear maps with the
    acceleration of full throttle and the deceleration of full brake; decelerations
    smaller than the deadband coast (drag and rolling resistance brake a little)."""
    if accel >= 0.0:
        return float(min(accel / full_throttle_accel, 1.0)), 0.0
    if -accel <= brake_deadband:
        return 0.0, 0.0
    return 0.0, float(min(-accel / full_brake_decel, 1.0))
