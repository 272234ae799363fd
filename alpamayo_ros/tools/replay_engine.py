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
* Header stamps of one topic that go back by more than core.time_jump_tolerance, or
  forward by more than max_forward_jump, TIME_JUMP_CONFIRMATIONS times in a row start a new
  **epoch** (the live node's rule: one late or stray message never resets anything): the
  core is reset, ticks restart on the new time line, and ground truth only uses odometry
  of the tick's own epoch. Messages of an unconfirmed jump are rejected and counted.

Navigation instructions (alpamayo/navigation, when the bag has it) are replayed like the
other inputs, by header stamp, through the node's rules (core.navigation): a tick uses the
newest one valid at its t0; a model family without navigation ignores them (one warning in
the bag's result). They take no part in the epoch rule; a new epoch clears them, as a
reset clears the node's. ReplayOptions.nav_text forces one instruction for every tick
instead; nav_compare runs each tick also without it and direction-swapped
(tools/replay_navigation.py).

Per tick the record holds t0, v0, every candidate trajectory (t0 frame), CoC, the
navigation text the model saw, skip reasons and the metrics of tools/replay_scoring.py.
Wall-clock timings are kept apart, so two replays of the same bag, parameters and seed
give equal records.
"""
from __future__ import annotations

import heapq
import math
import time
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from alpamayo_ros.core.errors import DecodeError, InputNotReady, OdometryError
from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.metrics import DEFAULT_HORIZONS
from alpamayo_ros.core.navigation import NAVIGATION_TOPIC, navigation_ignored_reason
from alpamayo_ros.core.odometry import checked_odometry
from alpamayo_ros.core.plan_message import OutputContext
from alpamayo_ros.core.plan_result import PlanResult, PlanStatus
from alpamayo_ros.core.planner_core import TIME_JUMP_CONFIRMATIONS, PlannerCore
from alpamayo_ros.core.planner_params import (inference_options, optional_outputs,
                                              planner_config)
from alpamayo_ros.core.ring_buffer import InsertStatus
from alpamayo_ros.core.types import NS_PER_S, ModelDescription, PlannerModel
from alpamayo_ros.tools import bag_io, replay_navigation
from alpamayo_ros.tools.replay_scoring import aggregate_metrics, ground_truth_track, score_ticks

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
    navigation: Optional[str] = None  # the bag's navigation topic (None: not read)


def _check_topics(reader: bag_io.BagReader, values: Mapping[str, Any],
                  options: ReplayOptions) -> _Topics:
    """Map configured topics to the bag's connections; BagError on missing or wrong types."""
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
        self.ticks: list[dict] = []
        self.tick_timings: list[dict] = []
        self.tick_predictions: list[Optional[np.ndarray]] = []
        self.results: list[PlanResult] = []
        self.epochs: list[_Epoch] = []
        self.counts = {"messages": 0, "images": 0, "odometry": 0, "late_messages": 0,
                       "rejected": 0}
        self.rejections: dict[str, int] = {}
        self._pending: list = []
        # Per topic: messages off the epoch's time line in a row (a possible time jump).
        self._off_line: dict[str, list] = {}
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

    def optional_outputs(self) -> list:
        """The outputs the parameters enable, their topics resolved as the node's."""
        return [dataclasses.replace(o, topic=resolve_topic(o.topic, self.options.namespace))
                for o in optional_outputs(self.values)]

    # ---- stream ------------------------------------------------------------------------

    def run(self) -> tuple[dict, dict]:
        wall_start = time.perf_counter()
        result: dict[str, Any] = {"bag": self.job.bag, "status": "ok", "error": ""}
        try:
            with bag_io.BagReader(self.job.bag) as reader:
                topics = _check_topics(reader, self.values, self.options)
                result["storage"] = bag_io.storage_of(Path(self.job.bag))
                result["topics"] = {"cameras": list(topics.cameras), "odometry": topics.odometry,
                                    "navigation": topics.navigation}
                self.nav_topic = topics.navigation
                if self.options.progress:
                    self._open_progress(reader)
                read = list(topics.cameras) + [topics.odometry]
                for bm in reader.messages(read + ([topics.navigation] if topics.navigation
                                                  else [])):
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
                   "ticks": self.tick_timings}
        return result, timings

    def _open_progress(self, reader: bag_io.BagReader) -> None:
        from tqdm import tqdm
        span = max(reader.end_time_ns - reader.start_time_ns, 0)
        self._progress = tqdm(total=int(span // self.period_ns) + 1, unit="tick",
                              desc=Path(self.job.bag).name, leave=False,
                              disable=None)  # None: off when stderr is not a terminal

    def _reject(self, topic: str, reason: str) -> None:
        self.counts["rejected"] += 1
        key = f"{topic}: {reason}"[:300]
        self.rejections[key] = self.rejections.get(key, 0) + 1

    def _on_message(self, bm: bag_io.BagMessage, topics: _Topics) -> None:
        self.counts["messages"] += 1
        if bm.topic == topics.navigation:
            self._on_navigation(bm)
            return
        if bm.stamp_ns is None:
            self._reject(bm.topic, "message has no header stamp")
            return
        try:
            if bm.topic == topics.odometry:
                payload = ("odom", checked_odometry(bag_io.odometry_to_sample(bm.msg)))
            else:
                payload = ("image", topics.cameras[bm.topic],
                           bag_io.image_to_encoded(bm.msg, bm.msgtype))
        except (DecodeError, OdometryError) as exc:
            self._reject(bm.topic, str(exc))
            return
        if not self.epochs:
            self._start_epoch(bm.stamp_ns, "start of bag")
        epoch = self.epochs[-1]
        jump = self._time_line_jump(bm, epoch)
        if jump is None:
            self._off_line.pop(bm.topic, None)
            self._accept(bm, payload)
            return
        run = self._off_line.setdefault(bm.topic, [])
        if run and not 0 <= bm.stamp_ns - run[-1][0].stamp_ns <= self.jump_back_ns:
            run.clear()  # not one consistent new time line
        run.append((bm, payload))
        if len(run) < TIME_JUMP_CONFIRMATIONS:
            self._reject(bm.topic, f"out of order: {jump} (rejected; "
                                   f"{TIME_JUMP_CONFIRMATIONS} in a row start a new epoch)")
            return
        self._finish_epoch()
        self._start_epoch(run[0][0].stamp_ns, f"time jump: {jump}")
        for held, held_payload in run:
            self._accept(held, held_payload)
        self._off_line.clear()

    def _on_navigation(self, bm: bag_io.BagMessage) -> None:
        """Queue an instruction by its stamp (the core checks it when it is fed, as the
        node's add_navigation does); ignored by a model without navigation."""
        self.nav_counts["messages"] += 1
        if self.nav_ignored:
            self.nav_counts["ignored"] += 1
            return
        fields = bag_io.navigation_fields(bm.msg)
        if self._last_tick_ns is not None and fields[0] <= self._last_tick_ns:
            self.counts["late_messages"] += 1
        # Before the first epoch the queue holds only instructions; _start_epoch keeps them.
        heapq.heappush(self._pending, (fields[0], self._seq, ("nav", bm.topic, fields)))
        self._seq += 1
        if self.epochs:
            self._run_safe_ticks(self.epochs[-1], bm.log_time_ns)

    def _time_line_jump(self, bm: bag_io.BagMessage, epoch: "_Epoch") -> Optional[str]:
        """How the message's stamp leaves the epoch's time line, or None when it does not."""
        stamp = bm.stamp_ns
        if stamp < epoch.newest_stamp_ns - self.jump_back_ns:
            return f"stamp went back {(epoch.newest_stamp_ns - stamp) / NS_PER_S:.3f} s " \
                   f"on {bm.topic}"
        if stamp > epoch.newest_stamp_ns + self.jump_fwd_ns:
            return f"stamp went forward {(stamp - epoch.newest_stamp_ns) / NS_PER_S:.3f} s " \
                   f"on {bm.topic}"
        return None

    def _accept(self, bm: bag_io.BagMessage, payload: tuple) -> None:
        """Queue a message of the current epoch and run the ticks it makes safe."""
        epoch, stamp = self.epochs[-1], bm.stamp_ns
        if self._last_tick_ns is not None and stamp <= self._last_tick_ns:
            self.counts["late_messages"] += 1
        epoch.newest_stamp_ns = max(epoch.newest_stamp_ns, stamp)
        heapq.heappush(self._pending, (stamp, self._seq, payload))
        self._seq += 1
        self._run_safe_ticks(epoch, bm.log_time_ns)

    def _run_safe_ticks(self, epoch: _Epoch, log_time_ns: int) -> None:
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
            if payload[0] == "odom":
                epoch.odo_stamps.append(stamp)
                epoch.odo_xyz.append(payload[1].xyz)
                epoch.odo_quat.append(payload[1].quat_xyzw)
        self._pending.clear()
        score_ticks([self.ticks[i] for i in epoch.tick_rows],
                    [self.tick_predictions[i] for i in epoch.tick_rows],
                    ground_truth_track(epoch.odo_stamps, epoch.odo_xyz, epoch.odo_quat),
                    self.base_offset, interpolation=self.config.interpolation,
                    max_odometry_gap=self.config.max_odometry_gap,
                    horizons=self.options.horizons)

    def _feed_until(self, now_ns: int, epoch: _Epoch) -> None:
        while self._pending and self._pending[0][0] <= now_ns:
            stamp, _, payload = heapq.heappop(self._pending)
            if payload[0] == "nav":
                res = self.core.add_navigation(*payload[2])
                if res.status == InsertStatus.REJECTED:
                    self.nav_counts["rejected"] += 1
                    self._reject(payload[1], res.reason)
                else:
                    self.nav_counts["accepted"] += 1
                continue
            if payload[0] == "odom":
                sample = payload[1]
                res = self.core.add_odometry(sample)
                self.counts["odometry"] += 1
                if res.status in (InsertStatus.ADDED, InsertStatus.REPLACED):
                    epoch.odo_stamps.append(stamp)
                    epoch.odo_xyz.append(sample.xyz)
                    epoch.odo_quat.append(sample.quat_xyzw)
            else:
                res = self.core.add_image(payload[1], stamp, payload[2])
                self.counts["images"] += 1
            if res.status in (InsertStatus.REJECTED, InsertStatus.TOO_OLD):
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
        record = self._tick_record(index, epoch.index, result)
        if self._comparing:  # ticks skipped before the model get no record
            if compare:
                record["nav_compare"] = compare[0]
            self.nav_selected.append(compare[1] if compare else {})
        self.ticks.append(record)
        self.results.append(result)
        self.tick_predictions.append(
            np.stack([c.xyz for c in result.candidates]) if result.status == PlanStatus.OK
            else None)
        t = result.timings
        self.tick_timings.append({
            "tick": index, "wall_s": wall, "input_preparation_s": t.input_preparation,
            "decode_s": t.decode, "model_call_s": t.model_call,
            "model": {k: float(v) for k, v in asdict(t.model).items()},
            "model_total_s": t.model.total})
        if self._progress is not None:
            self._progress.update(1)

    def _tick_record(self, index: int, epoch: int, r: PlanResult) -> dict:
        rec: dict[str, Any] = {
            "tick": index, "epoch": epoch, "now_ns": int(r.now_ns),
            "t0_ns": None if r.t0_ns is None else int(r.t0_ns),
            "status": r.status.name, "reason_code": r.reason_code.name, "reason": r.reason,
            "v0": _json_float(r.v0),
            "selected_index": int(r.selected_index),
            "max_frame_skew_s": _json_float(r.max_frame_skew if r.t0_ns is not None else None),
            "camera_skew_s": _json_float(r.camera_skew if r.t0_ns is not None else None),
            "odometry_samples": int(r.odometry_samples),
            "navigation_status": r.navigation_status, "navigation_text": r.navigation_text,
            "candidates": [], "metrics": None, "metrics_note": "",
        }
        for c in r.candidates:
            rec["candidates"].append({
                "xyz": np.round(np.asarray(c.xyz, dtype=np.float64), COORD_DECIMALS).tolist(),
                "valid": bool(c.valid), "invalid_reason": c.invalid_reason,
                "coc": c.coc, "coc_token_count": int(c.coc_token_count),
                "coc_truncated": bool(c.coc_truncated)})
        return rec

    @property
    def _comparing(self) -> bool:
        """--nav-compare with a model that takes instructions."""
        return self.options.nav_compare and not self.nav_ignored

    def _navigation_summary(self) -> tuple[dict, list]:
        """(the bag's navigation section, its warnings)."""
        forced = self.options.nav_text
        section = {"topic": self.nav_topic, "forced_text": forced, **self.nav_counts,
                   "ignored_reason": self.nav_ignored,
                   "tick_counts": replay_navigation.tick_counts(self.ticks)}
        warnings = []
        uses = [what for what, used in ((f"{self.nav_counts['ignored']} instruction(s) on "
                                         f"{self.nav_topic}", self.nav_counts["ignored"]),
                                        ("--nav-text", forced is not None),
                                        ("--nav-compare", self.options.nav_compare)) if used]
        if self.nav_ignored and uses:
            warnings.append(f"{' and '.join(uses)}: {self.nav_ignored}")
        return section, warnings

    def _summary(self) -> dict:
        statuses: dict[str, int] = {}
        reason_codes: dict[str, int] = {}
        for rec in self.ticks:
            statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
            if rec["status"] != "OK":
                reason_codes[rec["reason_code"]] = reason_codes.get(rec["reason_code"], 0) + 1
        navigation, warnings = self._navigation_summary()
        extra = {"nav_compare": replay_navigation.summary(self.ticks)} if self._comparing else {}
        return {
            "navigation": navigation, **extra, "warnings": warnings,
            "counts": dict(self.counts),
            "rejections": dict(sorted(self.rejections.items())),
            "epochs": [{"index": e.index, "first_stamp_ns": e.first_stamp_ns,
                        "last_stamp_ns": e.newest_stamp_ns, "reason": e.reason,
                        "ticks": len(e.tick_rows)} for e in self.epochs],
            "tick_status_counts": dict(sorted(statuses.items())),
            "reason_code_counts": dict(sorted(reason_codes.items())),
            "metrics": aggregate_metrics(self.ticks, self.options.horizons),
            "ticks": self.ticks,
        }
