"""PlannerCore: buffers + t0/frame selection + history + decoding + model call + output checks.

The single planning implementation driven by the ROS node (node clock) and by the replay
tool (stepped bag time): time is always passed in as `now_ns` (int nanoseconds), nothing
here reads a clock except for wall-clock timings. No rclpy, no torch.

Threading: `add_image` / `add_odometry` may be called from subscription callbacks while a
worker thread runs `prepare` + `run` (or `tick`); buffers and the decode cache are locked.
`prepare` raises InputNotReady; `run` never raises for model failures (status MODEL_ERROR),
so the core stays usable after any model exception, CUDA out-of-memory included.

Typical node use:
    core.add_image(slot, stamp_ns, EncodedImage(...))      # camera callbacks
    core.add_odometry(OdometrySample(...))                   # odometry callback
    if gate.try_enter():                                     # timer, see tick_gate.TickGate
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
from alpamayo_ros.core.errors import InputNotReady, OdometryError
from alpamayo_ros.core.frame_decoder import FrameDecodeError, FrameDecoder, FrameJob
from alpamayo_ros.core.frame_selection import FrameSelection, select_frames
from alpamayo_ros.core.geometry import Pose, from_local_frame
from alpamayo_ros.core.history import (HISTORY_SPAN_NS, HistoryResult, MotionLimits,
                                       OdometryTrack, build_history)
from alpamayo_ros.core.navigation import NavigationBuffer, check_instruction
from alpamayo_ros.core.image_decode import (SUPPORTED_ENCODINGS, DecodeCache, EncodedImage,
                                            is_supported_encoding)
from alpamayo_ros.core.odometry import OdometrySample, checked_odometry
from alpamayo_ros.core.output_check import OutputCheckLimits, check_sample
from alpamayo_ros.core.plan_result import (Candidate, PlanResult, PlanStatus, ReasonCode,
                                           TickTimings)
from alpamayo_ros.core.ring_buffer import InsertStatus, StampedBuffer
from alpamayo_ros.core.types import (FRAMES_PER_CAMERA, NS_PER_S,
                                     InferenceOptions, ModelInput, ModelOutput, PlannerModel)

__all__ = ["PlannerCore", "PlannerConfig", "PreparedInputs", "PlanResult", "PlanStatus",
           "FrameChange", "Candidate", "TickTimings", "InsertResult", "InsertStatus", "TimeJump",
           "CoreCounters", "EncodedImage", "InputNotReady"]

# Longest model error message kept in a PlanResult (tracebacks of CUDA errors are long).
MAX_REASON_CHARS = 500


# Out-of-order stamps in a row on one stream that make a time jump of that stream: a
# single late, zero-stamped or stray frame must never clear anything.
TIME_JUMP_CONFIRMATIONS = 3


@dataclass(frozen=True)
class TimeJump:
    """One stream went back in time consistently (TIME_JUMP_CONFIRMATIONS stamps in a row,
    e.g. a bag loop or a simulator reset): that stream's buffer restarted.

    source: which stream ("camera slot 1 (...)" or "odometry");
    stamp_ns: the stamp that confirmed it; previous_newest_ns: the stream's newest before.
    """

    source: str
    stamp_ns: int
    previous_newest_ns: int

    @property
    def backwards(self) -> float:
        """How far time went back [s]."""
        return (self.previous_newest_ns - self.stamp_ns) / NS_PER_S

    def __str__(self) -> str:
        return (f"time jump on {self.source}: stamps went back {self.backwards:.3f} s "
                f"{TIME_JUMP_CONFIRMATIONS} times in a row; restarted its buffer")


@dataclass(frozen=True)
class FrameChange:
    """The odometry frame_id or child_frame_id changed: the odometry buffer restarted.

    previous / current: (frame_id, child_frame_id); stamp_ns: the first sample in the new
    frames.
    """

    stamp_ns: int
    previous: tuple
    current: tuple

    def __str__(self) -> str:
        return (f"odometry frames changed from {self.previous[0]!r}/{self.previous[1]!r} to "
                f"{self.current[0]!r}/{self.current[1]!r}: the history restarts (positions "
                "in different frames cannot be interpolated together)")


@dataclass(frozen=True)
class InsertResult:
    """Result of add_image/add_odometry: status, reason (for REJECTED/TOO_OLD), and the time
    jump or frame change this insertion confirmed (the stream then restarted with it)."""

    status: InsertStatus
    reason: str = ""
    time_jump: Optional[TimeJump] = None
    frame_change: Optional[FrameChange] = None


@dataclass
class CoreCounters:
    """Counts since construction (monotonic; reset() does not zero them)."""

    frames_added: int = 0
    frames_replaced: int = 0
    frames_rejected: int = 0
    frames_too_old: int = 0
    odometry_added: int = 0
    odometry_replaced: int = 0
    odometry_rejected: int = 0
    odometry_too_old: int = 0
    out_of_order: int = 0
    time_jumps: int = 0
    odometry_frame_changes: int = 0
    resets: int = 0
    decodes: int = 0
    decode_cache_hits: int = 0
    ticks: int = 0
    skipped: int = 0
    ok: int = 0
    invalid_output: int = 0
    model_errors: int = 0
    # Navigation instructions accepted / refused, and prepared ticks by NavStatus.
    navigation_added: int = 0
    navigation_rejected: int = 0
    navigation_used: int = 0
    navigation_none: int = 0
    navigation_expired: int = 0
    navigation_empty: int = 0


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


def _frame_jobs(selection: FrameSelection, cameras: list, epoch: int
                ) -> tuple[list[FrameJob], Optional[float]]:
    """(cache key (epoch, slot, stamp), undecoded frame) of the 16 selected frames in
    model order, and the arrival time of the newest one (None if unknown). The epoch in
    the key keeps a restarted stream's frames (same stamps, other images) apart."""
    jobs = []
    newest = (-1, None)  # (stamp, arrival) of the newest frame used
    for index, stamp in enumerate(selection.frame_stamps_ns):
        slot = index // FRAMES_PER_CAMERA
        stamps, items = cameras[slot]
        image, arrival_s = items[int(np.searchsorted(stamps, stamp))]
        if arrival_s is not None and (stamp, arrival_s) > newest:
            newest = (int(stamp), arrival_s)
        jobs.append(((epoch, slot, int(stamp)), image))
    return jobs, newest[1]


