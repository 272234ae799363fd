"""The 16 history poses (t0-1.5 .. t0 s) interpolated from odometry, in the t0 frame.

Odometry poses (odometry child frame in the odom frame) first get the fixed base offset
(child -> rear-axle base), then are interpolated at the exact history times: translation
with scipy's CubicSpline (or linear), rotation with scipy's Slerp, as the official loader
does. A little extrapolation (max_extrapolation) is allowed at the ends at constant
velocity; more is refused, as are gaps between samples longer than max_odometry_gap, and
motion no vehicle makes (`MotionLimits`: a localisation jump, a re-initialisation, two
sources mixed on one topic): the history is never interpolated across a discontinuity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation, Slerp

from alpamayo_ros.core.errors import InputNotReady
from alpamayo_ros.core.geometry import Pose, to_local_frame
from alpamayo_ros.core.plan_result import ReasonCode
from alpamayo_ros.core.types import HISTORY_OFFSETS, NS_PER_S, NUM_HISTORY

HISTORY_OFFSETS_NS = np.asarray([int(round(o * NS_PER_S)) for o in HISTORY_OFFSETS],
                                dtype=np.int64)
HISTORY_SPAN_NS = int(-HISTORY_OFFSETS_NS[0])


@dataclass(frozen=True)
class OdometryTrack:
    """Odometry samples, ascending stamps: poses of the odometry child frame in the odom frame.

    stamps_ns (N,) int64; xyz (N, 3) [m]; quat_xyzw (N, 4) scipy order.
    """

    stamps_ns: np.ndarray
    xyz: np.ndarray
    quat_xyzw: np.ndarray

    def __len__(self) -> int:
        return int(self.stamps_ns.shape[0])

    @staticmethod
    def empty() -> "OdometryTrack":
        return OdometryTrack(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 4)))

    def around(self, start_ns: int, end_ns: int) -> "OdometryTrack":
        """The samples inside [start_ns, end_ns] plus one on each side (they shape the
        interpolation at the ends)."""
        lo = max(int(np.searchsorted(self.stamps_ns, start_ns, side="left")) - 1, 0)
        hi = min(int(np.searchsorted(self.stamps_ns, end_ns, side="right")) + 1, len(self))
        return OdometryTrack(self.stamps_ns[lo:hi], self.xyz[lo:hi], self.quat_xyzw[lo:hi])


@dataclass(frozen=True)
class MotionLimits:
    """Physical limits of the base motion the odometry implies: speed [m/s], acceleration
    [m/s^2] and yaw rate [rad/s], each judged over steps of at least MOTION_STEP_S."""

    max_speed: float = 70.0
    max_acceleration: float = 20.0
    max_yaw_rate: float = 2.5


# Motion is judged over steps of at least this long: over the 10-20 ms between raw 50-100 Hz
# samples, odometry noise of a centimetre or a fraction of a degree alone implies metres
# per second and radians per second; over 0.1 s it stays well below the limits.
MOTION_STEP_S = 0.1


def _spaced(stamps_ns: np.ndarray, step_ns: int) -> np.ndarray:
    """Indices of samples at least step_ns apart, from the newest back."""
    keep = [len(stamps_ns) - 1]
    for i in range(len(stamps_ns) - 2, -1, -1):
        if stamps_ns[keep[-1]] - stamps_ns[i] >= step_ns:
            keep.append(i)
    return np.asarray(keep[::-1], dtype=np.int64)


def check_motion(stamps_ns: np.ndarray, xyz: np.ndarray, rot: Rotation, t0_ns: int,
                 limits: MotionLimits) -> None:
    """InputNotReady (ODOMETRY_DISCONTINUITY) when consecutive samples, taken at least
    MOTION_STEP_S apart, imply a speed, acceleration or yaw rate beyond `limits`.

    stamps_ns (N,) ascending; xyz (N, 3) base positions [m] and rot (N rotations) in the
    odometry frame; t0_ns only names the times in the message.
    """
    idx = _spaced(np.asarray(stamps_ns, dtype=np.int64), int(MOTION_STEP_S * NS_PER_S))
    if len(idx) < 2:
        return
    t = np.asarray(stamps_ns, dtype=np.int64)[idx]
    dt = np.diff(t) / NS_PER_S
    speed = np.linalg.norm(np.diff(xyz[idx], axis=0), axis=1) / dt
    matrices = rot[idx].as_matrix()
    heading = np.arctan2(matrices[:, 1, 0], matrices[:, 0, 0])
    turn = np.diff(heading)
    yaw_rate = np.abs(np.arctan2(np.sin(turn), np.cos(turn))) / dt
    middle = (t[:-1] + t[1:]) // 2
    accel = np.abs(np.diff(speed)) / (np.diff(middle) / NS_PER_S) if len(speed) > 1 else \
        np.zeros(0)

    def at(k: int) -> str:
        return (f"between t0{(t[k] - t0_ns) / NS_PER_S:+.3f} s and "
                f"t0{(t[k + 1] - t0_ns) / NS_PER_S:+.3f} s")

    for values, limit, what, unit, where in (
            (speed, limits.max_speed, "speed", "m/s", at),
            (yaw_rate, limits.max_yaw_rate, "yaw rate", "rad/s", at),
            (accel, limits.max_acceleration, "acceleration", "m/s^2",
             lambda k: f"around t0{(t[k + 1] - t0_ns) / NS_PER_S:+.3f} s")):
        if len(values) and float(values.max()) > limit:
            k = int(np.argmax(values))
            raise InputNotReady(
                f"odometry: implied {what} {values[k]:.1f} {unit} {where(k)} exceeds "
                f"{limit:g} {unit}: a discontinuity (localisation jump or reset); the "
                "history is not built across it", ReasonCode.ODOMETRY_DISCONTINUITY)


@dataclass(frozen=True)
class HistoryResult:
    """History of one tick.

    xyz (16, 3) [m] and rot (16, 3, 3): base poses in the t0 frame at stamps_ns (16,) int64
        = t0-1.5 .. t0 s; xyz[-1] = 0 and rot[-1] = identity.
    t0_pose_odom: the base pose at t0 in the odom frame (interpolated, not the latest pose).
    odometry_samples: odometry samples with stamps inside [t0-1.5 s, t0].
    odometry_newest_ns: newest odometry stamp available at this tick.
    extrapolated: largest distance in time of a history point outside the samples [s].
    max_gap: largest time between consecutive samples around the window [s].
    """

    xyz: np.ndarray
    rot: np.ndarray
    stamps_ns: np.ndarray
    t0_pose_odom: Pose
    odometry_samples: int
    odometry_newest_ns: int
    extrapolated: float
    max_gap: float

    @property
    def span(self) -> float:
        """Time from the first to the last history pose [s] (1.5 by construction)."""
        return float(self.stamps_ns[-1] - self.stamps_ns[0]) / NS_PER_S


class PoseInterpolator:
    """Base poses at arbitrary times from odometry samples (base offset already applied).

    Times are int ns; inside the samples: CubicSpline/linear translation and Slerp rotation;
    outside: constant linear and angular velocity of the end segment, which scipy's Slerp
    does not offer (it refuses out-of-range times), hence the hand-written extrapolation.
    """

    def __init__(self, stamps_ns: np.ndarray, xyz: np.ndarray, rot,
                 method: str = "spline") -> None:
        """rot: (N, 3, 3) matrices or a scipy Rotation of N rotations."""
        if len(stamps_ns) < 2:
            raise ValueError(f"need >= 2 odometry samples, have {len(stamps_ns)}")
        self._ref_ns = int(stamps_ns[-1])
        # Float seconds relative to the newest sample and positions relative to it keep the
        # spline well conditioned even with large stamps and map coordinates.
        self._t = (np.asarray(stamps_ns, dtype=np.int64) - self._ref_ns) / NS_PER_S
        self._xyz_ref = xyz[-1].copy()
        self._xyz = xyz - self._xyz_ref
        self._rot = rot if isinstance(rot, Rotation) else Rotation.from_matrix(rot)
        self._method = method
        self._spline = CubicSpline(self._t, self._xyz, axis=0) if method == "spline" else None
        self._slerp = Slerp(self._t, self._rot)

    def _positions_inside(self, t: np.ndarray) -> np.ndarray:
        if self._spline is not None:
            return self._spline(t)
        return np.stack([np.interp(t, self._t, self._xyz[:, a]) for a in range(3)], axis=1)

    def __call__(self, query_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (M, 3) [m] and rotations (M, 3, 3) of the base in the odom frame."""
        t = (np.asarray(query_ns, dtype=np.int64) - self._ref_ns) / NS_PER_S
        inside = np.clip(t, self._t[0], self._t[-1])
        xyz = self._positions_inside(inside)
        rot = self._slerp(inside).as_matrix()
        for mask, i0, i1, edge in ((t < self._t[0], 0, 1, 0), (t > self._t[-1], -2, -1, -1)):
            if not mask.any():
                continue
            dt = self._t[i1] - self._t[i0]
            velocity = (self._xyz[i1] - self._xyz[i0]) / dt
            omega = (self._rot[i0].inv() * self._rot[i1]).as_rotvec() / dt  # body frame
            elapsed = t[mask] - self._t[edge]
            xyz[mask] = self._xyz[edge] + np.outer(elapsed, velocity)
            rot[mask] = (self._rot[edge] * Rotation.from_rotvec(np.outer(elapsed, omega))
                         ).as_matrix()
        return xyz + self._xyz_ref, rot


