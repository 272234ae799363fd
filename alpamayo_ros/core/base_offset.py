"""Where is the rear axle? An estimate of `core.base_offset_xyz` x from the odometry itself.

The history and the t0 pose the model sees are those of the rear axle (the model's base
frame); the odometry describes its child frame (carla-ros-bridge: the actor origin, about
the middle of the car). A missing or wrong-signed `base_offset_xyz` costs 28-56 cm of
history error and 1.4-2.8 m of t0 pose error, and nothing else notices. The odometry does:

    A rigid body turning at yaw rate w moves a point d metres ahead of the rear axle
    sideways at w * d (velocity of the point = rear-axle velocity + w x r), and the rear
    axle itself has no lateral velocity (no-slip). So on curves the child frame's
    direction of travel differs from its heading by a steady angle, and its lateral
    velocity in its own frame is v_lat = w * d.

Estimate: for every odometry sample b, the sample a at least `baseline_s` earlier gives the
chord velocity (p_b - p_a) / dt, expressed in the child frame at the time midpoint (slerp
halfway, so a circular arc gives the exact tangent), and the yaw rate from the relative
rotation. Differentiating over >= 0.1 s (default 0.5 s), not from one 100 Hz step to the
next, keeps 1 cm of position noise from becoming 1.4 m/s of velocity noise. Least squares
over the samples with enough speed,

    v_lat = d * yaw_rate + a * v_lon

where the second term absorbs a small yaw misalignment of the child frame (1 degree at
10 m/s is 0.17 m/s of lateral velocity, which alone would move d by 0.9 m on a 0.2 rad/s
curve; straights pin it down). The rear axle lies at x = -d in the child frame, which is
what `core.base_offset_xyz[0]` must say (negative when the child frame is ahead of the
rear axle, as in CARLA). Quality: samples used, seconds of curve, the residual and the
least-squares standard error. Fewer than `min_curve_s` seconds of curve: "not enough data".
Samples above `max_lateral_accel` are left out (tyre slip at the rear axle grows with
lateral acceleration and would bias d).

Uses: `estimate_base_offset_x(stamps_ns, xyz, quat_xyzw)` on arrays (e.g. a
history.OdometryTrack), `BaseOffsetEstimator` fed sample by sample over a long window
(the planner keeps only seconds of odometry), and `check_base_offset(estimate,
configured_xyz, tolerance)` for the warning text. numpy/scipy only.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from alpamayo_ros.core.types import NS_PER_S

# Implausible motion (a pose jump, a re-initialised localisation) is not a curve.
MAX_SPEED = 100.0          # m/s
MAX_YAW_RATE = 2.0         # rad/s


@dataclass(frozen=True)
class BaseOffsetOptions:
    """Settings of the estimate (defaults fit 50-100 Hz odometry of a car).

    baseline_s: time over which velocities and yaw rates are differentiated (>= 0.1 s);
    max_gap_s: a pair of samples may be at most this much further apart than baseline_s;
    min_speed [m/s]: samples slower than this are not used (direction of travel is noise);
    min_yaw_rate [rad/s]: a sample counts as curve from this yaw rate on;
    max_lateral_accel [m/s^2]: samples above it are not used (tyre slip);
    min_curve_s: seconds of curve needed for an estimate.
    """

    baseline_s: float = 0.5
    max_gap_s: float = 0.2
    min_speed: float = 2.0
    min_yaw_rate: float = 0.05
    max_lateral_accel: float = 4.0
    min_curve_s: float = 3.0

    def __post_init__(self) -> None:
        if not self.baseline_s >= 0.1:
            raise ValueError(f"baseline_s: have {self.baseline_s}, need >= 0.1 s")
        for name in ("max_gap_s", "min_speed", "min_yaw_rate", "max_lateral_accel",
                     "min_curve_s"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name}: have {getattr(self, name)}, need >= 0")


@dataclass(frozen=True)
class OffsetEstimate:
    """The rear axle's x in the odometry child frame, as the odometry shows it.

    x_m: estimate of base_offset_xyz[0] [m] (None without enough data);
    stderr_m: its standard error [m]; samples: samples in the fit; curve_samples: of
    them with |yaw rate| >= min_yaw_rate; curve_s: seconds of curve; residual_mps: RMS
    of the lateral-velocity residual [m/s]; yaw_misalignment_rad: heading of the direction
    of travel on straights relative to the child frame's x axis [rad]; reason: "" when
    estimated, else why not.
    """

    x_m: Optional[float]
    stderr_m: Optional[float]
    samples: int
    curve_samples: int
    curve_s: float
    residual_mps: Optional[float]
    yaw_misalignment_rad: Optional[float]
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.x_m is not None

    def describe(self) -> str:
        """One line for diagnostics and logs."""
        if not self.ok:
            return self.reason
        return (f"rear axle at x = {self.x_m:+.2f} +- {self.stderr_m:.2f} m in the odometry "
                f"child frame ({self.samples} samples, {self.curve_s:.1f} s of curves, "
                f"residual {self.residual_mps:.3f} m/s)")


def pair_features(t_s: np.ndarray, xyz: np.ndarray, quat_xyzw: np.ndarray,
                  a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) rows (mid time [s], yaw rate [rad/s], v_lon, v_lat [m/s]) of sample pairs
    (a[i], b[i]): chord velocity in the child frame at the time midpoint."""
    dt = t_s[b] - t_s[a]
    rot_a, rot_b = Rotation.from_quat(quat_xyzw[a]), Rotation.from_quat(quat_xyzw[b])
    rel = (rot_a.inv() * rot_b).as_rotvec()           # in the frame of a
    yaw_rate = rel[:, 2] / dt
    mid = rot_a * Rotation.from_rotvec(0.5 * rel)
    v_body = mid.inv().apply((xyz[b] - xyz[a]) / dt[:, None])
    return np.column_stack([0.5 * (t_s[a] + t_s[b]), yaw_rate, v_body[:, 0], v_body[:, 1]])


