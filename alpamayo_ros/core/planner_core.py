"""PlannerCore: one snapshot of the inputs in, one PlanResult out.

The inputs (buffers, acceptance checks, time-jump and frame-change rules, decoding ahead,
input counters) live in core/input_streams.py (InputStreams, `core.inputs`); this class
plans a tick from an InputSnapshot: t0 and frame selection, the input gates, the history,
the frame decodes, the model call and the output checks. It is the single planning
implementation driven by the ROS node (node clock) and by the replay tool (stepped bag
time): time is always passed in as `now_ns` (int nanoseconds), nothing here reads a clock
except for wall-clock timings. No rclpy, no torch.

Threading: subscription callbacks feed `core.inputs` while a worker thread runs `prepare` +
`run` (or `tick`). `prepare` raises InputNotReady; `run` never raises for model failures
(status MODEL_ERROR), so the core stays usable after any model exception, CUDA
out-of-memory included.

Typical node use:
    core.inputs.add_image(slot, stamp_ns, EncodedImage(...))  # camera callbacks
    core.inputs.add_odometry(OdometrySample(...))             # odometry callback
    if gate.try_enter():                                      # timer, see tick_gate.TickGate
        worker: try: prepared = core.prepare(now_ns); result = core.run(prepared)
                except InputNotReady as e: result = core.skipped(now_ns, e)
                finally: gate.leave()
or simply `result = core.tick(now_ns)`.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.errors import InputNotReady
from alpamayo_ros.core.frame_decoder import FrameDecodeError, FrameJob
from alpamayo_ros.core.frame_selection import FrameSelection, select_frames
from alpamayo_ros.core.geometry import Pose, from_local_frame
from alpamayo_ros.core.history import (HISTORY_SPAN_NS, HistoryResult, MotionLimits,
                                       OdometryTrack, build_history)
from alpamayo_ros.core.image_decode import EncodedImage
from alpamayo_ros.core.input_streams import (TIME_JUMP_CONFIRMATIONS, FrameChange,
                                             InputCounts, InputEvent, InputSnapshot,
                                             InputStreams, InsertResult, StreamKind, TimeJump)
from alpamayo_ros.core.navigation import NavStatus
from alpamayo_ros.core.odometry import OdometrySample
from alpamayo_ros.core.output_check import OutputCheckLimits, check_sample
from alpamayo_ros.core.plan_result import (Candidate, PlanResult, PlanStatus, ReasonCode,
                                           TickTimings)
from alpamayo_ros.core.ring_buffer import InsertStatus
from alpamayo_ros.core.types import (FRAMES_PER_CAMERA, NS_PER_S,
                                     InferenceOptions, ModelInput, ModelOutput, PlannerModel)

__all__ = ["PlannerCore", "PlannerConfig", "PreparedInputs", "PlanResult", "PlanStatus",
           "FrameChange", "Candidate", "TickTimings", "InsertResult", "InsertStatus", "TimeJump",
           "CoreCounters", "EncodedImage", "InputNotReady", "TIME_JUMP_CONFIRMATIONS"]

# Longest model error message kept in a PlanResult (tracebacks of CUDA errors are long).
MAX_REASON_CHARS = 500

# Skip codes that only mean "waiting for data": right after a buffer restart they say
# CLOCK_RESET instead.
_WAITING_FOR_DATA = frozenset({ReasonCode.NO_FRAME, ReasonCode.NO_ODOMETRY,
                               ReasonCode.HISTORY_TOO_SHORT})


def _insert_count(kind: StreamKind, status: InsertStatus) -> property:
    return property(lambda self: self.inputs.inserts[kind, status],
                    doc=f"{kind.value} inserts with status {status.name}")


def _event_count(event: InputEvent) -> property:
    return property(lambda self: self.inputs.events[event], doc=f"{event.value} events")


def _status_count(status: PlanStatus) -> property:
    return property(lambda self: self.statuses[status], doc=f"ticks with status {status.name}")


def _navigation_count(status: NavStatus) -> property:
    return property(lambda self: self.navigation[status],
                    doc=f"prepared ticks with navigation {status.value}")


@dataclass
class CoreCounters:
    """Counts since construction (monotonic; reset() does not zero them): the input counts
    (InputCounts, keyed by enums), the ticks per PlanStatus and the frame decodes; the
    named properties read them."""

    inputs: InputCounts = field(default_factory=InputCounts)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    decodes: int = 0
    decode_cache_hits: int = 0

    # Navigation: ticks prepared per NavStatus (what each did with navigation).
    navigation: collections.Counter = field(default_factory=collections.Counter)

    frames_added = _insert_count(StreamKind.CAMERA, InsertStatus.ADDED)
    frames_replaced = _insert_count(StreamKind.CAMERA, InsertStatus.REPLACED)
    frames_rejected = _insert_count(StreamKind.CAMERA, InsertStatus.REJECTED)
    frames_too_old = _insert_count(StreamKind.CAMERA, InsertStatus.TOO_OLD)
    odometry_added = _insert_count(StreamKind.ODOMETRY, InsertStatus.ADDED)
    odometry_replaced = _insert_count(StreamKind.ODOMETRY, InsertStatus.REPLACED)
    odometry_rejected = _insert_count(StreamKind.ODOMETRY, InsertStatus.REJECTED)
    odometry_too_old = _insert_count(StreamKind.ODOMETRY, InsertStatus.TOO_OLD)
    navigation_added = _insert_count(StreamKind.NAVIGATION, InsertStatus.ADDED)
    navigation_rejected = _insert_count(StreamKind.NAVIGATION, InsertStatus.REJECTED)
    out_of_order = _event_count(InputEvent.OUT_OF_ORDER)
    time_jumps = _event_count(InputEvent.TIME_JUMP)
    odometry_frame_changes = _event_count(InputEvent.ODOMETRY_FRAME_CHANGE)
    resets = _event_count(InputEvent.RESET)
    ok = _status_count(PlanStatus.OK)
    skipped = _status_count(PlanStatus.SKIPPED)
    invalid_output = _status_count(PlanStatus.INVALID_OUTPUT)
    model_errors = _status_count(PlanStatus.MODEL_ERROR)
    navigation_used = _navigation_count(NavStatus.USED)
    navigation_none = _navigation_count(NavStatus.NONE)
    navigation_expired = _navigation_count(NavStatus.EXPIRED)
    navigation_empty = _navigation_count(NavStatus.EMPTY)

    @property
    def ticks(self) -> int:
        return sum(self.statuses.values())


@dataclass
class PreparedInputs:
    """Inputs of one tick ready for the model (own copies; buffers may change meanwhile).

    now_ns: tick time [ns]; selection: t0 and the 16 frames; history: 16 poses in the t0
    frame and the t0 pose in the odom frame; model_input: what the model gets;
    timings: selection/history/decode/input_preparation filled; decodes: cache misses;
    odom_frame_id: frame_id of the odometry the history was built from.
    """

    now_ns: int
    selection: FrameSelection
    history: HistoryResult
    model_input: ModelInput
    timings: TickTimings = field(default_factory=TickTimings)
    decodes: int = 0
    odom_frame_id: str = ""
    # time.perf_counter() when preparation ended / when the newest frame used arrived.
    prepared_wall_s: float = 0.0
    newest_frame_arrival_s: Optional[float] = None
    # What the tick did with navigation (core.navigation.NavStatus value); the text the
    # model gets is model_input.navigation_text.
    navigation_status: str = ""

    @property
    def t0_ns(self) -> int:
        return self.selection.t0_ns


class PlannerCore:
    """Turns InputSnapshots of its InputStreams (`inputs`) into PlanResults with a
    PlannerModel.

    config: PlannerConfig; model: any PlannerModel (AlpamayoRuntime, ConstantVelocityModel);
    options: InferenceOptions of each model call; on_time_jump: called (outside the locks)
    with each TimeJump of the inputs, e.g. for logging.
    """

    def __init__(self, config: PlannerConfig, model: PlannerModel,
                 options: InferenceOptions = InferenceOptions(),
                 on_time_jump: Optional[Callable[[TimeJump], None]] = None) -> None:
        self.config = config
        self.model = model
        self.options = options
        # Frame keys restart with this core's epochs: features a reused model kept for an
        # earlier core's keys (e.g. the previous bag of a replay) must not match them.
        clear_vision_cache = getattr(model, "clear_vision_cache", None)
        if clear_vision_cache is not None:
            clear_vision_cache()
        self.inputs = InputStreams(config, on_time_jump)
        self._statuses: collections.Counter = collections.Counter()  # PlanStatus -> ticks
        self._navigation_ticks: collections.Counter = collections.Counter()  # NavStatus
        self._statuses_lock = threading.Lock()
        self._base_offset = Pose.from_xyz_rpy(config.base_offset_xyz, config.base_offset_rpy)
        self._limits = OutputCheckLimits(config.first_waypoint_abs_tolerance,
                                         config.first_waypoint_rel_tolerance,
                                         config.max_backward_motion, config.max_speed,
                                         config.max_acceleration)
        self._extrapolation_ns = int(round(config.max_extrapolation * NS_PER_S))
        self._motion_limits = MotionLimits(config.max_speed, config.max_acceleration,
                                           config.max_yaw_rate)
        self._lead_ns = int(round(config.max_stamp_lead * NS_PER_S))
        self._min_frame_side = int(getattr(model, "min_frame_side", 0))

    # ------------------------------------------------------------------ inputs
    # The inputs are `self.inputs`; these forward the calls that tests and tools make on
    # the core itself.
    def add_image(self, camera_slot: int, stamp_ns: int, image: EncodedImage,
                  arrival_s: Optional[float] = None) -> InsertResult:
        """InputStreams.add_image."""
        return self.inputs.add_image(camera_slot, stamp_ns, image, arrival_s)

    def add_odometry(self, sample: OdometrySample) -> InsertResult:
        """InputStreams.add_odometry."""
        return self.inputs.add_odometry(sample)

    def reset(self, now_ns: Optional[int] = None, why: str = "a reset") -> None:
        """InputStreams.reset."""
        self.inputs.reset(now_ns, why)

    def odometry_track(self, start_ns: Optional[int] = None) -> OdometryTrack:
        """InputStreams.odometry_track."""
        return self.inputs.odometry_track(start_ns)

    def add_navigation(self, stamp_ns: int, text, valid_for_ns: int, source: str = ""
                       ) -> InsertResult:
        """InputStreams.add_navigation."""
        return self.inputs.add_navigation(stamp_ns, text, valid_for_ns, source)

    def buffered_counts(self) -> tuple:
        """InputStreams.buffered_counts."""
        return self.inputs.buffered_counts()

    def close(self) -> None:
        """Stop the frame decoding threads (queued decodes are dropped)."""
        self.inputs.close()

    def counters(self) -> CoreCounters:
        """A copy of the counters (input, tick and decode counts)."""
        cache = self.inputs.decoder.cache
        with self._statuses_lock:
            statuses = collections.Counter(self._statuses)
            navigation = collections.Counter(self._navigation_ticks)
        return CoreCounters(self.inputs.counts(), statuses, cache.decodes, cache.hits,
                            navigation)

    # ------------------------------------------------------------------ planning
    def _check_camera_age(self, now_ns: int, stamps_per_slot: list, describe: tuple) -> None:
        """InputNotReady naming the camera whose newest frame (t0 = the oldest of the
        cameras' newest frames) is older than max_input_age at the tick."""
        newest = [int(stamps[-1]) if len(stamps) else None for stamps in stamps_per_slot]
        if any(n is None for n in newest):
            return  # frame selection names the camera that never sent a frame
        slot = int(np.argmin(newest))
        age = (now_ns - newest[slot]) / NS_PER_S
        if age > self.config.max_input_age:
            raise InputNotReady(f"inputs stale: t0 is {age:.3f} s old at the tick "
                                f"(max_input_age {self.config.max_input_age:g} s); newest "
                                f"frame of {describe[slot]} is the oldest",
                                ReasonCode.STALE_CAMERA)

    def _check_stamp_lead(self, now_ns: int, newest: list) -> None:
        """FUTURE_STAMP naming the input whose newest stamp is ahead of the tick by more
        than max_stamp_lead. newest: (name, stamp or None) per input."""
        for name, stamp in newest:
            if stamp is not None and stamp - now_ns > self._lead_ns:
                raise InputNotReady(
                    f"{name}: newest stamp is {(stamp - now_ns) / NS_PER_S:.3f} s ahead of "
                    f"the tick (max_stamp_lead {self.config.max_stamp_lead:g} s)",
                    ReasonCode.FUTURE_STAMP)

    def prepare(self, now_ns: int, tick_wall_s: Optional[float] = None,
                snapshot: Optional[InputSnapshot] = None) -> PreparedInputs:
        """Select t0 and frames, check staleness, interpolate the history, decode frames.

        now_ns: the tick time [ns] on the clock of the header stamps (node clock, sim time
        or stepped bag time); used for the staleness gates (now - t0, now - newest
        odometry) and the lead gate (stamps ahead of now by more than max_stamp_lead).
        tick_wall_s: time.perf_counter() when the tick fired (default: now), the start of
        timings.tick_to_model_start. snapshot: the inputs to plan from (default: a
        snapshot of `inputs` taken now).
        Raises InputNotReady with the reason and its ReasonCode when this tick cannot be
        planned; while the data still reaches back to a reset or stream restart, waiting
        for data says CLOCK_RESET.
        """
        start = time.perf_counter()
        if snapshot is None:
            snapshot = self.inputs.snapshot()
        try:
            return self._prepare(snapshot, now_ns, start,
                                 start if tick_wall_s is None else tick_wall_s)
        except InputNotReady as exc:
            raise self._after_restart(exc, now_ns, snapshot.last_restart) from None

    def _after_restart(self, exc: InputNotReady, now_ns: int, restart: Optional[tuple]
                       ) -> InputNotReady:
        """exc, or CLOCK_RESET when it only waits for data that a restart emptied."""
        if restart is None or exc.code not in _WAITING_FOR_DATA:
            return exc
        since = (now_ns - restart[0]) / NS_PER_S
        if since > (HISTORY_SPAN_NS / NS_PER_S + self.config.buffer_duration):
            return exc
        return InputNotReady(f"{exc} (buffers restarted {since:.2f} s ago: {restart[1]})",
                             ReasonCode.CLOCK_RESET)

    def _prepare(self, snapshot: InputSnapshot, now_ns: int, start: float,
                 tick_wall_s: float) -> PreparedInputs:
        cfg = self.config
        cameras = snapshot.cameras
        describe = self.inputs.slot_descriptions
        self._check_stamp_lead(now_ns, [
            *((describe[k], int(c[0][-1]) if len(c[0]) else None)
              for k, c in enumerate(cameras)),
            ("odometry", snapshot.newest_odometry_ns())])
        # Staleness first, so a silent camera is named as the cause (frame selection
        # around its old t0 would otherwise blame the cameras that are fine).
        self._check_camera_age(now_ns, [c[0] for c in cameras], describe)
        selection = select_frames([c[0] for c in cameras], cfg.frame_tolerance, describe)
        self.inputs.note_tick_t0(selection.t0_ns)
        instruction, nav_status = snapshot.navigation.select(selection.t0_ns)
        # Only the odometry the history can use (the gap check looks one sample
        # further back than t0-1.5 s).
        track = snapshot.odometry_track(selection.t0_ns - HISTORY_SPAN_NS)
        frames_ids = snapshot.odom_frames
        frame_change_ns = snapshot.frame_change_ns
        if len(track) == 0:
            raise InputNotReady("odometry: no sample received yet", ReasonCode.NO_ODOMETRY)
        # The history is whole once the new frames' first sample is within
        # max_extrapolation of the window's start (build_history's own rule).
        if frame_change_ns is not None and \
                frame_change_ns > selection.t0_ns - HISTORY_SPAN_NS + self._extrapolation_ns:
            raise InputNotReady(
                f"odometry frames changed to {frames_ids[0]!r}/{frames_ids[1]!r} at "
                f"t0{(frame_change_ns - selection.t0_ns) / NS_PER_S:+.3f} s: the history "
                "restarts in the new frames", ReasonCode.ODOMETRY_FRAME_CHANGE)
        odometry_age = (now_ns - int(track.stamps_ns[-1])) / NS_PER_S
        if odometry_age > cfg.max_odometry_age:
            raise InputNotReady(f"odometry stale: newest sample is {odometry_age:.3f} s old "
                                f"at the tick (max_odometry_age {cfg.max_odometry_age:g} s)",
                                ReasonCode.STALE_ODOMETRY)
        odom_frame_id = frames_ids[0] if frames_ids else ""
        selected_at = time.perf_counter()
        history = build_history(track, selection.t0_ns, self._base_offset,
                                method=cfg.interpolation,
                                max_extrapolation=cfg.max_extrapolation,
                                max_odometry_gap=cfg.max_odometry_gap,
                                limits=self._motion_limits)
        history_at = time.perf_counter()
        jobs, arrival_s = snapshot.frame_jobs(selection)
        frames, decodes, decode_seconds = self._decode_selected(jobs, describe)
        end = time.perf_counter()
        timings = TickTimings(input_preparation=end - start, selection=selected_at - start,
                              history=history_at - selected_at, decode=decode_seconds,
                              tick_to_model_start=end - tick_wall_s)
        keys = tuple(key for key, _ in jobs)
        model_input = ModelInput(frames=frames, history_xyz=history.xyz,
                                 history_rot=history.rot, frame_keys=keys,
                                 camera_indices=tuple(cfg.camera_indices),
                                 navigation_text=instruction.text if instruction else None)
        with self._statuses_lock:
            self._navigation_ticks[nav_status] += 1
        return PreparedInputs(now_ns=int(now_ns), selection=selection, history=history,
                              model_input=model_input, timings=timings, decodes=decodes,
                              odom_frame_id=odom_frame_id, prepared_wall_s=end,
                              newest_frame_arrival_s=arrival_s,
                              navigation_status=nav_status.value)

    def _decode_selected(self, jobs: list[FrameJob], describe: tuple
                         ) -> tuple[tuple, int, float]:
        """The (H, W, 3) uint8 frames of the jobs (camera-major, oldest first), frames
        not decoded yet at the start (decoded now, in parallel, or waited for), seconds
        spent on that."""
        start = time.perf_counter()
        try:
            frames, decodes = self.inputs.decoder.decode(jobs)
        except FrameDecodeError as exc:
            _, slot, stamp = exc.key
            raise InputNotReady(f"{describe[slot]}: frame at {stamp} ns cannot be "
                                f"decoded: {exc}", ReasonCode.DECODE_ERROR) from exc
        decode_seconds = time.perf_counter() - start
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            per_slot = ", ".join(
                f"slot {s}: " + "/".join(f"{f.shape[0]}x{f.shape[1]}" for f in
                                        frames[s * FRAMES_PER_CAMERA:(s + 1) * FRAMES_PER_CAMERA])
                for s in range(self.inputs.num_cameras))
            raise InputNotReady(f"frame sizes differ (HxW {per_slot}); the model needs one "
                                "size: set output_image_size to resize all frames",
                                ReasonCode.SIZE_MISMATCH)
        height, width = frames[0].shape[:2]
        if min(height, width) < self._min_frame_side:
            raise InputNotReady(f"frames of {width}x{height} px (WxH) are smaller than the "
                                f"model accepts ({self._min_frame_side} px a side); set "
                                "output_image_size to resize them", ReasonCode.SIZE_MISMATCH)
        # The cached frames go to the model as a tuple (ModelInput accepts one): stacking
        # them would copy 100 MB per tick at 1080x1920 only for the model to resize them.
        return tuple(frames), decodes, decode_seconds

    def run(self, prepared: PreparedInputs) -> PlanResult:
        """Run the model on prepared inputs and build the PlanResult (never raises for
        model failures: status MODEL_ERROR with the message)."""
        start = time.perf_counter()
        # Until now: hand-over to the worker and input preparation (prepare's estimate
        # ended with preparation).
        prepared.timings.tick_to_model_start += start - prepared.prepared_wall_s
        try:
            output = self.model.predict(prepared.model_input, self.options)
        except Exception as exc:  # torch errors, CUDA OOM, bugs in a backend: all reported
            message = f"{type(exc).__name__}: {exc}"
            if len(message) > MAX_REASON_CHARS:
                message = message[:MAX_REASON_CHARS] + "..."
            result = self._base_result(prepared, PlanStatus.MODEL_ERROR, message)
            result.reason_code = ReasonCode.MODEL_ERROR
            result.timings.model_call = time.perf_counter() - start
            self._count_result(result)
            return result
        model_done = time.perf_counter()
        result = self._build_output(prepared, output)
        result.timings.model_call = model_done - start
        result.timings.output_building = time.perf_counter() - model_done
        self._count_result(result)
        return result

    def plan(self, snapshot: InputSnapshot, now_ns: int,
             tick_wall_s: Optional[float] = None) -> PlanResult:
        """One tick from a snapshot of the inputs: prepare + run; a tick that cannot be
        planned returns status SKIPPED with the reason."""
        try:
            prepared = self.prepare(now_ns, tick_wall_s, snapshot)
        except InputNotReady as exc:
            return self.skipped(now_ns, exc)
        return self.run(prepared)

    def tick(self, now_ns: int) -> PlanResult:
        """plan() on a snapshot of the inputs taken now."""
        return self.plan(self.inputs.snapshot(), now_ns)

    def skipped(self, now_ns: int, cause: InputNotReady) -> PlanResult:
        """A SKIPPED PlanResult (counted) for an InputNotReady caught by the caller."""
        code = cause.code if cause.code is not None else ReasonCode.NO_FRAME
        result = PlanResult(status=PlanStatus.SKIPPED, reason=str(cause), reason_code=code,
                            now_ns=int(now_ns), model_id=getattr(self.model, "model_id", ""))
        self._count_result(result)
        return result

    def _count_result(self, result: PlanResult) -> None:
        with self._statuses_lock:
            self._statuses[result.status] += 1

    def _base_result(self, prepared: PreparedInputs, status: PlanStatus, reason: str
                     ) -> PlanResult:
        sel, hist = prepared.selection, prepared.history
        return PlanResult(
            status=status, reason=reason, now_ns=prepared.now_ns, t0_ns=sel.t0_ns,
            frame_stamps_ns=sel.frame_stamps_ns.copy(), frame_skews=sel.frame_skews.copy(),
            camera_skew=sel.camera_skew, history_xyz=hist.xyz, history_rot=hist.rot,
            history_stamps_ns=hist.stamps_ns, history_span=hist.span,
            odometry_samples=hist.odometry_samples,
            odometry_newest_ns=hist.odometry_newest_ns, t0_pose_odom=hist.t0_pose_odom,
            odom_frame_id=prepared.odom_frame_id,
            newest_frame_arrival_s=prepared.newest_frame_arrival_s,
            timings=replace(prepared.timings), model_id=getattr(self.model, "model_id", ""),
            decodes=prepared.decodes,
            navigation_text=prepared.model_input.navigation_text or "",
            navigation_status=prepared.navigation_status)

    def _build_output(self, prepared: PreparedInputs, output: ModelOutput) -> PlanResult:
        result = self._base_result(prepared, PlanStatus.OK, "")
        result.timings.model = output.timings
        result.model_id = output.model_id or result.model_id
        result.v0 = float(output.v0)
        offsets_ns = np.round(np.asarray(output.waypoint_offsets, dtype=np.float64)
                              * NS_PER_S).astype(np.int64)
        result.waypoint_stamps_ns = prepared.t0_ns + offsets_ns
        t0_pose = prepared.history.t0_pose_odom
        for sample in output.samples:
            reason = check_sample(sample, result.v0, self._limits)
            xyz = np.asarray(sample.xyz, dtype=np.float64)
            rot = np.asarray(sample.rot, dtype=np.float64)
            if xyz.ndim == 2 and xyz.shape[1] == 3 and rot.shape == (len(xyz), 3, 3):
                xyz_odom, rot_odom = from_local_frame(xyz, rot, t0_pose)
            else:  # malformed sample: check_sample already marked it invalid
                xyz_odom, rot_odom = xyz, rot
            result.candidates.append(Candidate(
                xyz=xyz, rot=rot, yaw=np.asarray(sample.yaw), speed=np.asarray(sample.speed),
                acceleration=np.asarray(sample.acceleration),
                curvature=np.asarray(sample.curvature), xyz_odom=xyz_odom, rot_odom=rot_odom,
                coc=sample.coc, coc_token_count=int(sample.coc_token_count),
                coc_truncated=bool(sample.coc_truncated), valid=not reason,
                invalid_reason=reason))
        valid = [i for i, c in enumerate(result.candidates) if c.valid]
        if not result.candidates:
            result.status, result.reason = PlanStatus.INVALID_OUTPUT, "model returned no samples"
            result.reason_code = ReasonCode.INVALID_OUTPUT
        elif not valid:
            # Selection rule: the first valid sample; none valid -> index 0, INVALID_OUTPUT.
            result.status = PlanStatus.INVALID_OUTPUT
            result.reason = (f"all {len(result.candidates)} samples failed the output checks; "
                             f"sample 0: {result.candidates[0].invalid_reason}")
            result.reason_code = ReasonCode.INVALID_OUTPUT
            result.selected_index = 0
        else:
            result.selected_index = valid[0]
        return result
