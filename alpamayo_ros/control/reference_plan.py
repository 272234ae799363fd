"""A planner output anchored in the odometry frame, interpolated in time and along its path.

The planner gives waypoints in the rear-axle base frame at t0 (the t0 frame) at times
t0 + 0.1 .. 6.4 s, and the base pose at t0 in the odometry frame. Anchoring uses that t0
pose, never the vehicle's current pose (re-anchoring at the current pose shifts the whole
path by latency x speed). The base pose at t0 itself (origin of the t0 frame, the speed v0)
is prepended as the sample at time 0, so the plan is defined from t0 on.

Interpolation in time (`state_at`): linear in position, speed and acceleration (np.interp;
the waypoints are 0.1 s apart, finer than any control step needs), yaw unwrapped first.
Along the path (`project`, `point_at_distance`): the waypoints as a polyline.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from alpamayo_ros.core.errors import AlpamayoError
from alpamayo_ros.core.geometry import Pose, from_local_frame
from alpamayo_ros.core.types import NS_PER_S


class PlanRejected(AlpamayoError, ValueError):
    """A plan cannot be tracked (non-finite values, inconsistent arrays, ...); says why.
    kind names the failed check (counted per kind in /diagnostics)."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class PlanSample:
    """The plan at one time: position (2,) [m] and yaw [rad] in the odometry frame, speed
    [m/s], acceleration [m/s^2]; beyond_horizon when the time is after the last waypoint
    (the values are then those of the last waypoint)."""

    position: np.ndarray
    yaw: float
    speed: float
    acceleration: float
    beyond_horizon: bool


@dataclass(frozen=True)
class PathPoint:
    """A point on the plan's path: arc length s [m] from the t0 pose, position (2,) and the
    heading of the path there [rad]; lateral: signed distance of a projected point from
    the path [m], + = left of the path."""

    s: float
    position: np.ndarray
    heading: float
    lateral: float = 0.0