def base_poses(track: OdometryTrack, base_offset: Pose) -> tuple[np.ndarray, Rotation]:
    """Base positions (N, 3) and rotations (a scipy Rotation of N, no matrix round trip) in
    the odom frame from the track's child-frame poses: T_odom_base = T_odom_child * offset."""
    child_rot = Rotation.from_quat(track.quat_xyzw)
    base_xyz = track.xyz + child_rot.apply(base_offset.position)
    return base_xyz, child_rot * Rotation.from_matrix(base_offset.rotation)


def build_history(track: OdometryTrack, t0_ns: int, base_offset: Pose, *,
                  method: str = "spline", max_extrapolation: float = 0.0,
                  max_odometry_gap: float = 0.2,
                  limits: MotionLimits = MotionLimits()) -> HistoryResult:
    """16 base poses at t0-1.5 .. t0 in the t0 frame, plus the t0 pose in the odom frame.

    Raises InputNotReady (with have/need numbers and a ReasonCode) when the odometry does
    not cover the window within max_extrapolation [s], has a gap longer than
    max_odometry_gap [s], or implies motion beyond `limits` inside the window.
    """
    n = len(track)
    if n < 2:
        raise InputNotReady(f"odometry: need >= 2 samples for the history, have {n}",
                            ReasonCode.HISTORY_TOO_SHORT)
    stamps = track.stamps_ns
    start_ns, end_ns = t0_ns - HISTORY_SPAN_NS, t0_ns
    extrap_ns = int(round(max_extrapolation * NS_PER_S))
    if stamps[0] - start_ns > extrap_ns:
        raise InputNotReady(
            f"odometry: history needs poses from t0-1.5 s, oldest sample is only "
            f"{(t0_ns - stamps[0]) / NS_PER_S:.3f} s before t0 (would extrapolate "
            f"{(stamps[0] - start_ns) / NS_PER_S:.3f} s, max_extrapolation "
            f"{max_extrapolation:g} s)", ReasonCode.HISTORY_TOO_SHORT)
    if end_ns - stamps[-1] > extrap_ns:
        raise InputNotReady(
            f"odometry: newest sample is {(end_ns - stamps[-1]) / NS_PER_S:.3f} s before t0 "
            f"(max_extrapolation {max_extrapolation:g} s)", ReasonCode.STALE_ODOMETRY)
    sub = track.around(start_ns, end_ns)
    if len(sub) < 2:
        raise InputNotReady(f"odometry: need >= 2 samples around the history window, "
                            f"have {len(sub)}", ReasonCode.HISTORY_TOO_SHORT)
    gaps = np.diff(sub.stamps_ns)
    max_gap_ns = int(gaps.max()) if gaps.size else 0
    gap_limit_ns = int(round(max_odometry_gap * NS_PER_S))
    if max_gap_ns > gap_limit_ns:
        at = int(np.argmax(gaps))
        gap_start = (int(sub.stamps_ns[at]) - t0_ns) / NS_PER_S
        raise InputNotReady(
            f"odometry: gap of {max_gap_ns / NS_PER_S:.3f} s after t0{gap_start:+.3f} s "
            f"(max_odometry_gap {max_odometry_gap:g} s)", ReasonCode.ODOMETRY_GAP)
    xyz_odom, rot_odom = base_poses(sub, base_offset)
    check_motion(sub.stamps_ns, xyz_odom, rot_odom, t0_ns, limits)
    interpolator = PoseInterpolator(sub.stamps_ns, xyz_odom, rot_odom, method)
    query = t0_ns + HISTORY_OFFSETS_NS
    xyz_q, rot_q = interpolator(query)
    t0_pose = Pose(xyz_q[-1].copy(), rot_q[-1].copy())
    xyz_local, rot_local = to_local_frame(xyz_q, rot_q, t0_pose)
    # Exact origin/identity at t0 (rounding would leave ~1e-16 residue).
    xyz_local[-1] = 0.0
    rot_local[-1] = np.eye(3)
    inside = int(np.count_nonzero((stamps >= start_ns) & (stamps <= end_ns)))
    extrapolated = max(int(sub.stamps_ns[0]) - start_ns, end_ns - int(sub.stamps_ns[-1]), 0)
    assert xyz_local.shape == (NUM_HISTORY, 3)
    return HistoryResult(
        xyz=xyz_local, rot=rot_local, stamps_ns=query, t0_pose_odom=t0_pose,
        odometry_samples=inside, odometry_newest_ns=int(stamps[-1]),
        extrapolated=extrapolated / NS_PER_S, max_gap=max_gap_ns / NS_PER_S)
