"""The stepped-time replay of one bag through the planner core (no ROS graph, no clock).

Time model (docs/replay.md):
* Planning ticks are placed every 1/rate_hz of **header-stamp** time, on the absolute grid
  k / rate_hz (so a tick time does not depend on where a bag starts). Tick T sees exactly the
  messages whose header stamp is <= T; the core gets now_ns = T. No wall clock is involved,
  so the results do not depend on how fast the machine is; every tick is planned (the live
  node drops ticks while an inference runs, the replay never does).
* The bag **log time** (receive time) only orders the stream: tick T is run once a message
  logged after T + max_delay has been read (or the bag ended), so data stamped <= T that
  was received up to max_delay late is still seen. Messages later than that are counted as
  ``late_messages`` and used from the next tick on.
* The bag's messages share one time line (the tick grid needs one). Header stamps of one
  topic that leave it (back by more than core.time_jump_tolerance, or forward by more than
  max_forward_jump) start a new **epoch** once the core's own jump rule
  (core.input_streams.JumpRule, TIME_JUMP_CONFIRMATIONS in a row) confirms them: the core
  is reset, ticks restart on the new time line, and ground truth only uses odometry of
  the tick's own epoch. Messages of an unconfirmed jump are rejected and counted. Inside an
  epoch the core's InputStreams apply their usual per-stream rules.

Navigation instructions (alpamayo/navigation, when the bag has it) are replayed like the
other inputs, by header stamp, through the node's rules (core.navigation): a tick uses the
newest one valid at its t0; a model family without navigation ignores them (one warning in
the bag's result), as the node does. They take no part in the epoch rule (the node's
add_navigation has none); a new epoch clears them, as a reset clears the node's.
ReplayOptions.nav_text forces one instruction for every tick instead; nav_compare runs
each tick also without it and direction-swapped (replay/navigation.py).

Per tick the record holds t0, v0, every candidate trajectory (t0 frame), CoC, the
navigation text the model saw, skip reasons and the metrics of replay/scoring.py.
Wall-clock timings are kept apart, so two replays of the same bag, parameters and seed
give equal records.
"""
from __future__ import annotations

import collections
import heapq
import math
import time
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from alpamayo_ros.core.errors import DecodeError, InputNotReady, OdometryError
from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.image_decode import EncodedImage
from alpamayo_ros.core.input_streams import TIME_JUMP_CONFIRMATIONS, JumpRule, LineVerdict
from alpamayo_ros.core.metrics import DEFAULT_HORIZONS
from alpamayo_ros.core.navigation import NAVIGATION_TOPIC, navigation_ignored_reason
from alpamayo_ros.core.odometry import OdometrySample, checked_odometry, odometry_from_msg
from alpamayo_ros.core.plan_message import OutputContext
from alpamayo_ros.core.plan_result import PlanResult, PlanStatus, ReasonCode
from alpamayo_ros.core.planner_core import PlannerCore
from alpamayo_ros.core.planner_params import inference_options, planner_config
from alpamayo_ros.core.types import NS_PER_S, ModelDescription, PlannerModel, stamp_to_ns
from alpamayo_ros.bag import bag_io
from alpamayo_ros.replay import navigation as replay_navigation
from alpamayo_ros.replay.scoring import aggregate_metrics, ground_truth_track, score_ticks

# Decimals kept for trajectory coordinates in the report [m] (1 um).
COORD_DECIMALS = 6


@dataclass(frozen=True)
class ReplayOptions:
    """Replay-only settings (the node parameters come from the parameter file).

    max_delay_s: bound on log time - header stamp; a tick waits for it (see module doc).
    max_forward_jump_s: a stamp this far ahead of the stream starts a new epoch.
    namespace: resolves relative topic names of the parameter file.
    horizons: metric horizons [s] (multiples of 0.1 up to 6.4).
    nav_text: an instruction every tick gets instead of the bag's ("" = none at all);
    None = the bag's navigation topic.
    nav_compare: also run each tick with an instruction without it and direction-swapped.
    """

    max_delay_s: float = 0.5
    max_forward_jump_s: float = 10.0
    namespace: str = "/"
    horizons: tuple = DEFAULT_HORIZONS
    progress: bool = False
    nav_text: Optional[str] = None
    nav_compare: bool = False