class PlannerCore:
    """Buffers sensor data and turns it into PlanResults with a PlannerModel.

    config: PlannerConfig; model: any PlannerModel (AlpamayoRuntime, ConstantVelocityModel);
    options: InferenceOptions of each model call; on_time_jump: called (outside the locks)
    with a TimeJump whenever a jump clears the buffers, e.g. for logging.
    """

    def __init__(self, config: PlannerConfig, model: PlannerModel,
                 options: InferenceOptions = InferenceOptions(),
                 on_time_jump: Optional[Callable[[TimeJump], None]] = None) -> None:
        self.config = config
        self.model = model
        self.options = options
        self.on_time_jump = on_time_jump
        # Frame keys restart with this core's epochs: features a reused model kept for an
        # earlier core's keys (e.g. the previous bag of a replay) must not match them.
        clear_vision_cache = getattr(model, "clear_vision_cache", None)
        if clear_vision_cache is not None:
            clear_vision_cache()
        self._lock = threading.RLock()
        # One camera slot per configured camera (the rig: config.camera_indices).
        self.num_cameras = len(config.camera_indices)
        self._cameras = [StampedBuffer(int(config.buffer_duration * NS_PER_S),
                                       config.camera_buffer_max_entries)
                         for _ in range(self.num_cameras)]
        self._odometry = StampedBuffer(int(config.odometry_buffer_duration * NS_PER_S),
                                       config.odometry_buffer_max_entries)
        self._navigation = NavigationBuffer()
        self._decoder = FrameDecoder(DecodeCache(config.decode_cache_size,
                                                 max_pixels=config.max_image_pixels),
                                     config.output_image_size, config.decode_threads)
        self._base_offset = Pose.from_xyz_rpy(config.base_offset_xyz, config.base_offset_rpy)
        self._limits = OutputCheckLimits(config.first_waypoint_abs_tolerance,
                                         config.first_waypoint_rel_tolerance,
                                         config.max_backward_motion, config.max_speed,
                                         config.max_acceleration)
        self._jump_ns = int(round(config.time_jump_tolerance * NS_PER_S))
        self._extrapolation_ns = int(round(config.max_extrapolation * NS_PER_S))
        # "camera slot 3 (index 6, front_tele_30fov)" per slot, for messages (config is frozen).
        self._slot_descriptions = tuple(config.describe_slot(s)
                                        for s in range(self.num_cameras))
        self._counters = CoreCounters()
        # (frame_id, child_frame_id) of the buffered odometry (frame_id names the frame of
        # t0_pose_odom and path_odom); None before the first sample.
        self._odom_frames: Optional[tuple] = None
        self._frame_change_ns: Optional[int] = None
        # Pending out-of-order (stamp, item) per stream: a possible time jump of that stream.
        self._backward: dict[str, list] = {}
        # Streams that restarted on a time jump of their own since the last reset: their
        # buffers hold only the new time line's data (see reset).
        self._restarted: set[str] = set()
        # (stamp or tick time [ns], why) of the last event that emptied buffers.
        self._last_restart: Optional[tuple] = None
        # Bumped whenever decoded frames are dropped (a restarted stream reuses stamps): the
        # first part of the frame keys that let a model reuse its work on a frame.
        self._frame_epoch = 0
        # t0 of the last prepared tick and the last few steps between ticks' t0 [ns]: where
        # the next tick's t0 will be, so frames are decoded ahead only for that selection.
        self._last_t0_ns: Optional[int] = None
        self._t0_steps: collections.deque = collections.deque(maxlen=5)
        self._motion_limits = MotionLimits(config.max_speed, config.max_acceleration,
                                           config.max_yaw_rate)
        self._lead_ns = int(round(config.max_stamp_lead * NS_PER_S))
        self._min_frame_side = int(getattr(model, "min_frame_side", 0))

    # ------------------------------------------------------------------ inputs
    def add_image(self, camera_slot: int, stamp_ns: int, image: EncodedImage,
                  arrival_s: Optional[float] = None) -> InsertResult:
        """Buffer a frame (undecoded) of camera slot 0..num_cameras-1 at its stamp [ns].

        arrival_s: time.perf_counter() when it was received (live only), the start of the
        plan's wall-clock latency (PlanResult.newest_frame_arrival_s).
        """
        if not 0 <= camera_slot < self.num_cameras:
            return self._count("frames", InsertResult(
                InsertStatus.REJECTED,
                f"camera slot {camera_slot} out of range 0..{self.num_cameras - 1}"))
        source = self._slot_descriptions[camera_slot]
        if not is_supported_encoding(image.encoding):
            return self._count("frames", InsertResult(
                InsertStatus.REJECTED,
                f"{source}: unsupported encoding {image.encoding!r}; supported: "
                f"{', '.join(SUPPORTED_ENCODINGS)}"))
        if int(stamp_ns) == 0:
            return self._count("frames", InsertResult(
                InsertStatus.REJECTED, f"{source}: zero stamp (header.stamp not set)"))
        inserted = self._insert(self._cameras[camera_slot], source, int(stamp_ns),
                                (image, arrival_s))
        if self.config.decode_ahead and inserted.status in (InsertStatus.ADDED,
                                                            InsertStatus.REPLACED):
            self._decode_ahead()
        return self._count("frames", inserted)

    def _decode_ahead(self) -> None:
        """Queue the decodes of the frames a tick at this moment would select (the
        tick's own select_frames; see core/frame_decoder.py), once that selection's t0 is
        near the one expected at the next tick (from the last ticks' t0 steps). Cameras
        faster than the ticks give t0s between two ticks' ones whose frames no tick uses:
        those are not decoded ahead."""
        if self._decoder.threads == 0:
            return
        with self._lock:
            last_t0, steps = self._last_t0_ns, sorted(self._t0_steps)
            if last_t0 is None or not steps:
                return  # until two ticks show their rhythm, frames are decoded at the tick
            cameras = [b.snapshot() for b in self._cameras]
            epoch = self._frame_epoch
        if any(len(c[0]) < 2 for c in cameras):
            return  # the tick will say which camera lacks frames
        # t0 (the oldest of the cameras' newest stamps) moves in steps of the cameras'
        # frame interval: half of it is the margin. Checked before the selection, which
        # most frames of cameras faster than the ticks then skip.
        margin = 0.5 * max(np.median(np.diff(c[0][-8:])) for c in cameras)
        if min(int(c[0][-1]) for c in cameras) < last_t0 + steps[len(steps) // 2] - margin:
            return
        try:
            selection = select_frames([c[0] for c in cameras], self.config.frame_tolerance,
                                      self._slot_descriptions)
        except InputNotReady:
            return  # a gap: the tick will say so
        self._decoder.prefetch(_frame_jobs(selection, cameras, epoch)[0])

    def _note_tick_t0(self, t0_ns: int) -> None:
        """Remember a tick's t0 (under the lock) for _decode_ahead."""
        last, self._last_t0_ns = self._last_t0_ns, t0_ns
        if last is not None and 0 < t0_ns - last <= 2 * NS_PER_S:
            self._t0_steps.append(t0_ns - last)

    def add_odometry(self, sample: OdometrySample) -> InsertResult:
        """Buffer an odometry pose (checked_odometry: refused or normalised, the rule the
        replay applies too). A change of frame_id or child_frame_id restarts the odometry
        buffer (InsertResult.frame_change)."""
        try:
            sample = checked_odometry(sample)
        except OdometryError as exc:
            return self._count("odometry", InsertResult(InsertStatus.REJECTED, str(exc)))
        frames = (sample.frame_id, sample.child_frame_id)
        change = None
        with self._lock:
            if self._odom_frames is not None and frames != self._odom_frames:
                change = FrameChange(sample.stamp_ns, self._odom_frames, frames)
                self._odometry.clear()
                self._backward.pop("odometry", None)
                self._frame_change_ns = sample.stamp_ns
                self._counters.odometry_frame_changes += 1
            inserted = self._insert(self._odometry, "odometry", sample.stamp_ns,
                                    (sample.xyz, sample.quat_xyzw))
            if inserted.status in (InsertStatus.ADDED, InsertStatus.REPLACED):
                self._odom_frames = frames
        if change is not None:
            inserted = replace(inserted, frame_change=change)
        return self._count("odometry", inserted)

    def _insert(self, buffer: StampedBuffer, source: str, stamp_ns: int, item
                ) -> InsertResult:
        """Add to one stream's buffer; an out-of-order stamp is rejected for this stream
        alone unless it is the TIME_JUMP_CONFIRMATIONS-th in a row (see TimeJump)."""
        jump = None
        with self._lock:
            newest = buffer.newest_stamp()
            pending = self._backward.setdefault(source, [])
            if newest is not None and newest - stamp_ns > self._jump_ns:
                consistent = pending and pending[-1][0] <= stamp_ns <= \
                    pending[-1][0] + self._jump_ns
                pending[:] = (pending if consistent else []) + [(stamp_ns, item)]
                if len(pending) < TIME_JUMP_CONFIRMATIONS:
                    self._counters.out_of_order += 1
                    return InsertResult(InsertStatus.REJECTED, (
                        f"{source}: out of order: stamp is {(newest - stamp_ns) / NS_PER_S:.3f}"
                        f" s older than the stream's newest (time_jump_tolerance "
                        f"{self._jump_ns / NS_PER_S:g} s); rejected ({len(pending)} of "
                        f"{TIME_JUMP_CONFIRMATIONS} in a row make a time jump)"))
                jump = TimeJump(source, stamp_ns, newest)
                buffer.clear()
                if buffer is not self._odometry:
                    # Decoded frames are keyed by stamp, which a restarted stream reuses.
                    self._decoder.clear()
                    self._frame_epoch += 1
                    self._last_t0_ns = None
                for stamp, earlier in pending[:-1]:
                    buffer.add(stamp, earlier)
                pending.clear()
                self._restarted.add(source)
                self._counters.time_jumps += 1
                self._last_restart = (stamp_ns, str(jump))
            else:
                pending.clear()  # an in-order stamp ends any run of out-of-order ones
            status = buffer.add(stamp_ns, item)
        if jump is not None and self.on_time_jump is not None:
            self.on_time_jump(jump)
        reason = ""
        if status == InsertStatus.TOO_OLD:
            reason = (f"{source}: stamp {stamp_ns} ns is {(newest - stamp_ns) / NS_PER_S:.3f} s "
                      f"older than the newest, the buffer keeps "
                      f"{buffer.duration_ns / NS_PER_S:g} s")
        return InsertResult(status, reason, jump)

    _COUNTER_SUFFIX = {InsertStatus.ADDED: "added", InsertStatus.REPLACED: "replaced",
                       InsertStatus.REJECTED: "rejected", InsertStatus.TOO_OLD: "too_old"}

    def add_navigation(self, stamp_ns: int, text, valid_for_ns: int, source: str = ""
                       ) -> InsertResult:
        """Buffer a navigation instruction (core.navigation: checks and the choice at t0);
        REJECTED with the reason for text or validity it refuses."""
        try:
            instruction = check_instruction(stamp_ns, text, valid_for_ns, source)
        except ValueError as exc:
            with self._lock:
                self._counters.navigation_rejected += 1
            return InsertResult(InsertStatus.REJECTED, str(exc))
        with self._lock:
            self._navigation.add(instruction)
            self._counters.navigation_added += 1
        return InsertResult(InsertStatus.ADDED)

    def _count(self, stream: str, result: InsertResult) -> InsertResult:
        """Count an insert of `stream` ("frames" or "odometry") by its status."""
        name = f"{stream}_{self._COUNTER_SUFFIX[result.status]}"
        with self._lock:
            setattr(self._counters, name, getattr(self._counters, name) + 1)
        return result

    def _clear_locked(self) -> None:
        for buffer in self._cameras:
            buffer.clear()
        self._odometry.clear()
        self._navigation.clear()
        self._decoder.clear()
        self._backward.clear()
        self._restarted.clear()
        self._frame_epoch += 1
        self._last_t0_ns = None

    def _streams(self) -> list[tuple[str, StampedBuffer]]:
        return [*zip(self._slot_descriptions, self._cameras), ("odometry", self._odometry)]

    def close(self) -> None:
        """Stop the frame decoding threads (queued decodes are dropped)."""
        self._decoder.close()

    def reset(self, now_ns: Optional[int] = None, why: str = "a reset") -> None:
        """Drop the buffered data and cached frames (e.g. when the node clock jumped back).

        now_ns: the time after the reset (the new time line's); ticks whose data does not
        reach back past it say CLOCK_RESET (with `why`) instead of only "no frame yet".
        With now_ns, data that already belongs to the new time line is kept: a stream
        whose stamps jumped back before the clock did (it restarted on its own, see
        TimeJump, and nothing in it is after now_ns) keeps its buffer, and the samples a
        stream held back as out of order that are not after now_ns become its buffer.
        (Sensor data can arrive before the /clock that restarts the time line: the
        planner then plans from the first samples of the new time line, as a fresh
        process would.) Without now_ns everything is dropped.
        """
        with self._lock:
            kept = {}
            if now_ns is not None:
                limit = int(now_ns) + self._jump_ns
                for source, buffer in self._streams():
                    newest = buffer.newest_stamp()
                    if source in self._restarted and newest is not None and newest <= limit:
                        kept[source] = buffer.snapshot()
                    else:
                        entries = [e for e in self._backward.get(source, []) if e[0] <= limit]
                        if entries:
                            kept[source] = ([e[0] for e in entries], [e[1] for e in entries])
            self._clear_locked()
            for source, buffer in self._streams():
                if source in kept:
                    for stamp, item in zip(*kept[source]):
                        buffer.add(int(stamp), item)
            self._counters.resets += 1
            if now_ns is not None:
                self._last_restart = (int(now_ns), why)

    def odometry_track(self, start_ns: Optional[int] = None) -> OdometryTrack:
        """Copy of the buffered odometry (child frame poses in the odom frame); with
        start_ns only the samples from the last one before start_ns on."""
        if start_ns is None:
            stamps, items = self._odometry.snapshot()
        else:
            stamps, items = self._odometry.snapshot_from(start_ns)
        if not items:
            return OdometryTrack.empty()
        return OdometryTrack(stamps, np.stack([i[0] for i in items]),
                             np.stack([i[1] for i in items]))

    def buffered_counts(self) -> tuple:
        """(frames per camera slot (4 ints), odometry samples) currently buffered."""
        return tuple(len(b) for b in self._cameras), len(self._odometry)

    def counters(self) -> CoreCounters:
        """A copy of the counters (decode counts included)."""
        with self._lock:
            snapshot = replace(self._counters)
        cache = self._decoder.cache
        snapshot.decodes = cache.decodes
        snapshot.decode_cache_hits = cache.hits
        return snapshot

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

    def prepare(self, now_ns: int, tick_wall_s: Optional[float] = None) -> PreparedInputs:
        """Select t0 and frames, check staleness, interpolate the history, decode frames.

        now_ns: the tick time [ns] on the clock of the header stamps (node clock, sim time
        or stepped bag time); used for the staleness gates (now - t0, now - newest
        odometry) and the lead gate (stamps ahead of now by more than max_stamp_lead).
        tick_wall_s: time.perf_counter() when the tick fired (default: now), the start of
        timings.tick_to_model_start.
        Raises InputNotReady with the reason and its ReasonCode when this tick cannot be
        planned; while the data still reaches back to a reset or stream restart, waiting
        for data says CLOCK_RESET.
        """
        try:
            return self._prepare(now_ns, tick_wall_s)
        except InputNotReady as exc:
            raise self._after_restart(exc, now_ns) from None

    _WAITING_FOR_DATA = ("NO_FRAME", "NO_ODOMETRY", "HISTORY_TOO_SHORT")

    def _after_restart(self, exc: InputNotReady, now_ns: int) -> InputNotReady:
        """exc, or CLOCK_RESET when it only waits for data that a reset emptied."""
        restart = self._last_restart
        code = exc.code
        if restart is None or code is None or code.name not in self._WAITING_FOR_DATA:
            return exc
        since = (now_ns - restart[0]) / NS_PER_S
        if since > (HISTORY_SPAN_NS / NS_PER_S + self.config.buffer_duration):
            return exc
        return InputNotReady(f"{exc} (buffers restarted {since:.2f} s ago: {restart[1]})",
                             ReasonCode.CLOCK_RESET)

    def _prepare(self, now_ns: int, tick_wall_s: Optional[float]) -> PreparedInputs:
        cfg = self.config
        start = time.perf_counter()
        tick_wall_s = start if tick_wall_s is None else tick_wall_s
        with self._lock:  # one consistent snapshot of all buffers
            cameras = [b.snapshot() for b in self._cameras]
            describe = self._slot_descriptions
            self._check_stamp_lead(now_ns, [
                *((describe[k], int(c[0][-1]) if len(c[0]) else None)
                  for k, c in enumerate(cameras)),
                ("odometry", self._odometry.newest_stamp())])
            # Staleness first, so a silent camera is named as the cause (frame selection
            # around its old t0 would otherwise blame the cameras that are fine).
            self._check_camera_age(now_ns, [c[0] for c in cameras], describe)
            selection = select_frames([c[0] for c in cameras], cfg.frame_tolerance, describe)
            self._note_tick_t0(selection.t0_ns)
            instruction, nav_status = self._navigation.select(selection.t0_ns)
            # Only the odometry the history can use (the gap check looks one sample
            # further back than t0-1.5 s).
            track = self.odometry_track(selection.t0_ns - HISTORY_SPAN_NS)
            frames_ids = self._odom_frames
            frame_change_ns = self._frame_change_ns
            frame_epoch = self._frame_epoch
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
        jobs, arrival_s = _frame_jobs(selection, cameras, frame_epoch)
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
        with self._lock:
            name = f"navigation_{nav_status.value}"
            setattr(self._counters, name, getattr(self._counters, name) + 1)
        return PreparedInputs(now_ns=int(now_ns), selection=selection, history=history,
                              model_input=model_input, timings=timings, decodes=decodes,
                              odom_frame_id=odom_frame_id, prepared_wall_s=end,
                              newest_frame_arrival_s=arrival_s,
                              navigation_status=nav_status.value)

    def _decode_selected(self, jobs: list[FrameJob], describe: tuple
                         ) -> tuple[tuple, int, float]:
        """The 16 (H, W, 3) uint8 frames of the jobs (camera-major, oldest first), frames
        not decoded yet at the start (decoded now, in parallel, or waited for), seconds
        spent on that."""
        start = time.perf_counter()
        try:
            frames, decodes = self._decoder.decode(jobs)
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
                for s in range(self.num_cameras))
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

    def tick(self, now_ns: int) -> PlanResult:
        """prepare + run; a tick that cannot be planned returns status SKIPPED with reason."""
        try:
            prepared = self.prepare(now_ns)
        except InputNotReady as exc:
            return self.skipped(now_ns, exc)
        return self.run(prepared)

    def skipped(self, now_ns: int, cause: InputNotReady) -> PlanResult:
        """A SKIPPED PlanResult (counted) for an InputNotReady caught by the caller."""
        code = cause.code if cause.code is not None else ReasonCode.NO_FRAME
        result = PlanResult(status=PlanStatus.SKIPPED, reason=str(cause), reason_code=code,
                            now_ns=int(now_ns), model_id=getattr(self.model, "model_id", ""))
        self._count_result(result)
        return result

    def _count_result(self, result: PlanResult) -> None:
        with self._lock:
            c = self._counters
            c.ticks += 1
            if result.status == PlanStatus.OK:
                c.ok += 1
            elif result.status == PlanStatus.SKIPPED:
                c.skipped += 1
            elif result.status == PlanStatus.INVALID_OUTPUT:
                c.invalid_output += 1
            else:
                c.model_errors += 1

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
