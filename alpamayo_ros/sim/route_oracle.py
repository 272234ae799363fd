"""RouteOracle: the plan a perfect planner would make from the route (controller regressions).

From the rear-axle pose and speed at t0: the station on the route, a speed profile that
follows the route's target speed (limits, lowered ahead of lower limits and the route's
end) with bounded acceleration and deceleration, and a path along the centre line that
starts at the vehicle's lateral offset and blends it to zero over blend_time. It stops
at the route's end or, with an obstacle in its lane first, with its front STOP_GAP_M
before that obstacle (sim/obstacles.py). Output in
the t0 frame at t0 + 0.1 .. 6.4 s, as the planner's PlannerOutput candidate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alpamayo_ros.core.geometry import Pose, to_local_frame
from alpamayo_ros.core.types import WAYPOINT_OFFSETS
from alpamayo_ros.sim.obstacles import VEHICLE_BOX, stop_station
from alpamayo_ros.sim.route import Route

# Internal integration step of the speed profile [s] (0.1 s waypoints are every 4th).
_DT = 0.025


@dataclass(frozen=True)
class OraclePlan:
    """Waypoints in the t0 frame: offsets (64,) [s], xyz (64, 3), yaw (64,), speed,
    acceleration, curvature (64,); t0_pose: rear-axle pose at t0 (odometry frame); v0."""

    offsets: np.ndarray
    xyz: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    acceleration: np.ndarray
    curvature: np.ndarray
    t0_pose: Pose
    v0: float


class RouteOracle:
    """acceleration / deceleration [m/s^2]: limits of the speed profile; blend_time [s];
    rear_axle_offset_x: the rear axle on the actor's x axis [m] (where the vehicle's front
    is, for stopping before obstacles)."""

    def __init__(self, route: Route, acceleration: float = 1.5, deceleration: float = 2.0,
                 blend_time: float = 2.0, rear_axle_offset_x: float = -1.42) -> None:
        self.route = route
        self.acceleration = acceleration
        self.deceleration = deceleration
        self.blend_time = blend_time
        # Station of the rear axle where the plan stops.
        self.stop_station = stop_station(route.length, route.obstacles,
                                         VEHICLE_BOX.front_from(rear_axle_offset_x))

    def plan(self, x: float, y: float, yaw: float, speed: float) -> OraclePlan:
        offsets = np.asarray(WAYPOINT_OFFSETS, dtype=np.float64)
        n_int = int(round(offsets[-1] / _DT))
        proj = self.route.project([[x, y]])
        s0, e0 = float(proj.s[0]), float(proj.lateral[0])
        s, v = s0, max(float(speed), 0.0)
        v_start = v
        times = np.arange(n_int + 1) * _DT
        stations, speeds, accels = [s], [v], [0.0]
        for _ in range(n_int):
            # Follow the target speed (a braking curve at `deceleration` ahead of lower
            # limits) within one step; a quarter more braking keeps up with the curve.
            target = float(self.route.target_speed(s + v * _DT, self.deceleration,
                                                   stop_station=self.stop_station)[0])
            a = float(np.clip((target - v) / _DT, -1.25 * self.deceleration,
                              self.acceleration))
            if v + a * _DT < 0.0:
                a = -v / _DT
            s += v * _DT + 0.5 * a * _DT * _DT
            v += a * _DT
            stations.append(s)
            speeds.append(v)
            accels.append(a)
        stations, speeds, accels = map(np.asarray, (stations, speeds, accels))
        xy, heading = self.route.pose_at(stations)
        # Lateral offset blended to zero with a smoothstep over blend_time.
        u = np.clip(times / self.blend_time, 0.0, 1.0)
        lateral = e0 * (1.0 - u * u * (3.0 - 2.0 * u))
        xy = xy + np.stack([-np.sin(heading), np.cos(heading)], axis=1) * lateral[:, None]
        beyond = stations >= self.route.length  # past the route's end: keep going straight
        if np.any(beyond):
            end_xy, end_heading = self.route.pose_at([self.route.length])
            extra = stations[beyond] - self.route.length
            xy[beyond] = end_xy + extra[:, None] * np.array([math.cos(end_heading[0]),
                                                               math.sin(end_heading[0])])
        # Heading from the path itself (so it includes the blend); standing: route heading.
        d = np.gradient(xy, axis=0)
        moving = np.hypot(d[:, 0], d[:, 1]) > 1e-6
        path_heading = np.where(moving, np.arctan2(d[:, 1], d[:, 0]), heading)
        path_heading = np.unwrap(path_heading)
        pick = np.round(offsets / _DT).astype(int)
        t0_pose = Pose.from_xyz_rpy((x, y, 0.0), (0.0, 0.0, yaw))
        xyz_odom = np.column_stack([xy[pick], np.zeros(len(pick))])
        cos, sin = np.cos(path_heading[pick]), np.sin(path_heading[pick])
        rot = np.zeros((len(pick), 3, 3))
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 2, 2] = cos, -sin, 1.0
        rot[:, 1, 0], rot[:, 1, 1] = sin, cos
        xyz_t0, _ = to_local_frame(xyz_odom, rot, t0_pose)
        yaw_t0 = path_heading[pick] - yaw
        ds = np.hypot(d[:, 0], d[:, 1])  # along the path itself (the blend included)
        curvature = np.where(ds > 1e-6, np.gradient(path_heading) / np.maximum(ds, 1e-6), 0.0)
        return OraclePlan(offsets=offsets, xyz=xyz_t0, yaw=yaw_t0, speed=speeds[pick],
                          acceleration=accels[pick], curvature=curvature[pick],
                          t0_pose=t0_pose, v0=v_start)