def pairs(stamps_ns: np.ndarray, options: BaseOffsetOptions
          ) -> tuple[np.ndarray, np.ndarray]:
    """(a, b): for each sample b the last sample a at least baseline_s earlier, when the
    pair is at most baseline_s + max_gap_s long (integer ns: no rounding decides)."""
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    baseline = int(round(options.baseline_s * NS_PER_S))
    longest = baseline + int(round(options.max_gap_s * NS_PER_S))
    b = np.arange(len(stamps))
    a = np.searchsorted(stamps, stamps - baseline, side="right") - 1
    keep = a >= 0
    keep[keep] = stamps[b[keep]] - stamps[a[keep]] <= longest
    return a[keep], b[keep]


def fit(features: np.ndarray, sample_period_s: float,
        options: BaseOffsetOptions = BaseOffsetOptions()) -> OffsetEstimate:
    """The least-squares estimate from pair_features rows (see the module docstring)."""
    f = np.asarray(features, dtype=np.float64).reshape(-1, 4)
    yaw_rate, v_lon, v_lat = f[:, 1], f[:, 2], f[:, 3]
    finite = np.isfinite(f).all(axis=1)
    use = (finite & (np.abs(v_lon) >= options.min_speed) & (np.abs(v_lon) <= MAX_SPEED)
           & (np.abs(yaw_rate) <= MAX_YAW_RATE)
           & (np.abs(v_lon * yaw_rate) <= options.max_lateral_accel))
    curve = use & (np.abs(yaw_rate) >= options.min_yaw_rate)
    n, n_curve = int(use.sum()), int(curve.sum())
    period = max(float(sample_period_s), 1e-6)
    curve_s = n_curve * period
    if curve_s < options.min_curve_s or n < 3:
        return OffsetEstimate(None, None, n, n_curve, curve_s, None, None,
                              f"not enough data: {curve_s:.1f} s of curves at >= "
                              f"{options.min_speed:g} m/s and >= {options.min_yaw_rate:g} "
                              f"rad/s in the window, need {options.min_curve_s:g} s")
    x = np.column_stack([yaw_rate[use], v_lon[use]])
    y = v_lat[use]
    coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    if rank < 2:
        return OffsetEstimate(None, None, n, n_curve, curve_s, None, None,
                              "not enough data: yaw rate and speed do not vary independently")
    residual = y - x @ coef
    sigma2 = float(residual @ residual) / (n - 2)
    # Rows overlap in time, yet consecutive rows share no sample (row b pairs b with
    # b - baseline), so their noise is nearly independent: the plain least-squares error
    # matches the scatter of the estimate over noise seeds of the synthetic drive.
    stderr = float(np.sqrt(sigma2 * np.linalg.inv(x.T @ x)[0, 0]))
    d = float(coef[0])
    return OffsetEstimate(x_m=-d, stderr_m=stderr, samples=n, curve_samples=n_curve,
                          curve_s=curve_s, residual_mps=float(np.sqrt(sigma2)),
                          yaw_misalignment_rad=float(np.arctan(coef[1])))


def estimate_base_offset_x(stamps_ns: np.ndarray, xyz: np.ndarray, quat_xyzw: np.ndarray,
                           options: BaseOffsetOptions = BaseOffsetOptions()
                           ) -> OffsetEstimate:
    """Estimate from odometry arrays: stamps (N,) int ns ascending, positions (N, 3) [m]
    and orientations (N, 4) xyzw of the child frame in the odometry frame."""
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    quat = np.asarray(quat_xyzw, dtype=np.float64).reshape(-1, 4)
    if not (len(stamps) == len(xyz) == len(quat)):
        raise ValueError(f"odometry arrays differ in length: have {len(stamps)} stamps, "
                         f"{len(xyz)} positions, {len(quat)} orientations")
    if len(stamps) > 1 and np.any(np.diff(stamps) <= 0):
        raise ValueError("odometry stamps must be strictly ascending")
    t_s = (stamps - (stamps[0] if len(stamps) else 0)) / NS_PER_S
    a, b = pairs(stamps, options)
    features = pair_features(t_s, xyz, quat, a, b) if len(a) else np.zeros((0, 4))
    period = float(np.median(np.diff(t_s))) if len(t_s) > 1 else 0.0
    return fit(features, period, options)


