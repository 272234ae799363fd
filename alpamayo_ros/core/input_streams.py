"""InputStreams: the planner's inputs from subscription (or bag) to a consistent snapshot.

One object owns everything between a received frame or odometry sample and a planning
tick, for the node and the replay alike:
* the acceptance checks (camera slot, encoding, zero stamp; core.odometry.checked_odometry
  for odometry, applied once per sample);
* one time-keyed buffer per stream (a camera slot per configured camera, odometry) and the
  navigation instructions (core.navigation: checked, chosen at each tick's t0);
* the time-jump rule (JumpRule: stamps off a stream's time line are refused until
  TIME_JUMP_CONFIRMATIONS in a row lie on one consistent new line) and the odometry
  frame-change rule; both restart only the stream concerned;
* decoding ahead (core/frame_decoder.py): after each frame it works out what a tick then
  would select and queues the missing decodes;
* counters keyed by enums (InputCounts).

It returns typed events (InsertResult with its InsertStatus, TimeJump, FrameChange) and,
for a tick, an InputSnapshot: own copies of the buffers that PlannerCore turns into a
PlanResult. No rclpy, no torch, no clock (stamps are int ns; arrival times are passed in).

Threading: add_image / add_odometry may run on subscription callbacks while a worker thread
takes snapshots and decodes; every buffer, the pending jump runs and the counters are
under one lock.
"""
from __future__ import annotations

import collections
import enum
import threading
from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, Optional, TypeVar

import numpy as np

from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.errors import InputNotReady, OdometryError
from alpamayo_ros.core.frame_decoder import FrameDecoder, FrameJob
from alpamayo_ros.core.frame_selection import FrameSelection, select_frames
from alpamayo_ros.core.history import OdometryTrack
from alpamayo_ros.core.image_decode import (SUPPORTED_ENCODINGS, DecodeCache, EncodedImage,
                                            is_supported_encoding)
from alpamayo_ros.core.navigation import NavigationBuffer, check_instruction
from alpamayo_ros.core.odometry import OdometrySample, checked_odometry
from alpamayo_ros.core.ring_buffer import InsertStatus, StampedBuffer
from alpamayo_ros.core.types import FRAMES_PER_CAMERA, NS_PER_S

# Out-of-order stamps in a row on one time line that make a time jump of it: a single
# late, zero-stamped or stray message must never clear anything.
TIME_JUMP_CONFIRMATIONS = 3

T = TypeVar("T")


class StreamKind(enum.Enum):
    """The kinds of input stream, the first key of the insert counters."""

    CAMERA = "frames"
    ODOMETRY = "odometry"
    NAVIGATION = "navigation"


class LineVerdict(enum.Enum):
    """Where a stamp lies relative to a time line (JumpRule.check)."""

    ON_LINE = "on line"      # accept it
    OFF_LINE = "off line"    # refuse it; it may be the start of a jump
    JUMP = "jump"            # the TIME_JUMP_CONFIRMATIONS-th in a row: restart the line


@dataclass(frozen=True)
class LineCheck(Generic[T]):
    """JumpRule.check's answer. held: on JUMP, the (stamp, item) run that confirmed it,
    oldest first (the checked one last); in_row: off-line stamps in a row so far."""

    verdict: LineVerdict
    in_row: int = 0
    held: tuple = ()


# The answer for a stamp on the line (the common case: one shared instance, no allocation).
_ON_LINE: LineCheck = LineCheck(LineVerdict.ON_LINE)


