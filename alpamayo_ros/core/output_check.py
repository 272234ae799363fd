"""Sanity checks of predicted trajectories (t0 frame), so a bad plan is never silently OK.

A standing start inside the history makes the model's v0 fit ill-conditioned and random
or broken weights give nonsense; these checks catch what the consumer could not:
  * every array finite and of the expected shape;
  * the first waypoint (t0 + 0.1 s) at a distance that agrees with |v0| * 0.1 s within
    abs_tolerance + rel_tolerance * |v0| * 0.1 s;
  * total motion against the heading ("backwards") at most max_backward_motion;
  * a physically possible profile: |v0|, every |speed| and the speed implied by
    consecutive waypoints at most max_speed, every |acceleration| at most max_acceleration.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alpamayo_ros.core.types import NUM_WAYPOINTS, WAYPOINT_DT, TrajectorySample


@dataclass(frozen=True)
class OutputCheckLimits:
    """Thresholds: first_waypoint_abs_tolerance [m], first_waypoint_rel_tolerance [-],
    max_backward_motion [m], max_speed [m/s], max_acceleration [m/s^2]."""

    first_waypoint_abs_tolerance: float = 0.3
    first_waypoint_rel_tolerance: float = 0.3
    max_backward_motion: float = 0.5
    max_speed: float = 70.0
    max_acceleration: float = 20.0


def backward_motion(xyz: np.ndarray, yaw: np.ndarray) -> float:
    """Distance travelled against the heading [m], summed over steps from the origin.

    Step i goes from waypoint i-1 (the origin, heading 0, for i = 0) to waypoint i; its
    progress is the step projected on the heading at its start; negative parts add up.
    """
    points = np.vstack([np.zeros((1, 2)), xyz[:, :2]])
    headings = np.concatenate([[0.0], yaw[:-1]])
    steps = np.diff(points, axis=0)
    progress = steps[:, 0] * np.cos(headings) + steps[:, 1] * np.sin(headings)
    return float(-progress[progress < 0].sum())


def check_sample(sample: TrajectorySample, v0: float, limits: OutputCheckLimits) -> str:
    """Return "" when the sample passes, else the reason of the first failed check."""
    arrays = {"xyz": (sample.xyz, (NUM_WAYPOINTS, 3)),
              "rot": (sample.rot, (NUM_WAYPOINTS, 3, 3)),
              "yaw": (sample.yaw, (NUM_WAYPOINTS,)),
              "speed": (sample.speed, (NUM_WAYPOINTS,)),
              "acceleration": (sample.acceleration, (NUM_WAYPOINTS,)),
              "curvature": (sample.curvature, (NUM_WAYPOINTS,))}
    for name, (value, shape) in arrays.items():
        value = np.asarray(value)
        if value.shape != shape:
            return f"{name} has shape {value.shape}, need {shape}"
        bad = int(np.count_nonzero(~np.isfinite(value)))
        if bad:
            return f"{name} has {bad} non-finite values"
    if not np.isfinite(v0):
        return f"v0 is not finite ({v0})"
    if abs(v0) > limits.max_speed:
        return f"|v0| {abs(v0):.2f} m/s exceeds max_speed {limits.max_speed:g} m/s"
    xyz, yaw = np.asarray(sample.xyz), np.asarray(sample.yaw)  # a backend may give lists
    points = np.vstack([np.zeros((1, 3)), np.asarray(xyz, dtype=np.float64)])
    profile = (("speed", np.abs(np.asarray(sample.speed, dtype=np.float64)),
                limits.max_speed, "m/s", "max_speed"),
               ("waypoint step speed",
                np.linalg.norm(np.diff(points, axis=0), axis=1) / WAYPOINT_DT,
                limits.max_speed, "m/s", "max_speed"),
               ("acceleration", np.abs(np.asarray(sample.acceleration, dtype=np.float64)),
                limits.max_acceleration, "m/s^2", "max_acceleration"))
    for name, values, limit, unit, param in profile:
        if float(values.max()) > limit:
            k = int(np.argmax(values))
            return (f"{name} {values[k]:.2f} {unit} at waypoint {k} exceeds {param} "
                    f"{limit:g} {unit}")
    expected = abs(v0) * WAYPOINT_DT
    first = float(np.hypot(xyz[0, 0], xyz[0, 1]))
    allowed = limits.first_waypoint_abs_tolerance + limits.first_waypoint_rel_tolerance * expected
    if abs(first - expected) > allowed:
        return (f"first waypoint is {first:.3f} m from the origin, expected "
                f"{expected:.3f} m (|v0| {abs(v0):.2f} m/s x {WAYPOINT_DT} s) +- {allowed:.3f} m")
    backwards = backward_motion(xyz, yaw)
    if backwards > limits.max_backward_motion:
        return (f"moves {backwards:.3f} m backwards (max_backward_motion "
                f"{limits.max_backward_motion:g} m)")
    return ""
