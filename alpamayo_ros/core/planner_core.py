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
                except InputNotReady as e: result = core.skipped(now_ns, str(e))
                finally: gate.leave()
or simply `result = core.tick(now_ns)`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.errors import DecodeError, InputNotReady, OdometryError
from alpamayo_ros.core.frame_selection import FrameSelection, select_frames
from alpamayo_ros.core.geometry import Pose, from_local_frame
from alpamayo_ros.core.history import (HISTORY_SPAN_NS, HistoryResult, OdometryTrack,
                                       build_history)
from alpamayo_ros.core.image_decode import (SUPPORTED_ENCODINGS, DecodeCache, EncodedImage,
                                            is_supported_encoding)
from alpamayo_ros.core.odometry import OdometrySample, checked_odometry
from alpamayo_ros.core.output_check import OutputCheckLimits, check_sample
from alpamayo_ros.core.plan_result import Candidate, PlanResult, PlanStatus, TickTimings
from alpamayo_ros.core.ring_buffer import InsertStatus, StampedBuffer
from alpamayo_ros.core.types import (FRAMES_PER_CAMERA, NS_PER_S, NUM_CAMERAS,
                                     InferenceOptions, ModelInput, ModelOutput, PlannerModel)

__all__ = ["PlannerCore", "PlannerConfig", "PreparedInputs", "PlanResult", "PlanStatus",
           "Candidate", "TickTimings", "InsertResult", "InsertStatus", "TimeJump",
           "CoreCounters", "EncodedImage", "InputNotReady"]

# Longest model error message kept in a PlanResult (tracebacks of CUDA errors are long).
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class TimeJump:
    """A stamp went back in time (bag loop, simulator reset): all buffers were cleared.

    source: which stream saw it ("camera slot 1 (...)" or "odometry");
    stamp_ns: the arriving stamp; previous_newest_ns: the newest stamp of that stream before.
    """

    source: str
    stamp_ns: int
    previous_newest_ns: int

    @property
    def backwards(self) -> float:
        """How far time went back [s]."""
        return (self.previous_newest_ns - self.stamp_ns) / NS_PER_S

    def __str__(self) -> str:
        return (f"time jump on {self.source}: stamp went back {self.backwards:.3f} s; "
                "cleared all buffers")