@dataclass(frozen=True)
class BagJob:
    """Everything one bag replay needs; picklable so workers (processes, Ray) can run it.

    values: validated node parameters; output_bag / plot: where to write (None = skip).
    """

    bag: str
    values: dict
    options: ReplayOptions = ReplayOptions()
    output_bag: Optional[str] = None
    output_storage: str = "mcap"
    plot: Optional[str] = None


# ------------------------------------------------------------------------------ model
_MODEL_CACHE: dict = {}


def model_key(values: Mapping[str, Any]) -> tuple:
    return tuple(values[k] for k in ("model.backend", "model.checkpoint_dir",
                                     "model.processor_dir", "model.device", "model.dtype",
                                     "model.fast_path"))


def load_model(values: Mapping[str, Any]) -> tuple[PlannerModel, ModelDescription]:
    """(model, description) of `model.*` parameters, cached per process (workers reuse
    it). The very same choice as the node's (alpamayo_ros.model.backends)."""
    key = model_key(values)
    if key not in _MODEL_CACHE:
        from alpamayo_ros.model.backends import load_model as load_backend
        _MODEL_CACHE[key] = load_backend(values, inference_options(values))
    model, description = _MODEL_CACHE[key]
    # The options are per job (seed, samples), the loaded weights are shared.
    return model, dataclasses.replace(description, options=inference_options(values))


# ------------------------------------------------------------------------------ topics
def resolve_topic(name: str, namespace: str = "/") -> str:
    """Relative topic names resolve against the namespace, as the node would resolve them."""
    if name.startswith("/"):
        return name
    ns = "/" + namespace.strip("/")
    return (ns.rstrip("/") + "/" + name) if ns != "/" else "/" + name


@dataclass
class _Topics:
    cameras: dict          # topic -> camera slot
    transports: list       # per slot "raw" | "compressed"
    odometry: str
    navigation: Optional[str] = None  # the node's navigation input (None: not read)


def _check_topics(reader: bag_io.BagReader, values: Mapping[str, Any],
                  options: ReplayOptions) -> _Topics:
    """Map configured topics to the bag's connections; BagError on missing or wrong types.
    The navigation topic is optional (read when present, unless nav_text replaces it; a
    model without navigation counts its messages as ignored, as the node does)."""
    bag_types: dict[str, set] = {}
    for conn in reader.connections():
        bag_types.setdefault(conn.topic, set()).add(conn.msgtype)
    problems = []
    cameras = {}
    transports = list(values["camera_transports"])
    for slot, name in enumerate(values["camera_topics"]):
        topic = resolve_topic(name, options.namespace)
        need = bag_io.IMAGE_TYPE if transports[slot] == "raw" else bag_io.COMPRESSED_IMAGE_TYPE
        have = bag_types.get(topic)
        if not have:
            problems.append(f"camera topic {topic} (slot {slot}, index "
                            f"{values['camera_indices'][slot]}) is not in the bag")
        elif have != {need}:
            problems.append(f"camera topic {topic}: have type {', '.join(sorted(have))}, need "
                            f"{need} (camera_transports[{slot}] = {transports[slot]!r})")
        cameras[topic] = slot
    odometry = resolve_topic(values["odometry_topic"], options.namespace)
    have = bag_types.get(odometry)
    if not have:
        problems.append(f"odometry topic {odometry} is not in the bag")
    elif have != {bag_io.ODOMETRY_TYPE}:
        problems.append(f"odometry topic {odometry}: have type {', '.join(sorted(have))}, "
                        f"need {bag_io.ODOMETRY_TYPE}")
    navigation = resolve_topic(NAVIGATION_TOPIC, options.namespace)
    have = bag_types.get(navigation) if options.nav_text is None else None
    if have and have != {bag_io.NAVIGATION_TYPE}:
        problems.append(f"navigation topic {navigation}: have type {', '.join(sorted(have))}, "
                        f"need {bag_io.NAVIGATION_TYPE}")
    if problems:
        listing = ", ".join(f"{t} [{'/'.join(sorted(ty))}]" for t, ty in sorted(bag_types.items()))
        raise bag_io.BagError(f"{reader.path}: " + "; ".join(problems)
                              + f". Bag has: {listing or 'no topics'}")
    return _Topics(cameras, transports, odometry, navigation if have else None)


