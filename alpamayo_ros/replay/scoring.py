"""Scoring of replayed plans against the bag's own odometry: minADE / minFDE per tick and
their means.

A tick is scored at 1 s / 3 s / 6.4 s (XY, min over samples) where the odometry of its
epoch covers the horizon without a gap longer than max_odometry_gap; otherwise its
metrics_note says why not.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.history import OdometryTrack
from alpamayo_ros.core.metrics import DEFAULT_HORIZONS, displacement_errors, future_xyz_t0_frame
from alpamayo_ros.core.types import NS_PER_S


def max_gap_s(stamps: np.ndarray, start_ns: int, end_ns: int) -> float:
    """Largest time without odometry inside [start, end] [s] (inf when not covered)."""
    if len(stamps) == 0 or stamps[0] > start_ns or stamps[-1] < end_ns:
        return math.inf
    lo = max(int(np.searchsorted(stamps, start_ns, side="right")) - 1, 0)
    hi = int(np.searchsorted(stamps, end_ns, side="left"))
    window = stamps[lo:hi + 1]
    return float(np.max(np.diff(window))) / NS_PER_S if len(window) > 1 else 0.0


def ground_truth_track(stamps: Sequence[int], xyz: Sequence[np.ndarray],
                       quat: Sequence[np.ndarray]) -> OdometryTrack:
    """Odometry of one epoch sorted by stamp (the first sample of a duplicated stamp)."""
    if not len(stamps):
        return OdometryTrack.empty()
    stamps = np.asarray(stamps, dtype=np.int64)
    order = np.argsort(stamps, kind="stable")
    stamps = stamps[order]
    keep = np.concatenate([[True], np.diff(stamps) > 0])
    return OdometryTrack(stamps[keep], np.asarray(xyz)[order][keep],
                         np.asarray(quat)[order][keep])


def score_ticks(records: Sequence[Any], predictions: Sequence[Optional[np.ndarray]],
                track: OdometryTrack, base_offset: Pose, *, interpolation: str,
                max_odometry_gap: float, horizons: Sequence[float] = DEFAULT_HORIZONS) -> None:
    """Fill the metrics / metrics_note of each tick record (replay_engine.TickRecord) in
    place.

    predictions: (samples, 64, 3) t0-frame positions per record, None for ticks without
    an OK plan; track: the epoch's odometry (ground truth); base_offset: rear-axle base
    in the odometry child frame, as for the history.
    """
    horizon_ns = int(round(max(horizons) * NS_PER_S))
    for rec, pred in zip(records, predictions):
        if pred is None:
            rec.metrics_note = f"no plan ({rec.status.name})"
            continue
        t0 = rec.t0_ns
        covered_end = min(t0 + horizon_ns, int(track.stamps_ns[-1])) if len(track) else t0
        gap = max_gap_s(track.stamps_ns, t0, covered_end)
        if gap > max_odometry_gap:
            rec.metrics_note = (f"ground truth has a {gap:.3f} s odometry gap after t0 "
                                f"(max_odometry_gap {max_odometry_gap:g} s)")
            continue
        truth = future_xyz_t0_frame(track, t0, base_offset, interpolation)
        if truth is None:
            rec.metrics_note = "ground truth does not cover t0"
            continue
        errors = displacement_errors(pred, truth, horizons)
        rec.metrics = {f"{e.horizon:g}": {"min_ade": e.min_ade, "min_fde": e.min_fde,
                                          "best_sample": e.best_sample} for e in errors}
        missing = [f"{e.horizon:g} s" for e in errors if e.min_ade is None]
        if missing:
            rec.metrics_note = ("ground truth ends before t0 + " + ", ".join(missing))


def aggregate_metrics(ticks: Sequence[Mapping], horizons: Sequence[float] = DEFAULT_HORIZONS
                      ) -> dict:
    """Mean minADE / minFDE per horizon over the ticks that have them, with counts."""
    out = {}
    for h in horizons:
        key = f"{h:g}"
        ade = [t["metrics"][key]["min_ade"] for t in ticks
               if t.get("metrics") and t["metrics"].get(key, {}).get("min_ade") is not None]
        fde = [t["metrics"][key]["min_fde"] for t in ticks
               if t.get("metrics") and t["metrics"].get(key, {}).get("min_fde") is not None]
        out[key] = {"count": len(ade),
                    "mean_min_ade": float(np.mean(ade)) if ade else None,
                    "mean_min_fde": float(np.mean(fde)) if fde else None}
    return out
