"""minADE / minFDE of predicted trajectories against ground truth from future odometry.

Ground truth: the base poses at t0+0.1 .. t0+6.4 s interpolated from odometry (base offset
applied as for the history) and expressed in the t0 frame. Errors are XY (planar) distances
[m]; min over samples, each horizon (default 1 s, 3 s, 6.4 s) uses the waypoints up to it.
minADE and minFDE take their minimum independently (the usual definition).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from alpamayo_ros.core.geometry import Pose, to_local_frame
from alpamayo_ros.core.history import OdometryTrack, PoseInterpolator, base_poses
from alpamayo_ros.core.types import NS_PER_S, NUM_WAYPOINTS, WAYPOINT_DT, WAYPOINT_OFFSETS

DEFAULT_HORIZONS = (1.0, 3.0, 6.4)


@dataclass(frozen=True)
class DisplacementErrors:
    """Errors at one horizon [s]: min_ade / min_fde [m], None when the truth does not
    reach the horizon; best_sample: index of the sample giving min_ade."""

    horizon: float
    min_ade: Optional[float]
    min_fde: Optional[float]
    best_sample: Optional[int]


def future_xyz_t0_frame(track: OdometryTrack, t0_ns: int, base_offset: Pose = Pose.identity(),
                        method: str = "spline") -> Optional[np.ndarray]:
    """Ground-truth base positions (64, 3) [m] in the t0 frame at t0+0.1 .. t0+6.4 s.

    Rows whose time lies after the newest odometry sample are NaN (no extrapolation).
    Returns None when the track does not cover t0 itself (or has < 2 samples).
    """
    stamps = track.stamps_ns
    if len(track) < 2 or not (stamps[0] <= t0_ns <= stamps[-1]):
        return None
    query = t0_ns + np.round(np.asarray(WAYPOINT_OFFSETS) * NS_PER_S).astype(np.int64)
    # Only samples near [t0, t0+6.4 s] (plus one each side) shape the interpolation.
    sub = track.around(t0_ns, int(query[-1]))
    xyz, rot = base_poses(sub, base_offset)
    interpolator = PoseInterpolator(sub.stamps_ns, xyz, rot, method)
    all_times = np.concatenate([[t0_ns], query])
    xyz_q, rot_q = interpolator(all_times)
    origin = Pose(xyz_q[0], rot_q[0])
    local, _ = to_local_frame(xyz_q[1:], rot_q[1:], origin)
    local[query > stamps[-1]] = np.nan
    return local


def displacement_errors(pred_xyz: np.ndarray, truth_xyz: np.ndarray,
                        horizons: Sequence[float] = DEFAULT_HORIZONS) -> list:
    """minADE/minFDE (XY) per horizon.

    pred_xyz: (S, 64, 3) or (64, 3) predicted positions in the t0 frame [m];
    truth_xyz: (64, 3) ground truth (NaN rows = not covered). Returns DisplacementErrors
    per horizon, with None values where the truth does not cover the horizon.
    """
    pred = np.asarray(pred_xyz, dtype=np.float64)
    if pred.ndim == 2:
        pred = pred[None]
    truth = np.asarray(truth_xyz, dtype=np.float64)
    if pred.shape[1:] != (NUM_WAYPOINTS, 3) or truth.shape != (NUM_WAYPOINTS, 3):
        raise ValueError(f"need pred (S, {NUM_WAYPOINTS}, 3) and truth ({NUM_WAYPOINTS}, 3), "
                         f"have {pred.shape} and {truth.shape}")
    errors = np.hypot(*(pred[:, :, :2] - truth[None, :, :2]).transpose(2, 0, 1))  # (S, 64)
    results = []
    for horizon in horizons:
        count = int(round(horizon / WAYPOINT_DT))
        if count < 1 or count > NUM_WAYPOINTS or abs(count * WAYPOINT_DT - horizon) > 1e-6:
            raise ValueError(f"horizon must be a multiple of {WAYPOINT_DT} s in "
                             f"[{WAYPOINT_DT}, {NUM_WAYPOINTS * WAYPOINT_DT:.1f}], have {horizon}")
        if not np.all(np.isfinite(truth[:count, :2])):
            results.append(DisplacementErrors(float(horizon), None, None, None))
            continue
        ade = errors[:, :count].mean(axis=1)
        fde = errors[:, count - 1]
        best = int(np.argmin(ade))
        results.append(DisplacementErrors(float(horizon), float(ade[best]),
                                          float(fde.min()), best))
    return results