class BaseOffsetEstimator:
    """Sample-by-sample estimate over the last `window_s` seconds (not thread-safe).

    `add(stamp_ns, xyz, quat_xyzw)` per accepted odometry sample, `estimate()` when the
    result is wanted, `reset()` when the odometry is discontinuous (time jump, frame
    change). Keeps 4 floats per sample of the window plus the samples of one baseline.
    """

    def __init__(self, window_s: float = 120.0,
                 options: BaseOffsetOptions = BaseOffsetOptions()) -> None:
        if not window_s > options.baseline_s:
            raise ValueError(f"window_s: have {window_s}, need > baseline_s "
                             f"({options.baseline_s})")
        self.window_s = float(window_s)
        self.options = options
        self._recent: deque = deque()     # (stamp ns, xyz, quat) of the last baseline
        self._features: deque = deque()   # (stamp ns of b, feature row)
        self._periods: deque = deque(maxlen=101)

    def reset(self) -> None:
        self._recent.clear()
        self._features.clear()
        self._periods.clear()

    def add(self, stamp_ns: int, xyz: Sequence[float], quat_xyzw: Sequence[float]) -> None:
        stamp_ns = int(stamp_ns)
        if self._recent and stamp_ns <= self._recent[-1][0]:
            return  # out of order or repeated: the planner's buffers judge those
        if self._recent:
            self._periods.append((stamp_ns - self._recent[-1][0]) / NS_PER_S)
        self._recent.append((stamp_ns, np.asarray(xyz, np.float64),
                             np.asarray(quat_xyzw, np.float64)))
        keep_ns = (int(round(self.options.baseline_s * NS_PER_S))
                   + int(round(self.options.max_gap_s * NS_PER_S)))
        while len(self._recent) > 2 and self._recent[1][0] <= stamp_ns - keep_ns:
            self._recent.popleft()
        # The partner: the last sample at least baseline_s earlier (as in `pairs`).
        limit = stamp_ns - int(round(self.options.baseline_s * NS_PER_S))
        partner = next((s for s in reversed(self._recent) if s[0] <= limit), None)
        if partner is not None and stamp_ns - partner[0] <= keep_ns:
            newest = self._recent[-1]
            row = pair_features(np.array([0.0, (stamp_ns - partner[0]) / NS_PER_S]),
                                np.stack([partner[1], newest[1]]),
                                np.stack([partner[2], newest[2]]), np.array([0]),
                                np.array([1]))[0]
            self._features.append((stamp_ns, row))
        window_ns = int(self.window_s * NS_PER_S)
        while self._features and self._features[0][0] < stamp_ns - window_ns:
            self._features.popleft()

    def estimate(self) -> OffsetEstimate:
        rows = np.array([f[1] for f in self._features]).reshape(-1, 4)
        period = float(np.median(self._periods)) if self._periods else 0.0
        return fit(rows, period, self.options)


def check_base_offset(estimate: OffsetEstimate, configured_xyz: Sequence[float],
                      tolerance: float) -> Optional[str]:
    """A warning when the configured base_offset_xyz x disagrees with the estimate by more
    than `tolerance` [m] (and by more than 3 standard errors); None when it agrees or the
    estimate is not available."""
    if not estimate.ok:
        return None
    have = float(configured_xyz[0])
    need = float(estimate.x_m)
    diff = have - need
    if abs(diff) <= tolerance or abs(diff) <= 3.0 * estimate.stderr_m:
        return None
    hint = ""
    if need < -tolerance and have >= 0.0:
        hint = (" The odometry child frame is ahead of the rear axle, so x must be negative "
                "(carla-ros-bridge: odometry at the actor origin, rear axle about 1.4 m "
                "behind it).")
    elif need > tolerance and have <= 0.0:
        hint = " The odometry child frame is behind the rear axle, so x must be positive."
    return (f"core.base_offset_xyz[0] is {have:+.2f} m but the odometry puts the rear axle "
            f"at x = {need:+.2f} +- {estimate.stderr_m:.2f} m in its child frame "
            f"({estimate.samples} samples, {estimate.curve_s:.1f} s of curves): have "
            f"{have:+.2f} m, need {need:+.2f} m (tolerance {tolerance:g} m). The t0 pose is "
            f"off by {abs(diff):.2f} m, the history poses by that times the heading change "
            "[rad] since them." + hint)
