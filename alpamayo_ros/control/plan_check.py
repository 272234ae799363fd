"""Checks of a plan on what the controller will follow: its poses, and whether a car can drive
them. ROS-free; every limit is a ControllerConfig field (node parameters `plan.*`).

All checks work on the plan's t0-frame samples (the t0 pose prepended as sample 0, with v0),
in this order; the first that fails refuses the plan, its PlanRejected.kind naming the check:
  size          at most max_plan_message_bytes serialized (check_message_size, before
                deserializing), max_plan_waypoints waypoints (check_sizes runs on the
                message's array lengths before anything is converted) and max_plan_horizon
                seconds;
  speed         every |speed| (v0 included) at most max_plan_speed;
  acceleration  every |acceleration| at most max_plan_acceleration, and each within
                max_plan_accel_mismatch of the slope of the speed profile on one side of it
                (producers give the acceleration of the step ending or of the step starting
                at a waypoint), so the feed-forward never asks for more than the speeds do;
  range         every pose within (max_plan_speed + max_plan_motion_mismatch) x its time of
                the t0 pose (no huge coordinate reaches the geometry);
  motion        each step between consecutive samples within max_plan_motion_mismatch x dt
                of the trapezoid of its two end velocities (speed along yaw): the spacing
                agrees with the speeds and the path with the yaws;
  lateral_acceleration  speed x yaw rate at most max_plan_lateral_accel, the yaw rate taken
                both from the yaw array (between waypoints: the yaw at t0 is the vehicle's
                measured heading) and from the headings of the path's own steps;
  curvature     the heading change per metre of the path's own steps at most the tightest
                curvature the car can drive (ControllerConfig.max_path_curvature), and the
                curvature array, where given, within max_plan_curvature_mismatch of it.
Steps shorter than _MIN_STEP_M have no reliable heading (standing, creeping) and are left out
of the geometric heading checks; the motion check still covers them.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from alpamayo_ros.control.config import ControllerConfig
from alpamayo_ros.control.reference_plan import PlanRejected, ReferencePlan

# Steps shorter than this [m] give no heading (0.5 m/s over 0.1 s).
_MIN_STEP_M = 0.05
# The curvature array is compared where both steps of a corner are at least this long [m]:
# below, a corner of two short chords does not resolve a curvature that changes within
# them (the car's curvature limit still applies there).
_MIN_CURVATURE_STEP_M = 0.2


def check_message_size(size_bytes: int, max_bytes: int) -> None:
    """Raise PlanRejected (kind "size") for a serialized plan larger than max_bytes; meant
    for the raw message, before it is deserialized."""
    if size_bytes > max_bytes:
        raise PlanRejected(f"plan message of {size_bytes} bytes, more than "
                           f"max_plan_message_bytes {max_bytes} (not deserialized)", kind="size")


def check_sizes(lengths: Mapping[str, int], max_waypoints: int) -> None:
    """Raise PlanRejected (kind "size") when an array is longer than max_waypoints; meant
    for the raw message, before any conversion."""
    for name, count in lengths.items():
        if count > max_waypoints:
            raise PlanRejected(f"plan has {count} {name}, more than max_plan_waypoints "
                               f"{max_waypoints}", kind="size")


def check_plan(plan: ReferencePlan, cfg: ControllerConfig) -> None:
    """Raise PlanRejected naming the first failed check (module docstring)."""
    with np.errstate(all="ignore"):  # overflows show up as non-finite, which fail below
        _check(plan, cfg)


def _first_above(values: np.ndarray, limit) -> Optional[int]:
    """Index of the first value above limit (NaN counts as above), None when none is."""
    bad = ~(np.asarray(values) <= limit)
    return int(np.argmax(bad)) if bad.any() else None


def _outside(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """How far each value lies outside [low, high] (0 inside)."""
    return np.maximum(np.maximum(low - values, values - high), 0.0)


def _check(plan: ReferencePlan, cfg: ControllerConfig) -> None:
    t, xy, yaw = plan.times_s, plan.local_xy, np.unwrap(plan.local_yaw)
    v, a = plan.speeds, plan.accelerations
    n = len(t) - 1

    def refuse(kind: str, k: int, text: str) -> None:
        raise PlanRejected(f"{text} at t0 + {t[k]:.2f} s", kind=kind)

    check_sizes({"waypoints": n}, cfg.max_plan_waypoints)
    if not t[-1] <= cfg.max_plan_horizon:
        raise PlanRejected(f"plan horizon {t[-1]:.3g} s above max_plan_horizon "
                           f"{cfg.max_plan_horizon:g} s", kind="size")
    k = _first_above(np.abs(v), cfg.max_plan_speed)
    if k is not None:
        refuse("speed", k, f"speed {abs(v[k]):.1f} m/s above max_plan_speed "
               f"{cfg.max_plan_speed:g} m/s")
    k = _first_above(np.abs(a[1:]), cfg.max_plan_acceleration)  # a[0] repeats a[1]
    if k is not None:
        k += 1
        refuse("acceleration", k, f"acceleration {abs(a[k]):.3g} m/s^2 above "
               f"max_plan_acceleration {cfg.max_plan_acceleration:g} m/s^2")
    dt = np.diff(t)
    slope = np.diff(v) / dt                                   # step i: sample i -> i + 1
    after = np.concatenate([slope[1:], slope[-1:]])           # the step starting there
    low, high = np.minimum(slope, after), np.maximum(slope, after)
    k = _first_above(_outside(a[1:], low, high), cfg.max_plan_accel_mismatch)
    if k is not None:
        refuse("acceleration", k + 1, f"acceleration {a[k + 1]:.2f} m/s^2 disagrees with the "
               f"speed profile (slope {low[k]:.2f} .. {high[k]:.2f} m/s^2, "
               f"max_plan_accel_mismatch {cfg.max_plan_accel_mismatch:g} m/s^2)")
    distance = np.hypot(xy[:, 0], xy[:, 1])
    reach = (cfg.max_plan_speed + cfg.max_plan_motion_mismatch) * t + 1e-3
    k = _first_above(distance - reach, 0.0)
    if k is not None:
        refuse("range", k, f"pose {distance[k]:.3g} m from the t0 pose, farther than "
               f"{reach[k]:.1f} m (max_plan_speed + max_plan_motion_mismatch times its time)")
    step = np.diff(xy, axis=0)
    velocity = v[:, None] * np.stack([np.cos(yaw), np.sin(yaw)], axis=1)
    expected = 0.5 * dt[:, None] * (velocity[:-1] + velocity[1:])
    mismatch = np.hypot(*(step - expected).T) / dt
    k = _first_above(mismatch, cfg.max_plan_motion_mismatch)
    if k is not None:
        refuse("motion", k + 1, f"poses disagree with speed and yaw: the step moves "
               f"{np.hypot(*step[k]):.2f} m, speed and yaw say {np.hypot(*expected[k]):.2f} m "
               f"at heading {np.degrees(np.arctan2(expected[k][1], expected[k][0])):.0f} deg "
               f"({mismatch[k]:.2f} m/s off, max_plan_motion_mismatch "
               f"{cfg.max_plan_motion_mismatch:g} m/s)")
    # Between waypoints only: the yaw at t0 is the vehicle's measured heading, which may
    # differ from the direction the plan leaves in (the motion check bounds that).
    lateral = np.abs(v[2:] * np.diff(yaw[1:]) / dt[1:])
    k = _first_above(lateral, cfg.max_plan_lateral_accel)
    if k is not None:
        refuse("lateral_acceleration", k + 2, f"lateral acceleration {lateral[k]:.1f} m/s^2 "
               f"(speed x yaw rate) above max_plan_lateral_accel "
               f"{cfg.max_plan_lateral_accel:g} m/s^2")
    _check_path_geometry(plan, cfg, step, dt, refuse)


def _check_path_geometry(plan: ReferencePlan, cfg: ControllerConfig, step: np.ndarray,
                         dt: np.ndarray, refuse) -> None:
    """Lateral acceleration and curvature from the headings of the path's own steps."""
    t, v = plan.times_s, np.abs(plan.speeds)
    length = np.hypot(step[:, 0], step[:, 1])
    moving = np.flatnonzero(length >= _MIN_STEP_M)
    if len(moving) < 2:
        return
    first, second = moving[:-1], moving[1:]                   # consecutive moving steps
    heading = np.arctan2(step[moving, 1], step[moving, 0])
    turn = np.remainder(np.diff(heading) + np.pi, 2.0 * np.pi) - np.pi
    mid_time = t[moving] + 0.5 * dt[moving]
    arc_start = np.concatenate([[0.0], np.cumsum(length)])
    mid_arc = arc_start[moving] + 0.5 * length[moving]
    corner = second                                           # sample where `second` starts
    speed = np.maximum(v[first + 1], v[corner])
    lateral = speed * np.abs(turn) / np.diff(mid_time)
    k = _first_above(lateral, cfg.max_plan_lateral_accel)
    if k is not None:
        refuse("lateral_acceleration", int(corner[k]),
               f"lateral acceleration {lateral[k]:.1f} m/s^2 of the path's own geometry "
               f"(speed x heading rate of its steps) above max_plan_lateral_accel "
               f"{cfg.max_plan_lateral_accel:g} m/s^2")
    curvature = turn / np.diff(mid_arc)
    k = _first_above(np.abs(curvature), cfg.max_path_curvature)
    if k is not None:
        refuse("curvature", int(corner[k]),
               f"path curvature {abs(curvature[k]):.3g} 1/m above what the car can drive "
               f"({cfg.max_path_curvature:.3g} 1/m: tan(max wheel angle) / wheelbase)")
    given = plan.curvature
    if given is None:
        return
    adjacent = ((second == first + 1) & (length[first] >= _MIN_CURVATURE_STEP_M)
                & (length[second] >= _MIN_CURVATURE_STEP_M))
    j = corner[adjacent]                                      # samples 1 .. n - 1
    both = np.stack([given[j - 1], given[j]])                 # curvature of waypoints j, j+1
    low, high = both.min(axis=0), both.max(axis=0)
    geo = curvature[adjacent]
    k = _first_above(_outside(geo, low, high), cfg.max_plan_curvature_mismatch)
    if k is not None:
        refuse("curvature", int(j[k]),
               f"curvature array ({low[k]:.3g} .. {high[k]:.3g} 1/m) disagrees with the "
               f"path's own curvature {geo[k]:.3g} 1/m (max_plan_curvature_mismatch "
               f"{cfg.max_plan_curvature_mismatch:g} 1/m)")