def _json_float(value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class _Epoch:
    index: int
    first_stamp_ns: int
    newest_stamp_ns: int
    next_tick_ns: int
    reason: str
    odo_stamps: list = field(default_factory=list)
    odo_xyz: list = field(default_factory=list)
    odo_quat: list = field(default_factory=list)
    tick_rows: list = field(default_factory=list)   # indices into the bag's tick list


@dataclass
class ReplayCounts:
    """Messages of one bag (report `counts`): read, handed to the core per kind, logged
    after their tick (late_messages), and refused (rejected, reasons in `rejections`)."""

    messages: int = 0
    images: int = 0
    odometry: int = 0
    navigation: int = 0
    late_messages: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class _ImageMessage:
    """A camera frame read from the bag, checked, waiting for its tick."""

    slot: int
    image: EncodedImage


@dataclass(frozen=True)
class _OdometryMessage:
    """An odometry sample read from the bag, checked once (checked_odometry)."""

    sample: OdometrySample


@dataclass(frozen=True)
class _NavigationMessage:
    """A navigation instruction read from the bag (checked by InputStreams at its tick)."""

    text: str
    valid_for_ns: int
    source: str
    topic: str = ""


_Payload = Union[_ImageMessage, _OdometryMessage, _NavigationMessage]


@dataclass
class CandidateRecord:
    """One candidate of a tick in the report (t0-frame positions rounded to 1 um)."""

    xyz: list
    valid: bool
    invalid_reason: str
    coc: str
    coc_token_count: int
    coc_truncated: bool


@dataclass
class TickRecord:
    """The deterministic record of one replayed tick (report `ticks`); metrics and
    metrics_note are filled by replay_scoring.score_ticks."""

    tick: int
    epoch: int
    now_ns: int
    t0_ns: Optional[int]
    status: PlanStatus
    reason_code: ReasonCode
    reason: str
    v0: Optional[float]
    selected_index: int
    max_frame_skew_s: Optional[float]
    camera_skew_s: Optional[float]
    odometry_samples: int
    navigation_status: str = ""   # core.navigation.NavStatus value ("" before t0)
    navigation_text: str = ""     # what the model saw ("" = none)
    candidates: list = field(default_factory=list)   # CandidateRecord
    metrics: Optional[dict] = None                   # horizon "1" -> min_ade, min_fde, ...
    metrics_note: str = ""
    nav_compare: Optional[dict] = None               # replay/navigation.compare_conditions

    @classmethod
    def of(cls, index: int, epoch: int, r: PlanResult) -> "TickRecord":
        has_t0 = r.t0_ns is not None
        return cls(
            tick=index, epoch=epoch, now_ns=int(r.now_ns),
            t0_ns=int(r.t0_ns) if has_t0 else None, status=r.status,
            reason_code=r.reason_code, reason=r.reason, v0=_json_float(r.v0),
            selected_index=int(r.selected_index),
            max_frame_skew_s=_json_float(r.max_frame_skew if has_t0 else None),
            camera_skew_s=_json_float(r.camera_skew if has_t0 else None),
            odometry_samples=int(r.odometry_samples),
            navigation_status=r.navigation_status, navigation_text=r.navigation_text,
            candidates=[CandidateRecord(
                np.round(np.asarray(c.xyz, dtype=np.float64), COORD_DECIMALS).tolist(),
                bool(c.valid), c.invalid_reason, c.coc, int(c.coc_token_count),
                bool(c.coc_truncated)) for c in r.candidates])

    def to_dict(self) -> dict:
        """The report's JSON form (status and reason code by name). Shallow: the lists are
        shared with the record (asdict would deep-copy every waypoint list)."""
        out = dict(vars(self))
        out["candidates"] = [dict(vars(c)) for c in self.candidates]
        out["status"], out["reason_code"] = self.status.name, self.reason_code.name
        if self.nav_compare is None:  # only with --nav-compare, on ticks the model ran
            del out["nav_compare"]
        return out


@dataclass
class TickTiming:
    """Wall-clock timings of one tick (report `timings`, kept apart from the records)."""

    tick: int
    wall_s: float
    input_preparation_s: float
    decode_s: float
    model_call_s: float
    model: dict
    model_total_s: float


class BagReplay:
    """Replays one bag through a fresh PlannerCore; `run()` returns (result, timings).

    model: a PlannerModel to use instead of loading the one the parameters name (then
    description describes it; None = a description from the parameters).
    """

    def __init__(self, job: BagJob, model: Optional[PlannerModel] = None,
                 description: Optional[ModelDescription] = None) -> None:
        self.job = job
        self.values = values = job.values
        self.options = job.options
        # Decoding ahead pays off when frames arrive in real time before a tick; a replay
        # reads them as fast as it can, so it decodes at the tick (in parallel) instead.
        self.config = dataclasses.replace(planner_config(values), decode_ahead=False)
        self.inference = inference_options(values)
        if model is None:
            model, description = load_model(values)
        elif description is None:
            description = ModelDescription("", getattr(model, "model_id", ""), "", "",
                                           self.inference)
        self.model, self.description = model, description
        self.core = PlannerCore(self.config, self.model, self.inference)
        self.period_ns = int(round(NS_PER_S / float(values["rate_hz"])))
        self.jump_back_ns = int(round(self.config.time_jump_tolerance * NS_PER_S))
        self.jump_fwd_ns = int(round(self.options.max_forward_jump_s * NS_PER_S))
        self.max_delay_ns = int(round(self.options.max_delay_s * NS_PER_S))
        self.base_offset = Pose.from_xyz_rpy(self.config.base_offset_xyz,
                                             self.config.base_offset_rpy)
        self.camera_topics = [resolve_topic(t, self.options.namespace)
                              for t in values["camera_topics"]]
        self.ticks: list[TickRecord] = []
        self.tick_timings: list[TickTiming] = []
        self.tick_predictions: list[Optional[np.ndarray]] = []
        self.results: list[PlanResult] = []
        self.epochs: list[_Epoch] = []
        self.counts = ReplayCounts()
        self.rejections: dict[str, int] = {}
        self._pending: list = []  # (stamp, sequence, _Payload) heap
        # The bag's one time line; per topic, messages off it in a row (a possible jump).
        self._time_line: JumpRule = JumpRule(self.jump_back_ns, self.jump_fwd_ns)
        self._seq = 0
        self._last_tick_ns: Optional[int] = None
        self._progress = None
        # Navigation: why the model ignores instructions ("" = it takes them; the node's
        # rule), counts of the bag's instructions, and per tick the selected trajectories
        # of the --nav-compare conditions (for the plot).
        self.nav_ignored = navigation_ignored_reason(self.description.family,
                                                     values["model.backend"])
        self.nav_counts = {"messages": 0, "accepted": 0, "rejected": 0, "ignored": 0}
        self.nav_topic: Optional[str] = None
        self.nav_selected: list[dict] = []

    def output_context(self) -> OutputContext:
        """What the output bag's PlannerOutput messages need besides the results."""
        return OutputContext(self.values["base_frame_id"], tuple(self.camera_topics),
                             tuple(self.values["camera_indices"]), self.description)

    # ---- stream ------------------------------------------------------------------------

    def run(self) -> tuple[dict, dict]:
        wall_start = time.perf_counter()
        result: dict[str, Any] = {"bag": self.job.bag, "status": "ok", "error": ""}
        try:
            with bag_io.BagReader(self.job.bag) as reader:
                topics = _check_topics(reader, self.values, self.options)
                result["storage"] = bag_io.storage_of(Path(self.job.bag))
                result["topics"] = {"cameras": list(topics.cameras), "odometry": topics.odometry}
                read = list(topics.cameras) + [topics.odometry]
                result["topics"]["navigation"] = self.nav_topic = topics.navigation
                if topics.navigation is not None:
                    read.append(topics.navigation)
                if self.options.progress:
                    self._open_progress(reader)
                for bm in reader.messages(read):
                    self._on_message(bm, topics)
            self._finish_epoch()
        except bag_io.BagError as exc:
            # Keep what was replayed so far; the bag is marked as an error (exit 2).
            result["status"], result["error"] = "error", str(exc)
            if self.epochs:
                self._finish_epoch(run_remaining=False)
        finally:
            self.core.close()
            if self._progress is not None:
                self._progress.close()
        result.update(self._summary())
        timings = {"bag": self.job.bag, "wall_s": time.perf_counter() - wall_start,
                   "ticks": [dict(vars(t)) for t in self.tick_timings]}
        return result, timings

    def _open_progress(self, reader: bag_io.BagReader) -> None:
        from tqdm import tqdm
        span = max(reader.end_time_ns - reader.start_time_ns, 0)
        self._progress = tqdm(total=int(span // self.period_ns) + 1, unit="tick",
                              desc=Path(self.job.bag).name, leave=False,
                              disable=None)  # None: off when stderr is not a terminal

    def _reject(self, topic: str, reason: str) -> None:
        self.counts.rejected += 1
        key = f"{topic}: {reason}"[:300]
        self.rejections[key] = self.rejections.get(key, 0) + 1

    def _on_message(self, bm: bag_io.BagMessage, topics: _Topics) -> None:
        self.counts.messages += 1
        if bm.topic == topics.navigation:
            self._on_navigation(bm)
            return
        if bm.stamp_ns is None:
            self._reject(bm.topic, "message has no header stamp")
            return
        payload: _Payload
        try:
            if bm.topic == topics.odometry:
                payload = _OdometryMessage(checked_odometry(odometry_from_msg(bm.msg)))
            else:
                payload = _ImageMessage(topics.cameras[bm.topic],
                                        bag_io.image_to_encoded(bm.msg, bm.msgtype))
        except (DecodeError, OdometryError) as exc:
            self._reject(bm.topic, str(exc))
            return
        if not self.epochs:
            self._start_epoch(bm.stamp_ns, "start of bag")
        epoch = self.epochs[-1]
        check = self._time_line.check(bm.topic, bm.stamp_ns, (bm, payload),
                                      epoch.newest_stamp_ns)
        if check.verdict is LineVerdict.ON_LINE:
            self._accept(bm, payload)
            return
        jump = self._departure(bm, epoch)
        if check.verdict is LineVerdict.OFF_LINE:
            self._reject(bm.topic, f"out of order: {jump} (rejected; "
                                   f"{TIME_JUMP_CONFIRMATIONS} in a row start a new epoch)")
            return
        self._finish_epoch()
        self._start_epoch(check.held[0][0], f"time jump: {jump}")
        for _, (held, held_payload) in check.held:
            self._accept(held, held_payload)
        self._time_line.forget()

    def _on_navigation(self, bm: bag_io.BagMessage) -> None:
        """Queue an instruction by its stamp (InputStreams checks it when it is fed, as the
        node's add_navigation does); ignored by a model without navigation. No epoch
        rule: the node's navigation input has none."""
        self.nav_counts["messages"] += 1
        if self.nav_ignored:
            self.nav_counts["ignored"] += 1
            return
        stamp = bm.stamp_ns if bm.stamp_ns is not None else 0  # the core refuses 0
        if self._last_tick_ns is not None and stamp <= self._last_tick_ns:
            self.counts.late_messages += 1
        # Before the first epoch the queue holds only instructions; _start_epoch keeps them.
        heapq.heappush(self._pending, (stamp, self._seq, _NavigationMessage(
            bm.msg.text, stamp_to_ns(bm.msg.valid_for), bm.msg.source, bm.topic)))
        self._seq += 1
        if self.epochs:
            self._run_safe_ticks(self.epochs[-1], bm.log_time_ns)

    def _departure(self, bm: bag_io.BagMessage, epoch: "_Epoch") -> str:
        """How the message's stamp leaves the epoch's time line, in words."""
        offset_s = self._time_line.departure_ns(bm.stamp_ns, epoch.newest_stamp_ns) / NS_PER_S
        direction = "back" if offset_s < 0 else "forward"
        return f"stamp went {direction} {abs(offset_s):.3f} s on {bm.topic}"

    def _accept(self, bm: bag_io.BagMessage, payload: _Payload) -> None:
        """Queue a message of the current epoch and run the ticks it makes safe."""
        epoch, stamp = self.epochs[-1], bm.stamp_ns
        if self._last_tick_ns is not None and stamp <= self._last_tick_ns:
            self.counts.late_messages += 1
        epoch.newest_stamp_ns = max(epoch.newest_stamp_ns, stamp)
        heapq.heappush(self._pending, (stamp, self._seq, payload))
        self._seq += 1
        self._run_safe_ticks(epoch, bm.log_time_ns)

    def _run_safe_ticks(self, epoch: "_Epoch", log_time_ns: int) -> None:
        # Every message stamped <= T has arrived once the log time passed T + max_delay.
        safe_until = log_time_ns - self.max_delay_ns
        while epoch.next_tick_ns <= min(safe_until, epoch.newest_stamp_ns):
            self._tick(epoch)

    def _start_epoch(self, stamp_ns: int, reason: str) -> None:
        self.core.reset()
        if self.epochs:
            self._pending.clear()
        self._last_tick_ns = None
        forced = self.options.nav_text
        if forced is not None and not self.nav_ignored:
            # Valid at every t0 of the epoch (the reset cleared the previous epoch's).
            self.core.add_navigation(replay_navigation.FORCED_STAMP_NS, forced,
                                     replay_navigation.FORCED_VALID_FOR_NS,
                                     replay_navigation.FORCED_SOURCE)
        first_tick = -(-stamp_ns // self.period_ns) * self.period_ns  # ceil to the grid
        self.epochs.append(_Epoch(len(self.epochs), stamp_ns, stamp_ns, first_tick, reason))

    def _finish_epoch(self, run_remaining: bool = True) -> None:
        epoch = self.epochs[-1]
        if run_remaining:
            while epoch.next_tick_ns <= epoch.newest_stamp_ns:
                self._tick(epoch)
        # Odometry stamped after the last tick still is ground truth for the last ticks.
        for stamp, _, payload in sorted(self._pending, key=lambda p: p[:2]):
            if isinstance(payload, _OdometryMessage):
                epoch.odo_stamps.append(stamp)
                epoch.odo_xyz.append(payload.sample.xyz)
                epoch.odo_quat.append(payload.sample.quat_xyzw)
        self._pending.clear()
        score_ticks([self.ticks[i] for i in epoch.tick_rows],
                    [self.tick_predictions[i] for i in epoch.tick_rows],
                    ground_truth_track(epoch.odo_stamps, epoch.odo_xyz, epoch.odo_quat),
                    self.base_offset, interpolation=self.config.interpolation,
                    max_odometry_gap=self.config.max_odometry_gap,
                    horizons=self.options.horizons)

    def _feed_until(self, now_ns: int, epoch: _Epoch) -> None:
        inputs = self.core.inputs
        while self._pending and self._pending[0][0] <= now_ns:
            stamp, _, payload = heapq.heappop(self._pending)
            if isinstance(payload, _OdometryMessage):
                res = inputs.add_checked_odometry(payload.sample)
                self.counts.odometry += 1
                if res.accepted:
                    epoch.odo_stamps.append(stamp)
                    epoch.odo_xyz.append(payload.sample.xyz)
                    epoch.odo_quat.append(payload.sample.quat_xyzw)
            elif isinstance(payload, _NavigationMessage):
                res = inputs.add_navigation(stamp, payload.text, payload.valid_for_ns,
                                            payload.source)
                self.counts.navigation += 1
                self.nav_counts["accepted" if res.accepted else "rejected"] += 1
                if not res.accepted:
                    self._reject(payload.topic, res.reason)
                continue
            else:
                res = inputs.add_image(payload.slot, stamp, payload.image)
                self.counts.images += 1
            if not res.accepted:
                self._reject("core", res.reason)

    def _tick(self, epoch: _Epoch) -> None:
        now_ns = epoch.next_tick_ns
        epoch.next_tick_ns += self.period_ns
        self._feed_until(now_ns, epoch)
        self._last_tick_ns = now_ns
        wall = time.perf_counter()
        compare = None
        if not self._comparing:
            result = self.core.tick(now_ns)
        else:
            try:
                prepared = self.core.prepare(now_ns)
            except InputNotReady as exc:
                result = self.core.skipped(now_ns, exc)
            else:
                result = self.core.run(prepared)
                compare = replay_navigation.compare_conditions(self.core, prepared, result)
        wall = time.perf_counter() - wall
        index = len(self.ticks)
        epoch.tick_rows.append(index)
        record = TickRecord.of(index, epoch.index, result)
        if self._comparing:  # ticks skipped before the model get no record
            record.nav_compare = compare[0] if compare else None
            self.nav_selected.append(compare[1] if compare else {})
        self.ticks.append(record)
        self.results.append(result)
        self.tick_predictions.append(
            np.stack([c.xyz for c in result.candidates]) if result.status == PlanStatus.OK
            else None)
        t = result.timings
        self.tick_timings.append(TickTiming(
            tick=index, wall_s=wall, input_preparation_s=t.input_preparation,
            decode_s=t.decode, model_call_s=t.model_call,
            model={k: float(v) for k, v in asdict(t.model).items()},
            model_total_s=t.model.total))
        if self._progress is not None:
            self._progress.update(1)

    @property
    def _comparing(self) -> bool:
        """--nav-compare with a model that takes instructions."""
        return self.options.nav_compare and not self.nav_ignored

    def _navigation_summary(self, ticks: list) -> tuple[dict, list]:
        """(the bag's navigation section, its warnings)."""
        forced = self.options.nav_text
        section = {"topic": self.nav_topic, "forced_text": forced, **self.nav_counts,
                   "ignored_reason": self.nav_ignored,
                   "tick_counts": replay_navigation.tick_counts(ticks)}
        warnings = []
        uses = [what for what, used in ((f"{self.nav_counts['ignored']} instruction(s) on "
                                         f"{self.nav_topic}", self.nav_counts["ignored"]),
                                        ("--nav-text", forced is not None),
                                        ("--nav-compare", self.options.nav_compare)) if used]
        if self.nav_ignored and uses:
            warnings.append(f"{' and '.join(uses)}: {self.nav_ignored}")
        return section, warnings

    def _summary(self) -> dict:
        ticks = [rec.to_dict() for rec in self.ticks]
        navigation, warnings = self._navigation_summary(ticks)
        extra = {"nav_compare": replay_navigation.summary(ticks)} if self._comparing else {}
        statuses = collections.Counter(rec.status.name for rec in self.ticks)
        reason_codes = collections.Counter(rec.reason_code.name for rec in self.ticks
                                           if rec.status is not PlanStatus.OK)
        return {
            "navigation": navigation, **extra, "warnings": warnings,
            "counts": asdict(self.counts),
            "rejections": dict(sorted(self.rejections.items())),
            "epochs": [{"index": e.index, "first_stamp_ns": e.first_stamp_ns,
                        "last_stamp_ns": e.newest_stamp_ns, "reason": e.reason,
                        "ticks": len(e.tick_rows)} for e in self.epochs],
            "tick_status_counts": dict(sorted(statuses.items())),
            "reason_code_counts": dict(sorted(reason_codes.items())),
            "metrics": aggregate_metrics(ticks, self.options.horizons),
            "ticks": ticks,
        }