class ReferencePlan:
    """One tracked plan in the odometry frame (see module docstring).

    t0_ns: header stamp of the plan; tick_ns: the planning tick it answers;
    t0_pose: base pose at t0 in the odometry frame; offsets_s (N,) strictly increasing
    waypoint times after t0 [s]; xyz_t0 (N, 3) waypoints in the t0 frame; yaw_t0 (N,)
    their heading in the t0 frame [rad]; speed (N,) [m/s]; acceleration (N,) [m/s^2];
    v0: speed at t0 [m/s] (NaN: the first waypoint's speed is used); curvature (N,) [1/m]
    or None (not given). Raises PlanRejected for arrays that cannot describe a trajectory;
    whether a car can follow it is control.plan_check's part.

    The t0-frame samples (t0 origin prepended) are kept as local_xy (N+1, 2), local_yaw,
    speeds, accelerations and times_s for the checks.
    """

    def __init__(self, *, t0_ns: int, tick_ns: int, odom_frame_id: str, t0_pose: Pose,
                 offsets_s, xyz_t0, yaw_t0, speed, acceleration, v0: float = float("nan"),
                 curvature=None) -> None:
        offsets = np.asarray(offsets_s, dtype=np.float64).reshape(-1)
        xyz = np.asarray(xyz_t0, dtype=np.float64)
        yaw = np.asarray(yaw_t0, dtype=np.float64).reshape(-1)
        speed = np.asarray(speed, dtype=np.float64).reshape(-1)
        accel = np.asarray(acceleration, dtype=np.float64).reshape(-1)
        curv = np.asarray([] if curvature is None else curvature, np.float64).reshape(-1)
        n = offsets.shape[0]
        if n < 2:
            raise PlanRejected(f"plan has {n} waypoints, need >= 2")
        if xyz.shape != (n, 3) or yaw.shape != (n,) or speed.shape != (n,) or accel.shape != (n,):
            raise PlanRejected(
                f"plan arrays disagree: {n} times, poses {xyz.shape}, yaw {yaw.shape}, "
                f"speed {speed.shape}, acceleration {accel.shape}")
        if curv.size and curv.shape != (n,):
            raise PlanRejected(f"plan arrays disagree: {n} times, curvature {curv.shape}")
        for name, values in (("waypoint times", offsets), ("poses", xyz), ("yaw", yaw),
                             ("speed", speed), ("acceleration", accel), ("curvature", curv),
                             ("t0 pose position", t0_pose.position),
                             ("t0 pose rotation", t0_pose.rotation)):
            if not np.all(np.isfinite(values)):
                raise PlanRejected(f"plan has non-finite {name}")
        if offsets[0] <= 0 or np.any(np.diff(offsets) <= 0):
            raise PlanRejected(f"waypoint times must be > 0 and strictly increasing, have "
                               f"{offsets[:3].tolist()} ...")
        self.t0_ns = int(t0_ns)
        self.tick_ns = int(tick_ns)
        self.odom_frame_id = odom_frame_id
        self.t0_pose = t0_pose
        v_start = float(v0) if np.isfinite(v0) else float(speed[0])
        # Sample 0 is the base pose at t0 (the origin of the t0 frame).
        xyz_all = np.vstack([np.zeros((1, 3)), xyz])
        self.times_s = np.concatenate([[0.0], offsets])
        self.local_xy = xyz_all[:, :2].copy()
        self.local_yaw = np.concatenate([[0.0], yaw])
        self.curvature = curv if curv.size else None
        self.speeds = np.concatenate([[v_start], speed])
        self.accelerations = np.concatenate([[accel[0]], accel])
        # Huge (finite) values may overflow here; plan_check refuses them by magnitude
        # before anything is followed, and non-finite geometry is refused at once.
        with np.errstate(all="ignore"):
            odom_xyz, _ = from_local_frame(xyz_all, np.broadcast_to(np.eye(3), (n + 1, 3, 3)),
                                           t0_pose)
            self.positions = odom_xyz[:, :2].copy()
            self.yaws = np.unwrap(self.local_yaw + t0_pose.yaw)
            steps = np.hypot(*np.diff(self.positions, axis=0).T)
            self.arc_lengths = np.concatenate([[0.0], np.cumsum(steps)])
        if not (np.all(np.isfinite(self.arc_lengths)) and np.all(np.isfinite(self.yaws))):
            raise PlanRejected("plan geometry overflows (poses out of range)", kind="range")

    @property
    def horizon_s(self) -> float:
        return float(self.times_s[-1])

    def age_s(self, now_ns: int) -> float:
        """now - t0 [s]."""
        return (int(now_ns) - self.t0_ns) / NS_PER_S

    def state_at(self, now_ns: int) -> PlanSample:
        """The plan at time now_ns (age = now - t0 is where the plan is read, so the part
        already in the past is skipped); clamped to [t0, last waypoint]."""
        age = self.age_s(now_ns)
        t = float(np.clip(age, 0.0, self.horizon_s))
        pos = np.array([np.interp(t, self.times_s, self.positions[:, 0]),
                        np.interp(t, self.times_s, self.positions[:, 1])])
        return PlanSample(position=pos, yaw=float(np.interp(t, self.times_s, self.yaws)),
                          speed=float(np.interp(t, self.times_s, self.speeds)),
                          acceleration=float(np.interp(t, self.times_s, self.accelerations)),
                          beyond_horizon=age > self.horizon_s)

    def project(self, point) -> PathPoint:
        """Closest point of the path polyline to `point` (2,), with its arc length and the
        signed lateral offset of `point` from it (+ = left).

        Written out (numpy, all 64 segments at once): scipy has no point-to-polyline
        projection, and a KD-tree over 65 vertices would still need this refinement."""
        p = np.asarray(point, dtype=np.float64)[:2]
        a, b = self.positions[:-1], self.positions[1:]
        seg = b - a
        length2 = np.einsum("ij,ij->i", seg, seg)
        moving = length2 > 1e-12
        u = np.zeros(len(seg))
        u[moving] = np.clip(np.einsum("ij,ij->i", p - a[moving], seg[moving])
                            / length2[moving], 0.0, 1.0)
        closest = a + seg * u[:, None]
        dist2 = np.einsum("ij,ij->i", p - closest, p - closest)
        i = int(np.argmin(dist2))
        heading = self._segment_heading(i)
        offset = p - closest[i]
        lateral = float(-np.sin(heading) * offset[0] + np.cos(heading) * offset[1])
        s = float(self.arc_lengths[i] + u[i] * np.sqrt(length2[i]))
        return PathPoint(s=s, position=closest[i], heading=heading, lateral=lateral)

    def point_at_distance(self, s: float) -> PathPoint:
        """Path point at arc length s [m]; beyond the last waypoint the path continues
        straight along its last heading (a stopping plan ends in one point)."""
        total = float(self.arc_lengths[-1])
        if s <= total:
            i = int(np.clip(np.searchsorted(self.arc_lengths, s, side="right") - 1, 0,
                            len(self.arc_lengths) - 2))
            pos = np.array([np.interp(s, self.arc_lengths, self.positions[:, 0]),
                            np.interp(s, self.arc_lengths, self.positions[:, 1])])
            return PathPoint(s=float(s), position=pos, heading=self._segment_heading(i))
        heading = self._end_heading()
        extra = s - total
        pos = self.positions[-1] + extra * np.array([np.cos(heading), np.sin(heading)])
        return PathPoint(s=float(s), position=pos, heading=heading)

    def _segment_heading(self, i: int) -> float:
        d = self.positions[i + 1] - self.positions[i]
        if np.hypot(d[0], d[1]) > 1e-6:
            return float(np.arctan2(d[1], d[0]))
        return float(self.yaws[i + 1])  # standing still: the planned heading

    def _end_heading(self) -> float:
        for i in range(len(self.positions) - 2, -1, -1):
            d = self.positions[i + 1] - self.positions[i]
            if np.hypot(d[0], d[1]) > 1e-3:
                return float(np.arctan2(d[1], d[0]))
        return float(self.yaws[-1])

