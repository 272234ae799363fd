"""ConstantVelocityModel: a numpy-only PlannerModel that continues the ego history.

It fits speed and yaw rate over the last `fit_window` seconds of the 16 history poses and
rolls out a constant-speed, constant-yaw-rate arc for the 64 waypoints (t0+0.1 .. t0+6.4 s).
It ignores the camera frames. A legitimate dry-run backend for controller tests and CPU
pipelines; the demo and CI default remain the real model on a tiny checkpoint.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from alpamayo_ros.core.errors import ModelInputError
from alpamayo_ros.core.geometry import yaw_of
from alpamayo_ros.core.types import (CAMERA_IMAGE_SHAPE, HISTORY_DT, NUM_HISTORY, WAYPOINT_OFFSETS,
                                     InferenceOptions, ModelInput, ModelOutput, StageTimings,
                                     TrajectorySample)

# Below this speed [m/s] the curvature is reported as 0 (yaw rate / speed is meaningless).
MIN_SPEED_FOR_CURVATURE = 0.1


class ConstantVelocityModel:
    """PlannerModel continuing the history at the fitted speed [m/s] and yaw rate [rad/s].

    fit_window: seconds of history (multiple of 0.1, 0.1 .. 1.5) used for the fit.
    """

    model_id = "constant_velocity"

    def __init__(self, fit_window: float = 0.5) -> None:
        steps = int(round(fit_window / HISTORY_DT))
        if not 1 <= steps <= NUM_HISTORY - 1 or abs(steps * HISTORY_DT - fit_window) > 1e-9:
            raise ValueError(f"fit_window must be a multiple of {HISTORY_DT} s in "
                             f"[0.1, 1.5], have {fit_window}")
        self._steps = steps

    def fit(self, history_xyz: np.ndarray, history_rot: np.ndarray) -> tuple[float, float]:
        """(speed [m/s], yaw rate [rad/s]) over the fit window of t0-frame history poses.

        Speed is the path length of the window's steps, each signed by its projection on
        the heading at its start (so reversing gives a negative speed), over the window time.
        """
        n = self._steps
        xyz = history_xyz[-(n + 1):]
        yaw = np.unwrap(yaw_of(history_rot[-(n + 1):]))
        steps = np.diff(xyz[:, :2], axis=0)
        lengths = np.hypot(steps[:, 0], steps[:, 1])
        along = steps[:, 0] * np.cos(yaw[:-1]) + steps[:, 1] * np.sin(yaw[:-1])
        speed = float(np.sum(np.where(along < 0, -lengths, lengths)) / (n * HISTORY_DT))
        yaw_rate = float((yaw[-1] - yaw[0]) / (n * HISTORY_DT))
        return speed, yaw_rate

    def predict(self, model_input: ModelInput, options: InferenceOptions = InferenceOptions(),
                initial_noise: Optional[np.ndarray] = None) -> ModelOutput:
        start = time.perf_counter()
        xyz = np.asarray(model_input.history_xyz, dtype=np.float64)
        rot = np.asarray(model_input.history_rot, dtype=np.float64)
        if xyz.shape != (NUM_HISTORY, 3) or rot.shape != (NUM_HISTORY, 3, 3):
            raise ModelInputError(f"history must be ({NUM_HISTORY}, 3) and ({NUM_HISTORY}, 3, 3),"
                                  f" have {xyz.shape} and {rot.shape}")
        if not (np.all(np.isfinite(xyz)) and np.all(np.isfinite(rot))):
            raise ModelInputError("history has non-finite values")
        speed, yaw_rate = self.fit(xyz, rot)
        fitted = time.perf_counter()
        t = np.asarray(WAYPOINT_OFFSETS, dtype=np.float64)
        theta = yaw_rate * t
        if abs(yaw_rate) > 1e-9:
            radius = speed / yaw_rate
            x, y = radius * np.sin(theta), radius * (1.0 - np.cos(theta))
        else:
            x, y = speed * t, np.zeros_like(t)
        out_xyz = np.stack([x, y, np.full_like(t, xyz[-1, 2])], axis=1)
        cos, sin = np.cos(theta), np.sin(theta)
        out_rot = np.zeros((len(t), 3, 3))
        out_rot[:, 0, 0], out_rot[:, 0, 1] = cos, -sin
        out_rot[:, 1, 0], out_rot[:, 1, 1] = sin, cos
        out_rot[:, 2, 2] = 1.0
        curvature = yaw_rate / speed if abs(speed) >= MIN_SPEED_FOR_CURVATURE else 0.0
        samples = [TrajectorySample(
            xyz=out_xyz.copy(), rot=out_rot.copy(), yaw=theta.copy(),
            speed=np.full_like(t, speed), acceleration=np.zeros_like(t),
            curvature=np.full_like(t, curvature)) for _ in range(max(1, options.num_samples))]
        done = time.perf_counter()
        return ModelOutput(samples=samples, v0=speed,
                           timings=StageTimings(preprocess=fitted - start,
                                                postprocess=done - fitted),
                           model_id=self.model_id)

    def warmup(self, options: InferenceOptions = InferenceOptions(),
               frame_shape: tuple[int, int] = CAMERA_IMAGE_SHAPE,
               camera_indices: Optional[tuple[int, ...]] = None) -> float:
        """Nothing to prepare (PlannerModel.warmup): returns 0 seconds."""
        return 0.0
