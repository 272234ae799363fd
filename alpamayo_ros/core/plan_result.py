"""PlanResult: everything one planning tick produced, ready for the node or replay to publish.

Stamps are int nanoseconds (t0 = header stamp of a real camera frame); poses of the
candidates are in the t0 frame (rear-axle base at t0) and, copied, in the odom frame
(pose_odom = T_odom_base(t0) * pose_base, using the pose interpolated at t0, never the
latest pose).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.types import StageTimings


class PlanStatus(enum.IntEnum):
    """Values equal the STATUS_* constants of msg/PlannerOutput.msg."""

    OK = 0
    SKIPPED = 1
    INVALID_OUTPUT = 2
    MODEL_ERROR = 3


class ReasonCode(enum.IntEnum):
    """Why a tick did not give an OK plan; values equal the REASON_* constants of
    msg/PlannerOutput.msg (which documents each). NONE for OK plans."""

    NONE = 0
    NO_FRAME = 1
    STALE_CAMERA = 2
    STALE_ODOMETRY = 3
    NO_ODOMETRY = 4
    HISTORY_TOO_SHORT = 5
    ODOMETRY_GAP = 6
    ODOMETRY_DISCONTINUITY = 7
    ODOMETRY_FRAME_CHANGE = 8
    FRAME_TOO_OLD = 9
    DECODE_ERROR = 10
    SIZE_MISMATCH = 11
    CLOCK_RESET = 12
    FUTURE_STAMP = 13
    INVALID_OUTPUT = 14
    MODEL_ERROR = 15


@dataclass
class Candidate:
    """One trajectory sample with its checks (64 waypoints at t0+0.1 .. t0+6.4 s).

    xyz (64, 3) [m], rot (64, 3, 3): poses in the t0 frame; xyz_odom / rot_odom: the same
    poses in the odom frame. yaw (64,) [rad], speed [m/s], acceleration [m/s^2],
    curvature [1/m]. valid=False with invalid_reason when an output check failed.
    """

    xyz: np.ndarray
    rot: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    acceleration: np.ndarray
    curvature: np.ndarray
    xyz_odom: np.ndarray
    rot_odom: np.ndarray
    coc: str = ""
    coc_token_count: int = 0
    coc_truncated: bool = False
    valid: bool = True
    invalid_reason: str = ""


@dataclass
class TickTimings:
    """Wall-clock seconds of one tick.

    input_preparation: staleness gates + selection + history + decoding (+ resizing);
    selection / history / decode are parts of it (decode: frames not in the cache);
    model: the model's own stages; model_call: wall time of predict();
    output_building: output checks and the odom-frame copies of the candidates after it;
    tick_to_model_start: from the tick (the node's timer callback, the replay's tick) to
    the start of the model call: worker hand-over + input_preparation.
    """

    input_preparation: float = 0.0
    tick_to_model_start: float = 0.0
    selection: float = 0.0
    history: float = 0.0
    decode: float = 0.0
    model: StageTimings = field(default_factory=StageTimings)
    model_call: float = 0.0
    output_building: float = 0.0


@dataclass
class PlanResult:
    """Outcome of one tick.

    status/reason/reason_code: OK; SKIPPED (reason says which input was missing or stale);
        INVALID_OUTPUT (no sample passed the output checks); MODEL_ERROR (the model raised).
    now_ns: the tick time it was planned for (node clock or stepped bag time).
    t0_ns: the newest frame time every camera had (None when skipped before selection).
    frame_stamps_ns (16,) int64, frame_skews (16,) [s]: the frames used, camera-major,
        oldest first; camera_skew: spread of the cameras' newest stamps [s].
    history_xyz (16, 3), history_rot (16, 3, 3): in the t0 frame at history_stamps_ns;
        history_span [s]; odometry_samples inside the window; odometry_newest_ns.
    t0_pose_odom: base pose at t0 in the odometry frame, whose name is odom_frame_id.
    v0: speed at t0 estimated by the model [m/s].
    candidates / selected_index: samples; the selected one is the first valid sample
        (index 0 when none is valid; status is then INVALID_OUTPUT).
    waypoint_stamps_ns (64,) int64: absolute times t0+0.1 .. t0+6.4 s.
    """

    status: PlanStatus
    reason: str = ""
    reason_code: ReasonCode = ReasonCode.NONE
    now_ns: int = 0
    t0_ns: Optional[int] = None
    frame_stamps_ns: Optional[np.ndarray] = None
    frame_skews: Optional[np.ndarray] = None
    camera_skew: float = 0.0
    history_xyz: Optional[np.ndarray] = None
    history_rot: Optional[np.ndarray] = None
    history_stamps_ns: Optional[np.ndarray] = None
    history_span: float = 0.0
    odometry_samples: int = 0
    odometry_newest_ns: Optional[int] = None
    t0_pose_odom: Optional[Pose] = None
    odom_frame_id: str = ""
    v0: float = float("nan")
    candidates: list = field(default_factory=list)
    selected_index: int = 0
    waypoint_stamps_ns: Optional[np.ndarray] = None
    timings: TickTimings = field(default_factory=TickTimings)
    model_id: str = ""
    # Frames decoded (cache misses) while preparing this tick.
    decodes: int = 0
    # time.perf_counter() when the newest frame used arrived (live only; None otherwise):
    # the start of the wall-clock latency.
    newest_frame_arrival_s: Optional[float] = None
    # The navigation instruction the model saw ("" without one) and what the tick did
    # with navigation (core.navigation.NavStatus value; "" before t0 was found).
    navigation_text: str = ""
    navigation_status: str = ""

    @property
    def ok(self) -> bool:
        return self.status == PlanStatus.OK

    @property
    def selected(self) -> Optional[Candidate]:
        if not self.candidates:
            return None
        return self.candidates[self.selected_index]

    @property
    def max_frame_skew(self) -> float:
        if self.frame_skews is None or len(self.frame_skews) == 0:
            return 0.0
        return float(np.max(np.abs(self.frame_skews)))