@dataclass(frozen=True)
class InsertResult:
    """Result of add_image/add_odometry: status, reason (for REJECTED/TOO_OLD) and the time
    jump this insertion caused (the item is then stored in the freshly cleared buffer)."""

    status: InsertStatus
    reason: str = ""
    time_jump: Optional[TimeJump] = None


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
    time_jumps: int = 0
    decodes: int = 0
    decode_cache_hits: int = 0
    ticks: int = 0
    skipped: int = 0
    ok: int = 0
    invalid_output: int = 0
    model_errors: int = 0


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

    @property
    def t0_ns(self) -> int:
        return self.selection.t0_ns


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
        self._lock = threading.RLock()
        self._cameras = [StampedBuffer(int(config.buffer_duration * NS_PER_S),
                                       config.camera_buffer_max_entries)
                         for _ in range(NUM_CAMERAS)]
        self._odometry = StampedBuffer(int(config.odometry_buffer_duration * NS_PER_S),
                                       config.odometry_buffer_max_entries)
        self._decode_cache = DecodeCache(config.decode_cache_size,
                                         max_pixels=config.max_image_pixels)
        self._base_offset = Pose.from_xyz_rpy(config.base_offset_xyz, config.base_offset_rpy)
        self._limits = OutputCheckLimits(config.first_waypoint_abs_tolerance,
                                         config.first_waypoint_rel_tolerance,
                                         config.max_backward_motion)
        self._jump_ns = int(round(config.time_jump_tolerance * NS_PER_S))
        # "camera slot 3 (index 6, front_tele_30fov)" per slot, for messages (config is frozen).
        self._slot_descriptions = tuple(config.describe_slot(s) for s in range(NUM_CAMERAS))
        self._counters = CoreCounters()
        # frame_id of the buffered odometry (the frame of t0_pose_odom and path_odom).
        self._odom_frame_id = ""

    # ------------------------------------------------------------------ inputs
    def add_image(self, camera_slot: int, stamp_ns: int, image: EncodedImage,
                  arrival_s: Optional[float] = None) -> InsertResult:
        """Buffer a frame (undecoded) of camera slot 0..3 at its header stamp [ns].

        arrival_s: time.perf_counter() when it was received (live only), the start of the
        plan's wall-clock latency (PlanResult.newest_frame_arrival_s).
        """
        if not 0 <= camera_slot < NUM_CAMERAS:
            return self._count("frames", InsertResult(
                InsertStatus.REJECTED,
                f"camera slot {camera_slot} out of range 0..{NUM_CAMERAS - 1}"))
        source = self._slot_descriptions[camera_slot]
        if not is_supported_encoding(image.encoding):
            return self._count("frames", InsertResult(
                InsertStatus.REJECTED,
                f"{source}: unsupported encoding {image.encoding!r}; supported: "
                f"{', '.join(SUPPORTED_ENCODINGS)}"))
        inserted = self._insert(self._cameras[camera_slot], source, int(stamp_ns),
                                (image, arrival_s))
        return self._count("frames", inserted)

    def add_odometry(self, sample: OdometrySample) -> InsertResult:
        """Buffer an odometry pose (checked_odometry: refused or normalised, the rule the
        replay applies too)."""
        try:
            sample = checked_odometry(sample)
        except OdometryError as exc:
            return self._count("odometry", InsertResult(InsertStatus.REJECTED, str(exc)))
        inserted = self._insert(self._odometry, "odometry", sample.stamp_ns,
                                (sample.xyz, sample.quat_xyzw))
        if inserted.status in (InsertStatus.ADDED, InsertStatus.REPLACED):
            self._odom_frame_id = sample.frame_id
        return self._count("odometry", inserted)

    def _insert(self, buffer: StampedBuffer, source: str, stamp_ns: int, item
                ) -> InsertResult:
        jump = None
        with self._lock:
            newest = buffer.newest_stamp()
            if newest is not None and newest - stamp_ns > self._jump_ns:
                jump = TimeJump(source, stamp_ns, newest)
                self._clear_locked()
                self._counters.time_jumps += 1
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
        self._decode_cache.clear()

    def reset(self) -> None:
        """Drop all buffered data and cached frames (e.g. on a /clock reset)."""
        with self._lock:
            self._clear_locked()

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
        snapshot.decodes = self._decode_cache.decodes
        snapshot.decode_cache_hits = self._decode_cache.hits
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
                                f"frame of {describe[slot]} is the oldest")

    def prepare(self, now_ns: int, tick_wall_s: Optional[float] = None) -> PreparedInputs:
        """Select t0 and frames, check staleness, interpolate the history, decode frames.

        now_ns: the tick time [ns] on the clock of the header stamps (node clock, sim time
        or stepped bag time); only used for the staleness gates (now - t0 and now - newest
        odometry). Buffered data stamped after now_ns is not excluded: a replay feeds only
        messages up to now, and live header stamps may run slightly ahead of the node clock.
        tick_wall_s: time.perf_counter() when the tick fired (default: now), the start of
        timings.tick_to_model_start.
        Raises InputNotReady with the reason when this tick cannot be planned.
        """
        cfg = self.config
        start = time.perf_counter()
        tick_wall_s = start if tick_wall_s is None else tick_wall_s
        with self._lock:  # one consistent snapshot of all buffers
            cameras = [b.snapshot() for b in self._cameras]
            describe = self._slot_descriptions
            # Staleness first, so a silent camera is named as the cause (frame selection
            # around its old t0 would otherwise blame the cameras that are fine).
            self._check_camera_age(now_ns, [c[0] for c in cameras], describe)
            selection = select_frames([c[0] for c in cameras], cfg.frame_tolerance, describe)
            # Only the odometry the history can use (the gap check looks one sample
            # further back than t0-1.5 s).
            track = self.odometry_track(selection.t0_ns - HISTORY_SPAN_NS)
            odom_frame_id = self._odom_frame_id
        if len(track) == 0:
            raise InputNotReady("odometry: no sample received yet")
        odometry_age = (now_ns - int(track.stamps_ns[-1])) / NS_PER_S
        if odometry_age > cfg.max_odometry_age:
            raise InputNotReady(f"odometry stale: newest sample is {odometry_age:.3f} s old "
                                f"at the tick (max_odometry_age {cfg.max_odometry_age:g} s)")
        selected_at = time.perf_counter()
        history = build_history(track, selection.t0_ns, self._base_offset,
                                method=cfg.interpolation,
                                max_extrapolation=cfg.max_extrapolation,
                                max_odometry_gap=cfg.max_odometry_gap)
        history_at = time.perf_counter()
        frames, decodes, decode_seconds, arrival_s = self._decode_selected(selection, cameras,
                                                                           describe)
        end = time.perf_counter()
        timings = TickTimings(input_preparation=end - start, selection=selected_at - start,
                              history=history_at - selected_at, decode=decode_seconds,
                              tick_to_model_start=end - tick_wall_s)
        model_input = ModelInput(frames=frames, history_xyz=history.xyz,
                                 history_rot=history.rot)
        return PreparedInputs(now_ns=int(now_ns), selection=selection, history=history,
                              model_input=model_input, timings=timings, decodes=decodes,
                              odom_frame_id=odom_frame_id, prepared_wall_s=end,
                              newest_frame_arrival_s=arrival_s)

    def _decode_selected(self, selection: FrameSelection, cameras: list, describe: tuple
                         ) -> tuple[tuple, int, float, Optional[float]]:
        """The 16 (H, W, 3) uint8 frames of the selection (camera-major, oldest first),
        decodes done, seconds decoding, arrival time of the newest frame (None if unknown)."""
        cache = self._decode_cache
        decodes_before, seconds_before = cache.decodes, cache.decode_seconds
        size = self.config.output_image_size
        frames = []
        newest = (-1, None)  # (stamp, arrival) of the newest frame used
        for index, stamp in enumerate(selection.frame_stamps_ns):
            slot = index // FRAMES_PER_CAMERA
            stamps, items = cameras[slot]
            image, arrival_s = items[int(np.searchsorted(stamps, stamp))]
            if arrival_s is not None and (stamp, arrival_s) > newest:
                newest = (int(stamp), arrival_s)
            try:
                frames.append(cache.get_or_decode((slot, int(stamp)), image, size))
            except DecodeError as exc:
                raise InputNotReady(f"{describe[slot]}: frame at "
                                    f"{int(stamp)} ns cannot be decoded: {exc}") from exc
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            per_slot = ", ".join(
                f"slot {s}: " + "/".join(f"{f.shape[0]}x{f.shape[1]}" for f in
                                        frames[s * FRAMES_PER_CAMERA:(s + 1) * FRAMES_PER_CAMERA])
                for s in range(NUM_CAMERAS))
            raise InputNotReady(f"frame sizes differ (HxW {per_slot}); the model needs one "
                                "size: set output_image_size to resize all frames")
        # The cached frames go to the model as a tuple (ModelInput accepts one): stacking
        # them would copy 100 MB per tick at 1080x1920 only for the model to resize them.
        return (tuple(frames), cache.decodes - decodes_before,
                cache.decode_seconds - seconds_before, newest[1])

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
            return self.skipped(now_ns, str(exc))
        return self.run(prepared)

    def skipped(self, now_ns: int, reason: str) -> PlanResult:
        """A SKIPPED PlanResult (counted), e.g. for an InputNotReady caught by the caller."""
        result = PlanResult(status=PlanStatus.SKIPPED, reason=reason, now_ns=int(now_ns),
                            model_id=getattr(self.model, "model_id", ""))
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
            decodes=prepared.decodes)

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
        elif not valid:
            # Selection rule: the first valid sample; none valid -> index 0, INVALID_OUTPUT.
            result.status = PlanStatus.INVALID_OUTPUT
            result.reason = (f"all {len(result.candidates)} samples failed the output checks; "
                             f"sample 0: {result.candidates[0].invalid_reason}")
            result.selected_index = 0
        else:
            result.selected_index = valid[0]
        return result