class JumpRule(Generic[T]):
    """The one rule that tells a time jump from a stray stamp, per key (a stream, a topic).

    A stamp is off the time line when it is more than back_ns older than the line's newest
    stamp (or, with forward_ns, more than forward_ns newer). Off-line stamps are refused;
    TIME_JUMP_CONFIRMATIONS of them in a row, each at most back_ns after the previous one
    (one consistent new time line), are a jump: the caller restarts the line with the held
    run. An on-line stamp ends any run of its key.
    """

    def __init__(self, back_ns: int, forward_ns: Optional[int] = None,
                 confirmations: int = TIME_JUMP_CONFIRMATIONS) -> None:
        self.back_ns = int(back_ns)
        self.forward_ns = None if forward_ns is None else int(forward_ns)
        self.confirmations = confirmations
        self._runs: dict[Hashable, list] = {}

    def departure_ns(self, stamp_ns: int, newest_ns: Optional[int]) -> int:
        """How far the stamp leaves the line: > 0 ahead, < 0 behind, 0 on it [ns]."""
        if newest_ns is None:
            return 0
        if newest_ns - stamp_ns > self.back_ns:
            return stamp_ns - newest_ns
        if self.forward_ns is not None and stamp_ns - newest_ns > self.forward_ns:
            return stamp_ns - newest_ns
        return 0

    def check(self, key: Hashable, stamp_ns: int, item: T, newest_ns: Optional[int]
              ) -> LineCheck[T]:
        if self.departure_ns(stamp_ns, newest_ns) == 0:
            if self._runs:
                self._runs.pop(key, None)
            return _ON_LINE
        run = self._runs.setdefault(key, [])
        if run and not 0 <= stamp_ns - run[-1][0] <= self.back_ns:
            run.clear()  # not one consistent new time line
        run.append((stamp_ns, item))
        if len(run) < self.confirmations:
            return LineCheck(LineVerdict.OFF_LINE, len(run))
        held = tuple(run)
        del self._runs[key]
        return LineCheck(LineVerdict.JUMP, len(held), held)

    def held(self, key: Hashable) -> tuple:
        """The (stamp, item) run a key holds back so far (off-line, not yet a jump)."""
        return tuple(self._runs.get(key, ()))

    def forget(self, key: Optional[Hashable] = None) -> None:
        """Drop the pending run of one key (None: of every key)."""
        if key is None:
            self._runs.clear()
        else:
            self._runs.pop(key, None)


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

    @property
    def accepted(self) -> bool:
        """The sample is in the buffer (added or replacing one with the same stamp)."""
        return self.status in (InsertStatus.ADDED, InsertStatus.REPLACED)


class InputEvent(enum.Enum):
    """Input events counted besides the inserts (InputCounts.events)."""

    OUT_OF_ORDER = "out_of_order"
    TIME_JUMP = "time_jumps"
    ODOMETRY_FRAME_CHANGE = "odometry_frame_changes"
    RESET = "resets"


@dataclass
class InputCounts:
    """Counts since construction (monotonic; reset() does not zero them): inserts per
    (stream kind, status) and the other input events."""

    inserts: collections.Counter = field(default_factory=collections.Counter)
    events: collections.Counter = field(default_factory=collections.Counter)

    def copy(self) -> "InputCounts":
        return InputCounts(collections.Counter(self.inserts), collections.Counter(self.events))


@dataclass(frozen=True)
class InputSnapshot:
    """Own copies of the buffers at one moment, what a tick plans from.

    cameras: per slot (stamps int64 array, [(EncodedImage, arrival_s or None)]);
    odometry_stamps / odometry_items: the odometry buffer ((xyz, quat_xyzw) per stamp);
    odom_frames: (frame_id, child_frame_id) of the buffered odometry, None before any;
    frame_change_ns: stamp of the last odometry frame change, None if none;
    frame_epoch: first part of the frame cache keys (bumped when decoded frames go);
    last_restart: (stamp or tick time [ns], why) of the last event that emptied buffers;
    navigation: a copy of the navigation instructions (NavigationBuffer.select at t0).
    """

    cameras: tuple
    odometry_stamps: np.ndarray
    odometry_items: list
    odom_frames: Optional[tuple]
    frame_change_ns: Optional[int]
    frame_epoch: int
    last_restart: Optional[tuple]
    navigation: NavigationBuffer = field(default_factory=NavigationBuffer)

    def newest_odometry_ns(self) -> Optional[int]:
        return int(self.odometry_stamps[-1]) if len(self.odometry_stamps) else None

    def odometry_track(self, start_ns: Optional[int] = None) -> OdometryTrack:
        """The odometry as a track; with start_ns only the samples from the last one
        before start_ns on (the gap check looks one sample further back)."""
        return _odometry_track(self.odometry_stamps, self.odometry_items, start_ns)

    def frame_jobs(self, selection: FrameSelection) -> tuple[list[FrameJob], Optional[float]]:
        """(cache key (epoch, slot, stamp), undecoded frame) of the selected frames in
        model order, and the arrival time of the newest one (None if unknown). The epoch
        in the key keeps a restarted stream's frames (same stamps, other images) apart."""
        jobs = []
        newest = (-1, None)  # (stamp, arrival) of the newest frame used
        for index, stamp in enumerate(selection.frame_stamps_ns):
            slot = index // FRAMES_PER_CAMERA
            stamps, items = self.cameras[slot]
            image, arrival_s = items[int(np.searchsorted(stamps, stamp))]
            if arrival_s is not None and (stamp, arrival_s) > newest:
                newest = (int(stamp), arrival_s)
            jobs.append(((self.frame_epoch, slot, int(stamp)), image))
        return jobs, newest[1]


