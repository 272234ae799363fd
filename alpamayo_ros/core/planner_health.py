"""Health bookkeeping of the planner: input rates and ages, camera skew, dropped ticks,
latency percentiles and model status, reduced to OK/WARN/ERROR/STALE reports.

ROS-free (the node's diagnostics.py only converts `HealthReport`s to DiagnosticArray).
All times are int nanoseconds on the node clock (sim time when use_sim_time); rates are Hz,
ages, skews and latencies seconds. Thread-safe: sensor callbacks, the inference worker and
the diagnostics timer call in from different threads.
"""
from __future__ import annotations

import collections
import enum
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from alpamayo_ros.core.base_offset import BaseOffsetEstimator, check_base_offset
from alpamayo_ros.core.plan_result import ReasonCode
from alpamayo_ros.core.types import NS_PER_S, InferencePath


class Level(enum.IntEnum):
    """Severity, with the values of diagnostic_msgs/DiagnosticStatus."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass
class HealthReport:
    """One named status: level, one-line message and key/value details (strings)."""

    name: str
    level: Level
    message: str
    values: dict[str, str] = field(default_factory=dict)


class InputTracker:
    """Arrival rate, age of the newest header stamp and rejections of one input.

    rate: messages received in the last `window_s` seconds of node time, divided by the span
    between the first and the last of them (Hz); 0 with fewer than two. Rejections count
    in the report only while they are recent (the last `reject_window_s`), so a WARN
    clears once good data is back.
    """

    def __init__(self, name: str, window_s: float = 2.0, reject_window_s: float = 5.0):
        self.name = name
        self._window_ns = int(window_s * NS_PER_S)
        self._reject_window_ns = int(reject_window_s * NS_PER_S)
        self._arrivals: deque[int] = deque()
        self._rejects: deque[int] = deque()
        self.newest_stamp_ns: Optional[int] = None
        self.received = 0
        self.rejected = 0
        self.last_reject_reason = ""

    def record(self, receive_ns: int, stamp_ns: int) -> None:
        self.received += 1
        self._arrivals.append(receive_ns)
        self.newest_stamp_ns = stamp_ns
        self._trim(receive_ns)

    def reject(self, reason: str, receive_ns: Optional[int] = None) -> None:
        self.rejected += 1
        self.last_reject_reason = reason
        if receive_ns is not None:
            self._rejects.append(receive_ns)

    def recent_rejects(self, now_ns: int) -> int:
        """Rejections within the last reject_window_s of node time."""
        while self._rejects and (now_ns - self._rejects[0] > self._reject_window_ns
                                 or self._rejects[0] > now_ns):
            self._rejects.popleft()
        return len(self._rejects)

    def _trim(self, now_ns: int) -> None:
        while self._arrivals and (now_ns - self._arrivals[0] > self._window_ns
                                  or self._arrivals[0] > now_ns):
            self._arrivals.popleft()

    def rate_hz(self, now_ns: int) -> float:
        self._trim(now_ns)
        if len(self._arrivals) < 2:
            return 0.0
        span = self._arrivals[-1] - self._arrivals[0]
        return (len(self._arrivals) - 1) * NS_PER_S / span if span > 0 else 0.0

    def age_s(self, now_ns: int) -> Optional[float]:
        if self.newest_stamp_ns is None:
            return None
        return (now_ns - self.newest_stamp_ns) / NS_PER_S


class LatencyStats:
    """The last `capacity` latencies [s]; percentiles over them."""

    def __init__(self, capacity: int = 200):
        self._values: deque[float] = deque(maxlen=capacity)

    def add(self, seconds: float) -> None:
        self._values.append(float(seconds))

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, q: float) -> Optional[float]:
        """q in [0, 100]; None before the first sample (numpy's linear interpolation)."""
        if not self._values:
            return None
        return float(np.percentile(np.fromiter(self._values, float), q))


class TickOutcome(enum.Enum):
    PLANNED = "planned"
    SKIPPED = "skipped"
    INVALID_OUTPUT = "invalid_output"
    MODEL_ERROR = "model_error"


class PlannerHealth:
    """All health state of one planner node; `reports(now_ns)` summarises it.

    input_names: the 4 camera names then the odometry name, as shown in diagnostics.
    max_input_age_s: newest stamp older than this (or nothing yet) -> STALE.
    max_camera_skew_s: spread of the newest camera stamps above this -> WARN.
    """

    def __init__(self, camera_names: Sequence[str], odometry_name: str,
                 max_input_age_s: float, max_camera_skew_s: float, rate_window_s: float = 2.0,
                 max_stamp_lead_s: float = 0.5, clock_stop_s: float = 2.0,
                 base_offset_xyz=(0.0, 0.0, 0.0), base_offset_tolerance: float = 0.3):
        self._lock = threading.Lock()
        self.cameras = [InputTracker(n, rate_window_s) for n in camera_names]
        self.odometry = InputTracker(odometry_name, rate_window_s)
        self.max_input_age_s = max_input_age_s
        self.max_camera_skew_s = max_camera_skew_s
        self.max_stamp_lead_s = max_stamp_lead_s
        self.clock_stop_s = clock_stop_s
        self.skip_codes: collections.Counter = collections.Counter()  # ReasonCode -> ticks
        self.last_reason_code: Optional[ReasonCode] = None
        self.clock_jitter = 0
        self.largest_jitter_s = 0.0
        self.frame_changes = 0
        self.last_frame_change = ""
        self.time_jumps = 0
        self.extra: dict[str, str] = {}
        # (node clock, wall clock) [ns] when the node clock last advanced.
        self._clock_progress: Optional[tuple[int, int]] = None
        # Where the odometry puts the rear axle, against core.base_offset_xyz.
        self.base_offset = BaseOffsetEstimator()
        self.base_offset_xyz = tuple(base_offset_xyz)
        self.base_offset_tolerance = base_offset_tolerance
        self.latency = LatencyStats()
        self.model_time = LatencyStats()
        self.counts = {o: 0 for o in TickOutcome}
        self.ticks = 0
        self.dropped_ticks = 0
        self.input_resets = 0
        self.last_outcome: Optional[TickOutcome] = None
        self.last_reason = ""
        self.last_model_error = ""
        self._dropped_at_last_report = 0
        self._not_ok_at_last_report = {o: 0 for o in TickOutcome}

    # ---- recording (called from callbacks / worker)
    def record_camera(self, index: int, receive_ns: int, stamp_ns: int) -> None:
        with self._lock:
            self.cameras[index].record(receive_ns, stamp_ns)

    def reject_camera(self, index: int, reason: str, receive_ns: Optional[int] = None) -> None:
        with self._lock:
            self.cameras[index].reject(reason, receive_ns)

    def record_odometry(self, receive_ns: int, stamp_ns: int) -> None:
        with self._lock:
            self.odometry.record(receive_ns, stamp_ns)

    def reject_odometry(self, reason: str, receive_ns: Optional[int] = None) -> None:
        with self._lock:
            self.odometry.reject(reason, receive_ns)

    def record_odometry_pose(self, stamp_ns: int, xyz, quat_xyzw) -> None:
        """An accepted odometry pose, for the base offset estimate."""
        with self._lock:
            self.base_offset.add(stamp_ns, xyz, quat_xyzw)

    def restart_odometry(self) -> None:
        """The odometry was discontinuous (time jump, frame change): restart the estimate."""
        with self._lock:
            self.base_offset.reset()

    def base_offset_warning(self) -> Optional[str]:
        """The mismatch warning of the current estimate, or None."""
        with self._lock:
            estimate = self.base_offset.estimate()
        return check_base_offset(estimate, self.base_offset_xyz, self.base_offset_tolerance)

    def _base_offset_report(self) -> HealthReport:
        estimate = self.base_offset.estimate()
        values = {"configured_x_m": f"{self.base_offset_xyz[0]:+.3f}",
                  "estimate": estimate.describe()}
        if estimate.ok:
            values.update(estimated_x_m=f"{estimate.x_m:+.3f}",
                          stderr_m=f"{estimate.stderr_m:.3f}",
                          curve_s=f"{estimate.curve_s:.1f}")
        warning = check_base_offset(estimate, self.base_offset_xyz, self.base_offset_tolerance)
        if warning:
            return HealthReport("base offset", Level.WARN, warning, values)
        return HealthReport("base offset", Level.OK,
                            estimate.describe() if estimate.ok else
                            f"not estimated yet: {estimate.describe()}", values)

    def record_clock_jitter(self, backwards_s: float) -> None:
        """The node clock stepped back by less than the reset tolerance (not a reset)."""
        with self._lock:
            self.clock_jitter += 1
            self.largest_jitter_s = max(self.largest_jitter_s, backwards_s)

    def record_frame_change(self, text: str) -> None:
        with self._lock:
            self.frame_changes += 1
            self.last_frame_change = text

    def record_time_jump(self) -> None:
        with self._lock:
            self.time_jumps += 1

    def set_values(self, **values: str) -> None:
        """Extra key/values of the planner report (e.g. estimates made elsewhere)."""
        with self._lock:
            self.extra.update(values)

    def record_tick(self) -> None:
        with self._lock:
            self.ticks += 1

    def record_dropped_tick(self) -> None:
        with self._lock:
            self.ticks += 1
            self.dropped_ticks += 1

    def record_reset(self) -> None:
        with self._lock:
            self.input_resets += 1

    def record_outcome(self, outcome: TickOutcome, reason: str = "",
                       latency_s: Optional[float] = None,
                       model_time_s: Optional[float] = None,
                       reason_code: Optional[ReasonCode] = None) -> None:
        """One finished tick; reason_code: why a tick is not OK (None or NONE for OK)."""
        with self._lock:
            self.counts[outcome] += 1
            self.last_outcome = outcome
            self.last_reason = reason
            self.last_reason_code = reason_code
            if reason_code and outcome is not TickOutcome.PLANNED:
                self.skip_codes[reason_code] += 1
            if outcome is TickOutcome.MODEL_ERROR:
                self.last_model_error = reason
            if latency_s is not None:
                self.latency.add(latency_s)
            if model_time_s is not None:
                self.model_time.add(model_time_s)

    # ---- summary
    def camera_skew_s(self) -> Optional[float]:
        stamps = [c.newest_stamp_ns for c in self.cameras]
        if any(s is None for s in stamps):
            return None
        return (max(stamps) - min(stamps)) / NS_PER_S

    def _input_report(self, tracker: InputTracker, now_ns: int) -> HealthReport:
        age = tracker.age_s(now_ns)
        rate = tracker.rate_hz(now_ns)
        recent = tracker.recent_rejects(now_ns)
        values = {"rate_hz": f"{rate:.2f}",
                  "age_s": "none" if age is None else f"{age:.3f}",
                  "received": str(tracker.received), "rejected": str(tracker.rejected),
                  "rejected_recently": str(recent)}
        if tracker.last_reject_reason:
            values["last_reject_reason"] = tracker.last_reject_reason
        if age is None:
            if tracker.rejected:
                return HealthReport(tracker.name, Level.ERROR,
                                    f"every message rejected ({tracker.rejected}): "
                                    f"{tracker.last_reject_reason}", values)
            return HealthReport(tracker.name, Level.STALE, "no message received yet", values)
        if age > self.max_input_age_s:
            if recent:
                return HealthReport(tracker.name, Level.ERROR,
                                    f"newest accepted stamp {age:.3f} s old; {recent} "
                                    f"message(s) rejected since: {tracker.last_reject_reason}",
                                    values)
            return HealthReport(tracker.name, Level.STALE,
                                f"newest stamp {age:.3f} s old (limit "
                                f"{self.max_input_age_s:.3f} s)", values)
        if -age > self.max_stamp_lead_s:
            return HealthReport(tracker.name, Level.WARN,
                                f"stamped {-age:.3f} s ahead of the node clock (limit "
                                f"{self.max_stamp_lead_s:.3f} s)", values)
        if recent:
            return HealthReport(tracker.name, Level.WARN,
                                f"{recent} message(s) rejected in the last "
                                f"{tracker._reject_window_ns / NS_PER_S:g} s: "
                                f"{tracker.last_reject_reason}", values)
        return HealthReport(tracker.name, Level.OK, f"{rate:.1f} Hz", values)

    def _clock_report(self, now_ns: int, wall_ns: Optional[int]) -> Optional[HealthReport]:
        """'node clock' status: WARN when it stopped while wall time went on (no /clock)."""
        if wall_ns is None:
            return None
        if self._clock_progress is None or now_ns != self._clock_progress[0]:
            self._clock_progress = (now_ns, wall_ns)
        stopped_s = (wall_ns - self._clock_progress[1]) / NS_PER_S
        values = {"now_s": f"{now_ns / NS_PER_S:.3f}", "stopped_for_s": f"{stopped_s:.3f}",
                  "jitter_steps": str(self.clock_jitter),
                  "largest_jitter_s": f"{self.largest_jitter_s:.6f}"}
        if stopped_s > self.clock_stop_s:
            return HealthReport("node clock", Level.WARN,
                                f"clock stopped: it has not advanced for {stopped_s:.1f} s of "
                                "wall time (no /clock under use_sim_time?)", values)
        return HealthReport("node clock", Level.OK, "advancing", values)

    def reports(self, now_ns: int, model_info: Optional[dict[str, str]] = None,
                wall_ns: Optional[int] = None) -> list[HealthReport]:
        """Inputs (one per camera + odometry), camera sync, the node clock (when wall_ns,
        a monotonic wall time, is given) and the planner itself."""
        with self._lock:
            out = [self._input_report(c, now_ns) for c in self.cameras]
            out.append(self._input_report(self.odometry, now_ns))
            clock = self._clock_report(now_ns, wall_ns)
            if clock is not None:
                out.append(clock)
            out.append(self._base_offset_report())

            skew = self.camera_skew_s()
            sync_values = {"camera_skew_s": "none" if skew is None else f"{skew:.3f}",
                           "limit_s": f"{self.max_camera_skew_s:.3f}"}
            if skew is None:
                out.append(HealthReport("camera sync", Level.STALE,
                                        "not every camera has a frame", sync_values))
            elif skew > self.max_camera_skew_s:
                out.append(HealthReport("camera sync", Level.WARN,
                                        f"camera skew {skew:.3f} s > "
                                        f"{self.max_camera_skew_s:.3f} s",
                                        sync_values))
            else:
                out.append(HealthReport("camera sync", Level.OK, f"skew {skew:.3f} s",
                                        sync_values))
            out.append(self._planner_report(model_info or {}))
        return out

    def _planner_report(self, model_info: dict[str, str]) -> HealthReport:
        p50, p99 = self.latency.percentile(50), self.latency.percentile(99)
        m50 = self.model_time.percentile(50)
        new_drops = self.dropped_ticks - self._dropped_at_last_report
        self._dropped_at_last_report = self.dropped_ticks
        # Failures since the last report count even when later ticks were fine: a short
        # burst of model errors between two reports must not go unseen.
        new = {o: self.counts[o] - self._not_ok_at_last_report[o] for o in TickOutcome}
        self._not_ok_at_last_report = dict(self.counts)
        values = {"ticks": str(self.ticks), "dropped_ticks": str(self.dropped_ticks),
                  "dropped_since_last_report": str(new_drops),
                  "planned": str(self.counts[TickOutcome.PLANNED]),
                  "skipped": str(self.counts[TickOutcome.SKIPPED]),
                  "invalid_output": str(self.counts[TickOutcome.INVALID_OUTPUT]),
                  "model_errors": str(self.counts[TickOutcome.MODEL_ERROR]),
                  "input_resets": str(self.input_resets),
                  "latency_p50_s": "none" if p50 is None else f"{p50:.3f}",
                  "latency_p99_s": "none" if p99 is None else f"{p99:.3f}",
                  "model_time_p50_s": "none" if m50 is None else f"{m50:.3f}",
                  "last_outcome": self.last_outcome.value if self.last_outcome else "none",
                  "last_reason": self.last_reason,
                  "last_reason_code": _code_name(self.last_reason_code),
                  "time_jumps": str(self.time_jumps),
                  "odometry_frame_changes": str(self.frame_changes)}
        values.update({f"not_ok_{code.name}": str(n)
                       for code, n in sorted(self.skip_codes.items(), key=lambda i: i[0].name)})
        if self.last_frame_change:
            values["last_odometry_frame_change"] = self.last_frame_change
        values.update(self.extra)
        if self.last_model_error:
            values["last_model_error"] = self.last_model_error
        values.update(model_info)
        last = self.last_outcome
        if last is None:
            return HealthReport("planner", Level.STALE, "no tick has completed yet", values)
        if last is TickOutcome.MODEL_ERROR or new[TickOutcome.MODEL_ERROR]:
            return HealthReport("planner", Level.ERROR,
                                f"model error ({new[TickOutcome.MODEL_ERROR]} since the last "
                                f"report): {self.last_model_error}", values)
        if last is TickOutcome.INVALID_OUTPUT or new[TickOutcome.INVALID_OUTPUT]:
            return HealthReport("planner", Level.WARN,
                                f"invalid output ({new[TickOutcome.INVALID_OUTPUT]} since the "
                                f"last report): {self.last_reason}", values)
        if last is TickOutcome.SKIPPED:
            return HealthReport("planner", Level.WARN,
                                f"tick skipped ({_code_name(self.last_reason_code)}): "
                                f"{self.last_reason}",
                                values)
        if new_drops:
            return HealthReport("planner", Level.WARN,
                                f"{new_drops} tick(s) dropped while the model was busy",
                                values)
        return HealthReport("planner", Level.OK, "planning", values)


def _code_name(code: Optional[ReasonCode]) -> str:
    """A ReasonCode as /diagnostics writes it ("" for none)."""
    return "" if code is None else code.name


def inference_path_report(path: InferencePath) -> HealthReport:
    """The model's inference path: ERROR with the reason when it runs other than configured
    (the fast path fell back to the eager one, or a step runs without its CUDA graph)."""
    values = {"inference_path": path.name or "none"}
    if path.problem:
        values["inference_problem"] = path.problem
        return HealthReport("model path", Level.ERROR, path.problem, values)
    return HealthReport("model path", Level.OK, f"{path.name or 'no'} inference path", values)