def _odometry_track(stamps: np.ndarray, items: list, start_ns: Optional[int]) -> OdometryTrack:
    if start_ns is not None:
        pos = max(int(np.searchsorted(stamps, start_ns, side="left")) - 1, 0)
        stamps, items = stamps[pos:], items[pos:]
    if not items:
        return OdometryTrack.empty()
    return OdometryTrack(stamps, np.stack([i[0] for i in items]),
                         np.stack([i[1] for i in items]))


class InputStreams:
    """The buffers, checks, jump and frame-change rules, decoding ahead and counters of the
    planner's inputs (see the module docstring).

    config: PlannerConfig; on_time_jump: called (outside the lock) with each TimeJump, e.g.
    for logging.
    """

    def __init__(self, config: PlannerConfig,
                 on_time_jump: Optional[Callable[[TimeJump], None]] = None) -> None:
        self.config = config
        self.on_time_jump = on_time_jump
        self._lock = threading.RLock()
        # One camera slot per configured camera (the rig: config.camera_indices).
        self.num_cameras = len(config.camera_indices)
        self._cameras = [StampedBuffer(int(config.buffer_duration * NS_PER_S),
                                       config.camera_buffer_max_entries)
                         for _ in range(self.num_cameras)]
        self._odometry = StampedBuffer(int(config.odometry_buffer_duration * NS_PER_S),
                                       config.odometry_buffer_max_entries)
        self._navigation = NavigationBuffer()
        self.decoder = FrameDecoder(DecodeCache(config.decode_cache_size,
                                                max_pixels=config.max_image_pixels),
                                    config.output_image_size, config.decode_threads)
        self._jump_ns = int(round(config.time_jump_tolerance * NS_PER_S))
        self._jumps: JumpRule = JumpRule(self._jump_ns)
        # "camera slot 3 (index 6, front_tele_30fov)" per slot, for messages (config is frozen).
        self.slot_descriptions = tuple(config.describe_slot(s)
                                       for s in range(self.num_cameras))
        self._counts = InputCounts()
        # (frame_id, child_frame_id) of the buffered odometry (frame_id names the frame of
        # t0_pose_odom and path_odom); None before the first sample.
        self._odom_frames: Optional[tuple] = None
        self._frame_change_ns: Optional[int] = None
        self._last_restart: Optional[tuple] = None
        # Keys of the streams that restarted on a time jump of their own since the last
        # reset: their buffers hold only the new time line's data (see reset).
        self._restarted: set = set()
        # Bumped whenever decoded frames are dropped (a restarted stream reuses stamps): the
        # first part of the frame keys that let a model reuse its work on a frame.
        self._frame_epoch = 0
        # t0 of the last tick and the last few steps between ticks' t0 [ns]: where the next
        # tick's t0 will be, so frames are decoded ahead only for that selection.
        self._last_t0_ns: Optional[int] = None
        self._t0_steps: collections.deque = collections.deque(maxlen=5)

    # ------------------------------------------------------------------ cameras
    def add_image(self, camera_slot: int, stamp_ns: int, image: EncodedImage,
                  arrival_s: Optional[float] = None) -> InsertResult:
        """Buffer a frame (undecoded) of camera slot 0..num_cameras-1 at its stamp [ns].

        arrival_s: time.perf_counter() when it was received (live only), the start of the
        plan's wall-clock latency (PlanResult.newest_frame_arrival_s).
        """
        if not 0 <= camera_slot < self.num_cameras:
            return self._count(StreamKind.CAMERA, InsertResult(
                InsertStatus.REJECTED,
                f"camera slot {camera_slot} out of range 0..{self.num_cameras - 1}"))
        source = self.slot_descriptions[camera_slot]
        if not is_supported_encoding(image.encoding):
            return self._count(StreamKind.CAMERA, InsertResult(
                InsertStatus.REJECTED,
                f"{source}: unsupported encoding {image.encoding!r}; supported: "
                f"{', '.join(SUPPORTED_ENCODINGS)}"))
        if int(stamp_ns) == 0:
            return self._count(StreamKind.CAMERA, InsertResult(
                InsertStatus.REJECTED, f"{source}: zero stamp (header.stamp not set)"))
        inserted = self._insert(self._cameras[camera_slot], source, int(stamp_ns),
                                (image, arrival_s))
        if self.config.decode_ahead and inserted.accepted:
            self._decode_ahead()
        return self._count(StreamKind.CAMERA, inserted)

    def _decode_ahead(self) -> None:
        """Queue the decodes of the frames a tick at this moment would select (the
        tick's own select_frames; see core/frame_decoder.py), once that selection's t0 is
        near the one expected at the next tick (from the last ticks' t0 steps). Cameras
        faster than the ticks give t0s between two ticks' ones whose frames no tick uses:
        those are not decoded ahead."""
        if self.decoder.threads == 0:
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
                                      self.slot_descriptions)
        except InputNotReady:
            return  # a gap: the tick will say so
        partial = InputSnapshot(tuple(cameras), np.zeros(0, np.int64), [], None, None, epoch,
                                None)
        self.decoder.prefetch(partial.frame_jobs(selection)[0])

    def note_tick_t0(self, t0_ns: int) -> None:
        """Remember a tick's t0, the rhythm _decode_ahead follows."""
        with self._lock:
            last, self._last_t0_ns = self._last_t0_ns, t0_ns
            if last is not None and 0 < t0_ns - last <= 2 * NS_PER_S:
                self._t0_steps.append(t0_ns - last)

    # ------------------------------------------------------------------ odometry
    def add_odometry(self, sample: OdometrySample) -> InsertResult:
        """Check (core.odometry.checked_odometry: refused or normalised) and buffer an
        odometry pose; see add_checked_odometry."""
        try:
            sample = checked_odometry(sample)
        except OdometryError as exc:
            return self._count(StreamKind.ODOMETRY,
                               InsertResult(InsertStatus.REJECTED, str(exc)))
        return self.add_checked_odometry(sample)

    def add_checked_odometry(self, sample: OdometrySample) -> InsertResult:
        """Buffer an odometry pose that checked_odometry already returned (the replay checks
        each sample when it reads it). A change of frame_id or child_frame_id restarts the
        odometry buffer (InsertResult.frame_change)."""
        frames = (sample.frame_id, sample.child_frame_id)
        change = None
        with self._lock:
            if self._odom_frames is not None and frames != self._odom_frames:
                change = FrameChange(sample.stamp_ns, self._odom_frames, frames)
                self._odometry.clear()
                self._jumps.forget(StreamKind.ODOMETRY)
                self._frame_change_ns = sample.stamp_ns
                self._counts.events[InputEvent.ODOMETRY_FRAME_CHANGE] += 1
            inserted = self._insert(self._odometry, "odometry", sample.stamp_ns,
                                    (sample.xyz, sample.quat_xyzw), key=StreamKind.ODOMETRY)
            if inserted.accepted:
                self._odom_frames = frames
        if change is not None:
            inserted = InsertResult(inserted.status, inserted.reason, inserted.time_jump,
                                    change)
        return self._count(StreamKind.ODOMETRY, inserted)

    # ------------------------------------------------------------------ navigation
    def add_navigation(self, stamp_ns: int, text, valid_for_ns: int, source: str = ""
                       ) -> InsertResult:
        """Buffer a navigation instruction (core.navigation: checks and the choice at t0);
        REJECTED with the reason for text or validity it refuses."""
        try:
            instruction = check_instruction(stamp_ns, text, valid_for_ns, source)
        except ValueError as exc:
            return self._count(StreamKind.NAVIGATION,
                               InsertResult(InsertStatus.REJECTED, str(exc)))
        with self._lock:
            self._navigation.add(instruction)
        return self._count(StreamKind.NAVIGATION, InsertResult(InsertStatus.ADDED))

    # ------------------------------------------------------------------ common
    def _insert(self, buffer: StampedBuffer, source: str, stamp_ns: int, item,
                key: Optional[Hashable] = None) -> InsertResult:
        """Add to one stream's buffer; an out-of-order stamp is rejected for this stream
        alone unless it confirms a time jump of it (JumpRule)."""
        jump = None
        key = source if key is None else key
        with self._lock:
            newest = buffer.newest_stamp()
            check = self._jumps.check(key, stamp_ns, item, newest)
            if check.verdict is LineVerdict.OFF_LINE:
                self._counts.events[InputEvent.OUT_OF_ORDER] += 1
                return InsertResult(InsertStatus.REJECTED, (
                    f"{source}: out of order: stamp is {(newest - stamp_ns) / NS_PER_S:.3f}"
                    f" s older than the stream's newest (time_jump_tolerance "
                    f"{self._jump_ns / NS_PER_S:g} s); rejected ({check.in_row} of "
                    f"{TIME_JUMP_CONFIRMATIONS} in a row make a time jump)"))
            if check.verdict is LineVerdict.JUMP:
                jump = TimeJump(source, stamp_ns, newest)
                buffer.clear()
                if buffer is not self._odometry:
                    # Decoded frames are keyed by stamp, which a restarted stream reuses.
                    self.decoder.clear()
                    self._frame_epoch += 1
                    self._last_t0_ns = None
                for stamp, earlier in check.held[:-1]:
                    buffer.add(stamp, earlier)
                self._restarted.add(key)
                self._counts.events[InputEvent.TIME_JUMP] += 1
                self._last_restart = (stamp_ns, str(jump))
            status = buffer.add(stamp_ns, item)
        if jump is not None and self.on_time_jump is not None:
            self.on_time_jump(jump)
        reason = ""
        if status == InsertStatus.TOO_OLD:
            reason = (f"{source}: stamp {stamp_ns} ns is {(newest - stamp_ns) / NS_PER_S:.3f} s "
                      f"older than the newest, the buffer keeps "
                      f"{buffer.duration_ns / NS_PER_S:g} s")
        return InsertResult(status, reason, jump)

    def _count(self, kind: StreamKind, result: InsertResult) -> InsertResult:
        with self._lock:
            self._counts.inserts[kind, result.status] += 1
        return result

    def reset(self, now_ns: Optional[int] = None, why: str = "a reset") -> None:
        """Drop the buffered data and cached frames (e.g. when the node clock jumped back).

        now_ns: the time after the reset (the new time line's); ticks whose data does not
        reach back past it say CLOCK_RESET (with `why`) instead of only "no frame yet".
        With now_ns, data that already belongs to the new time line is kept: a stream
        whose stamps jumped back before the clock did (it restarted on its own, JumpRule,
        and nothing in it is after now_ns) keeps its buffer, and the samples a stream held
        back as off its line that are not after now_ns become its buffer. (Sensor data can
        arrive before the /clock that restarts the time line: the planner then plans from
        the first samples of the new time line, as a fresh process would.) Without now_ns
        everything is dropped.
        """
        with self._lock:
            streams = [*((source, source, buffer) for source, buffer
                         in zip(self.slot_descriptions, self._cameras)),
                       ("odometry", StreamKind.ODOMETRY, self._odometry)]
            kept = {}
            if now_ns is not None:
                limit = int(now_ns) + self._jump_ns
                for _, key, buffer in streams:
                    newest = buffer.newest_stamp()
                    if key in self._restarted and newest is not None and newest <= limit:
                        stamps, items = buffer.snapshot()
                        kept[key] = list(zip(stamps.tolist(), items))
                    else:
                        held = [e for e in self._jumps.held(key) if e[0] <= limit]
                        if held:
                            kept[key] = held
            for buffer in self._cameras:
                buffer.clear()
            self._odometry.clear()
            self._navigation.clear()
            self.decoder.clear()
            self._jumps.forget()
            self._restarted.clear()
            for _, key, buffer in streams:
                for stamp, item in kept.get(key, ()):
                    buffer.add(int(stamp), item)
            self._frame_epoch += 1
            self._last_t0_ns = None
            self._counts.events[InputEvent.RESET] += 1
            if now_ns is not None:
                self._last_restart = (int(now_ns), why)

    def snapshot(self) -> InputSnapshot:
        """Own copies of every buffer and the stream state, taken at one moment."""
        with self._lock:
            odometry_stamps, odometry_items = self._odometry.snapshot()
            return InputSnapshot(tuple(b.snapshot() for b in self._cameras), odometry_stamps,
                                 odometry_items, self._odom_frames, self._frame_change_ns,
                                 self._frame_epoch, self._last_restart,
                                 self._navigation.copy())

    def odometry_track(self, start_ns: Optional[int] = None) -> OdometryTrack:
        """Copy of the buffered odometry (child frame poses in the odom frame); with
        start_ns only the samples from the last one before start_ns on."""
        return _odometry_track(*self._odometry.snapshot(), start_ns)

    def buffered_counts(self) -> tuple:
        """(frames per camera slot (num_cameras ints), odometry samples) currently
        buffered."""
        return tuple(len(b) for b in self._cameras), len(self._odometry)

    def counts(self) -> InputCounts:
        """A copy of the counters."""
        with self._lock:
            return self._counts.copy()

    def close(self) -> None:
        """Stop the frame decoding threads (queued decodes are dropped)."""
        self.decoder.close()
