"""Replay rosbag2 bags through the planner core in stepped bag time and score the plans.

Command: ``ros2 run alpamayo_ros replay`` / ``alpamayo-replay`` /
``python -m alpamayo_ros.tools.replay BAG [BAG ...] --params config/planner.yaml -o OUT``.

Time model (see docs/replay.md)
-------------------------------
* Planning ticks are placed every 1/rate_hz of **header-stamp** time, on the absolute grid
  k / rate_hz (so a tick time does not depend on where a bag starts). Tick T sees exactly the
  messages whose header stamp is <= T; the core gets now_ns = T. No wall clock is involved,
  so the results do not depend on how fast the machine is; every tick is planned (the live
  node drops ticks while an inference runs, the replay never does).
* The bag **log time** (receive time) only orders the stream: tick T is run once a message
  logged after T + max_delay has been read (or the bag ended), so data stamped <= T that
  was received up to max_delay late is still seen. Messages later than that are counted as
  ``late_messages`` and used from the next tick on.
* A header stamp that goes back by more than core.time_jump_tolerance, or forward by more
  than max_forward_jump, starts a new **epoch**: the core is reset, ticks restart on the new
  time line, and ground truth only uses odometry of the tick's own epoch.

Per tick the report holds t0, v0, every candidate trajectory (t0 frame), CoC, skip reasons
and minADE/minFDE (XY, min over samples) at 1 s / 3 s / 6.4 s against the bag's own
odometry where it covers the horizon without gaps. Wall-clock timings and the hardware
fingerprint live in the separate top-level ``timings`` section, so two reports of the same
bag, parameters and seed are byte-identical once ``timings`` is removed.

Exit codes: 0 = success (or regression passed), 1 = regression against --golden,
2 = error (bad parameters, unreadable bag, missing topics, wrong types).
"""
from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.errors import AlpamayoError, ConfigError, DecodeError, ModelInputError
from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.history import OdometryTrack
from alpamayo_ros.core.metrics import DEFAULT_HORIZONS, displacement_errors, future_xyz_t0_frame
from alpamayo_ros.core.plan_result import PlanResult, PlanStatus
from alpamayo_ros.core.planner_core import PlannerCore
from alpamayo_ros.core.ring_buffer import InsertStatus
from alpamayo_ros.core.types import InferenceOptions, PlannerModel
from alpamayo_ros.tools import bag_io

NS_PER_S = 1_000_000_000
REPORT_FORMAT = "alpamayo_replay_report/1"
EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2
NODE_NAME = "alpamayo_planner"
# Decimals kept for trajectory coordinates in the report [m] (1 um).
COORD_DECIMALS = 6


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def read_parameter_file(path: Path | str, node_name: str = NODE_NAME) -> dict[str, Any]:
    """Flat parameters of `node_name` from a ROS 2 parameter file.

    Sections that apply: "/**", "**", "<node>", "/<node>" and "/<ns>/<node>"; later (more
    specific) sections override "/**". Nested groups become dotted names (core.*, model.*).
    """
    import yaml
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read parameter file: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: need a mapping '<node>: ros__parameters: ...', "
                          f"have {type(doc).__name__}")
    generic = [k for k in doc if str(k) in ("/**", "**")]
    specific = [k for k in doc if str(k).rstrip("/").split("/")[-1] == node_name]
    if not generic and not specific:
        raise ConfigError(f"{path}: no section for node {node_name!r} (or '/**'); "
                          f"have {sorted(map(str, doc))}")
    flat: dict[str, Any] = {}
    for key in generic + specific:
        section = doc[key]
        if not isinstance(section, Mapping) or "ros__parameters" not in section:
            raise ConfigError(f"{path}: section {key!r} needs a 'ros__parameters' mapping")
        flat.update(_flatten(section["ros__parameters"] or {}))
    return flat


def resolve_parameters(flat: Mapping[str, Any], overrides: Mapping[str, Any] = {}) -> dict:
    """Validated, complete node parameters (ros/params.py schema) with overrides applied."""
    from alpamayo_ros.ros.params import validate  # rclpy-free module (lazy rclpy inside)
    values = dict(flat)
    # Keys the planner node does not know are ROS-only (e.g. use_sim_time): ignore them.
    values.pop("use_sim_time", None)
    values.update(overrides)
    return validate(values)


def resolve_topic(name: str, namespace: str = "/") -> str:
    """Relative topic names resolve against the namespace, as the node would resolve them."""
    if name.startswith("/"):
        return name
    ns = "/" + namespace.strip("/")
    return (ns.rstrip("/") + "/" + name) if ns != "/" else "/" + name


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

_MODEL_CACHE: dict = {}


def model_key(values: Mapping[str, Any]) -> tuple:
    return tuple(values[k] for k in ("model.backend", "model.checkpoint_dir",
                                     "model.processor_dir", "model.device", "model.dtype"))


def load_model(values: Mapping[str, Any]) -> PlannerModel:
    """The PlannerModel of `model.*` parameters, cached per process (workers reuse it).

    The very same choice as the node's (alpamayo_ros.model.backends).
    """
    key = model_key(values)
    if key not in _MODEL_CACHE:
        from alpamayo_ros.model.backends import load_model as load_backend
        _MODEL_CACHE[key] = load_backend(values, inference_options(values))[0]
    return _MODEL_CACHE[key]


def inference_options(values: Mapping[str, Any]) -> InferenceOptions:
    from alpamayo_ros.ros.params import inference_options as from_params
    return from_params(values)


def planner_config(values: Mapping[str, Any]) -> PlannerConfig:
    from alpamayo_ros.ros.params import core_config_values
    return PlannerConfig.from_dict(core_config_values(values))


# --------------------------------------------------------------------------------------
# Replay of one bag
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayOptions:
    """Replay-only settings (the node parameters come from the parameter file).

    max_delay_s: bound on log time - header stamp; a tick waits for it (see module doc).
    max_forward_jump_s: a stamp this far ahead of the stream starts a new epoch.
    namespace: resolves relative topic names of the parameter file.
    horizons: metric horizons [s] (multiples of 0.1 up to 6.4).
    """

    max_delay_s: float = 0.5
    max_forward_jump_s: float = 10.0
    namespace: str = "/"
    horizons: tuple = DEFAULT_HORIZONS
    progress: bool = False


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


@dataclass
class _Topics:
    cameras: dict          # topic -> camera slot
    transports: list       # per slot "raw" | "compressed"
    odometry: str


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


def _json_float(value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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
    if problems:
        listing = ", ".join(f"{t} [{'/'.join(sorted(ty))}]" for t, ty in sorted(bag_types.items()))
        raise bag_io.BagError(f"{reader.path}: " + "; ".join(problems)
                              + f". Bag has: {listing or 'no topics'}")
    return _Topics(cameras, transports, odometry)


def _convert_odometry(msg: Any) -> bag_io.OdometryReading:
    reading = bag_io.odometry_to_reading(msg)
    if not (np.all(np.isfinite(reading.xyz)) and np.all(np.isfinite(reading.quat_xyzw))):
        raise ModelInputError(f"odometry pose is not finite: position {reading.xyz.tolist()}")
    norm = float(np.linalg.norm(reading.quat_xyzw))
    if abs(norm - 1.0) > 1e-3:
        raise ModelInputError(f"odometry orientation is not a unit quaternion: have norm "
                              f"{norm:.6f}, need 1 +- 1e-3")
    return reading


def _max_gap_s(stamps: np.ndarray, start_ns: int, end_ns: int) -> float:
    """Largest time without odometry inside [start, end] [s] (inf when not covered)."""
    if len(stamps) == 0 or stamps[0] > start_ns or stamps[-1] < end_ns:
        return math.inf
    lo = max(int(np.searchsorted(stamps, start_ns, side="right")) - 1, 0)
    hi = int(np.searchsorted(stamps, end_ns, side="left"))
    window = stamps[lo:hi + 1]
    return float(np.max(np.diff(window))) / NS_PER_S if len(window) > 1 else 0.0


class BagReplay:
    """Replays one bag through a fresh PlannerCore; `run()` returns (result, timings)."""

    def __init__(self, job: BagJob, model: Optional[PlannerModel] = None) -> None:
        self.job = job
        self.values = job.values
        self.options = job.options
        self.config = planner_config(job.values)
        self.inference = inference_options(job.values)
        self.model = model if model is not None else load_model(job.values)
        self.core = PlannerCore(self.config, self.model, self.inference)
        self.period_ns = int(round(NS_PER_S / float(job.values["rate_hz"])))
        self.jump_back_ns = int(round(self.config.time_jump_tolerance * NS_PER_S))
        self.jump_fwd_ns = int(round(self.options.max_forward_jump_s * NS_PER_S))
        self.max_delay_ns = int(round(self.options.max_delay_s * NS_PER_S))
        self.base_offset = Pose.from_xyz_rpy(self.config.base_offset_xyz,
                                             self.config.base_offset_rpy)
        self.ticks: list[dict] = []
        self.tick_timings: list[dict] = []
        self.tick_predictions: list[Optional[np.ndarray]] = []
        self.results: list[PlanResult] = []
        self.epochs: list[_Epoch] = []
        self.counts = {"messages": 0, "images": 0, "odometry": 0, "late_messages": 0,
                       "rejected": 0}
        self.rejections: dict[str, int] = {}
        self._pending: list = []
        self._seq = 0
        self._last_tick_ns: Optional[int] = None
        self._progress = None

    # ---- stream ------------------------------------------------------------------------

    def run(self) -> tuple[dict, dict]:
        wall_start = time.perf_counter()
        result: dict[str, Any] = {"bag": self.job.bag, "status": "ok", "error": ""}
        try:
            with bag_io.BagReader(self.job.bag) as reader:
                topics = _check_topics(reader, self.values, self.options)
                result["storage"] = bag_io.storage_of(Path(self.job.bag))
                result["topics"] = {"cameras": list(topics.cameras), "odometry": topics.odometry}
                if self.options.progress:
                    self._open_progress(reader)
                for bm in reader.messages(list(topics.cameras) + [topics.odometry]):
                    self._on_message(bm, topics)
            self._finish_epoch()
        except bag_io.BagError as exc:
            # Keep what was replayed so far; the bag is marked as an error (exit 2).
            result["status"], result["error"] = "error", str(exc)
            if self.epochs:
                self._finish_epoch(run_remaining=False)
        finally:
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
        if bm.stamp_ns is None:
            self._reject(bm.topic, "message has no header stamp")
            return
        try:
            if bm.topic == topics.odometry:
                payload = ("odom", _convert_odometry(bm.msg))
            else:
                payload = ("image", topics.cameras[bm.topic],
                           bag_io.image_to_encoded(bm.msg, bm.msgtype))
        except (DecodeError, ModelInputError) as exc:
            self._reject(bm.topic, str(exc))
            return
        stamp = bm.stamp_ns
        epoch = self.epochs[-1] if self.epochs else None
        if epoch is None:
            self._start_epoch(stamp, "start of bag")
        elif stamp < epoch.newest_stamp_ns - self.jump_back_ns:
            self._finish_epoch()
            back = (epoch.newest_stamp_ns - stamp) / NS_PER_S
            self._start_epoch(stamp, f"time jump: stamp went back {back:.3f} s on {bm.topic}")
        elif stamp > epoch.newest_stamp_ns + self.jump_fwd_ns:
            self._finish_epoch()
            ahead = (stamp - epoch.newest_stamp_ns) / NS_PER_S
            self._start_epoch(stamp, f"time jump: stamp went forward {ahead:.3f} s on {bm.topic}")
        epoch = self.epochs[-1]
        if self._last_tick_ns is not None and stamp <= self._last_tick_ns:
            self.counts["late_messages"] += 1
        epoch.newest_stamp_ns = max(epoch.newest_stamp_ns, stamp)
        heapq.heappush(self._pending, (stamp, self._seq, payload))
        self._seq += 1
        # Every message stamped <= T has arrived once the log time passed T + max_delay.
        safe_until = bm.log_time_ns - self.max_delay_ns
        while epoch.next_tick_ns <= min(safe_until, epoch.newest_stamp_ns):
            self._tick(epoch)

    def _start_epoch(self, stamp_ns: int, reason: str) -> None:
        self.core.reset()
        self._pending.clear()
        self._last_tick_ns = None
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
        self._score_epoch(epoch)

    def _feed_until(self, now_ns: int, epoch: _Epoch) -> None:
        while self._pending and self._pending[0][0] <= now_ns:
            stamp, _, payload = heapq.heappop(self._pending)
            if payload[0] == "odom":
                reading = payload[1]
                res = self.core.add_odometry(stamp, reading.xyz, reading.quat_xyzw)
                self.counts["odometry"] += 1
                if res.status in (InsertStatus.ADDED, InsertStatus.REPLACED):
                    epoch.odo_stamps.append(stamp)
                    epoch.odo_xyz.append(reading.xyz)
                    epoch.odo_quat.append(reading.quat_xyzw)
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
        result = self.core.tick(now_ns)
        wall = time.perf_counter() - wall
        index = len(self.ticks)
        epoch.tick_rows.append(index)
        self.ticks.append(self._tick_record(index, epoch.index, result))
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
            "status": r.status.name, "reason": r.reason, "v0": _json_float(r.v0),
            "selected_index": int(r.selected_index),
            "max_frame_skew_s": _json_float(r.max_frame_skew if r.t0_ns is not None else None),
            "camera_skew_s": _json_float(r.camera_skew if r.t0_ns is not None else None),
            "odometry_samples": int(r.odometry_samples),
            "candidates": [], "metrics": None, "metrics_note": "",
        }
        for c in r.candidates:
            rec["candidates"].append({
                "xyz": np.round(np.asarray(c.xyz, dtype=np.float64), COORD_DECIMALS).tolist(),
                "valid": bool(c.valid), "invalid_reason": c.invalid_reason,
                "coc": c.coc, "coc_token_count": int(c.coc_token_count),
                "coc_truncated": bool(c.coc_truncated)})
        return rec

    # ---- metrics -----------------------------------------------------------------------

    def _score_epoch(self, epoch: _Epoch) -> None:
        """minADE/minFDE of the epoch's OK ticks against the epoch's own odometry."""
        if epoch.odo_stamps:
            stamps = np.asarray(epoch.odo_stamps, dtype=np.int64)
            order = np.argsort(stamps, kind="stable")
            stamps = stamps[order]
            keep = np.concatenate([[True], np.diff(stamps) > 0])  # duplicate stamps: first
            track = OdometryTrack(stamps[keep], np.asarray(epoch.odo_xyz)[order][keep],
                                  np.asarray(epoch.odo_quat)[order][keep])
        else:
            track = OdometryTrack.empty()
        horizon_ns = int(round(max(self.options.horizons) * NS_PER_S))
        for row in epoch.tick_rows:
            rec, pred = self.ticks[row], self.tick_predictions[row]
            if pred is None:
                rec["metrics_note"] = f"no plan ({rec['status']})"
                continue
            t0 = rec["t0_ns"]
            covered_end = min(t0 + horizon_ns, int(track.stamps_ns[-1])) if len(track) else t0
            gap = _max_gap_s(track.stamps_ns, t0, covered_end)
            if gap > self.config.max_odometry_gap:
                rec["metrics_note"] = (f"ground truth has a {gap:.3f} s odometry gap after t0 "
                                       f"(max_odometry_gap {self.config.max_odometry_gap:g} s)")
                continue
            truth = future_xyz_t0_frame(track, t0, self.base_offset, self.config.interpolation)
            if truth is None:
                rec["metrics_note"] = "ground truth does not cover t0"
                continue
            errors = displacement_errors(pred, truth, self.options.horizons)
            rec["metrics"] = {f"{e.horizon:g}": {"min_ade": e.min_ade, "min_fde": e.min_fde,
                                                 "best_sample": e.best_sample} for e in errors}
            missing = [f"{e.horizon:g} s" for e in errors if e.min_ade is None]
            if missing:
                rec["metrics_note"] = ("ground truth ends before t0 + " + ", ".join(missing))

    def _summary(self) -> dict:
        statuses: dict[str, int] = {}
        skip_reasons: dict[str, int] = {}
        for rec in self.ticks:
            statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
            if rec["status"] != "OK":
                key = _reason_class(rec["reason"])
                skip_reasons[key] = skip_reasons.get(key, 0) + 1
        return {
            "counts": dict(self.counts),
            "rejections": dict(sorted(self.rejections.items())),
            "epochs": [{"index": e.index, "first_stamp_ns": e.first_stamp_ns,
                        "last_stamp_ns": e.newest_stamp_ns, "reason": e.reason,
                        "ticks": len(e.tick_rows)} for e in self.epochs],
            "tick_status_counts": dict(sorted(statuses.items())),
            "skip_reason_counts": dict(sorted(skip_reasons.items())),
            "metrics": aggregate_metrics(self.ticks, self.options.horizons),
            "ticks": self.ticks,
        }


def _reason_class(reason: str) -> str:
    """Group skip reasons by their text before the first number (for the summary)."""
    out = []
    for ch in reason:
        if ch.isdigit():
            break
        out.append(ch)
    return "".join(out).strip(" :(") or reason


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


def run_bag_job(job: BagJob, model: Optional[PlannerModel] = None) -> dict:
    """Replay one bag and write its output bag / plot; picklable entry point for workers.

    model: the PlannerModel to use (a worker that holds one loaded, e.g. the Ray actors of
    tools/ray_replay.py); None loads it with `load_model` (cached per process).
    Returns {"result": deterministic part, "timings": wall-clock part}. Never raises for
    bag or parameter problems: they come back as status "error".
    """
    try:
        replay = BagReplay(job, model=model)
    except (AlpamayoError, OSError) as exc:
        return {"result": {"bag": job.bag, "status": "error", "error": str(exc), "ticks": []},
                "timings": {"bag": job.bag, "wall_s": 0.0, "ticks": []}}
    result, timings = replay.run()
    if job.output_bag:
        from alpamayo_ros.tools.replay_outputs import write_plan_bag
        try:
            write_plan_bag(job.output_bag, replay.results, job.values, job.output_storage)
            result["output_bag"] = Path(job.output_bag).name
        except (AlpamayoError, OSError) as exc:
            result["status"] = "error"
            result["error"] = (result["error"] + "; " if result["error"] else "") + \
                f"cannot write output bag: {exc}"
    if job.plot:
        from alpamayo_ros.tools.replay_outputs import plot_bag
        plot_bag(job.plot, result, replay.results,
                 odometry_paths=[np.asarray(e.odo_xyz, dtype=np.float64).reshape(-1, 3)
                                 for e in replay.epochs])
    return {"result": result, "timings": timings}


# --------------------------------------------------------------------------------------
# Several bags
# --------------------------------------------------------------------------------------


def run_jobs(jobs: Sequence[BagJob], n_workers: int = 1, progress: bool = False) -> list[dict]:
    """Run bag jobs in order (n_workers == 1) or in spawned worker processes.

    Results come back in the order of `jobs`, whatever order the workers finish in.
    """
    if n_workers <= 1 or len(jobs) <= 1:
        return [run_bag_job(j) for j in jobs]
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")  # no fork: torch/rclpy threads are not fork-safe
    with ctx.Pool(processes=min(n_workers, len(jobs))) as pool:
        results = pool.imap(run_bag_job, jobs)  # imap keeps the input order
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(jobs), unit="bag", disable=None)
        return list(results)


def hardware_fingerprint(values: Mapping[str, Any]) -> dict:
    """What the latency numbers depend on; `fingerprint` hashes the rest."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = ""
    if str(values.get("model.device", "cpu")).startswith("cuda") and "torch" in sys.modules:
        torch = sys.modules["torch"]
        try:
            if torch.cuda.is_available():
                gpu = torch.cuda.get_device_name(0)
        except Exception:  # no driver: report no GPU
            gpu = ""
    info = {"machine": platform.machine(), "cpu": cpu, "cpu_count": os.cpu_count() or 0,
            "gpu": gpu, "device": str(values.get("model.device", "")),
            "dtype": str(values.get("model.dtype", "")),
            "backend": str(values.get("model.backend", ""))}
    info["fingerprint"] = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]
    return info


def build_report(values: Mapping[str, Any], options: ReplayOptions,
                 outcomes: Sequence[Mapping]) -> dict:
    """Whole report: deterministic sections plus the separate `timings` section."""
    bags = [o["result"] for o in outcomes]
    all_ticks = [t for b in bags for t in b.get("ticks", [])]
    opts = asdict(options)
    opts.pop("progress")
    return {
        "format": REPORT_FORMAT,
        "parameters": {k: values[k] for k in sorted(values)},
        "replay_options": opts,
        "bags": bags,
        "aggregate": {"bags": len(bags),
                      "bags_with_errors": sum(1 for b in bags if b["status"] != "ok"),
                      "ticks": len(all_ticks),
                      "ok_ticks": sum(1 for t in all_ticks if t["status"] == "OK"),
                      "metrics": aggregate_metrics(all_ticks, options.horizons)},
        "timings": {"hardware": hardware_fingerprint(values),
                    "bags": [o["timings"] for o in outcomes]},
    }


def report_json(report: Mapping) -> str:
    """Canonical JSON text (sorted keys, no NaN) so equal reports are equal bytes."""
    return json.dumps(report, sort_keys=True, indent=1, allow_nan=False) + "\n"


def without_timings(report: Mapping) -> dict:
    """The deterministic part of a report (what determinism checks compare)."""
    return {k: v for k, v in report.items() if k != "timings"}


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alpamayo-replay",
        description="Replay rosbag2 bags through the Alpamayo planner core in stepped bag "
                    "time; write a report (JSON, CSV, PNG) and an output bag, optionally "
                    "compare against a previous report.")
    p.add_argument("bags", nargs="+", type=Path, help="rosbag2 directories (mcap or sqlite3)")
    p.add_argument("--params", type=Path, required=True,
                   help="node parameter file (config/planner.yaml format)")
    p.add_argument("-o", "--output-dir", type=Path, required=True)
    p.add_argument("--node-name", default=NODE_NAME, help="section of the parameter file")
    p.add_argument("--namespace", default="/", help="resolves relative topic names")
    p.add_argument("--seed", type=int, help="override model.seed")
    p.add_argument("--rate", type=float, help="override rate_hz [Hz]")
    p.add_argument("--backend", choices=("alpamayo", "constant_velocity"),
                   help="override model.backend")
    p.add_argument("--checkpoint", help="override model.checkpoint_dir")
    p.add_argument("--device", help="override model.device (cpu, cuda, cuda:N)")
    p.add_argument("--dtype", help="override model.dtype")
    p.add_argument("--max-delay", type=float, default=ReplayOptions.max_delay_s,
                   help="bound on receive time - header stamp a tick waits for [s]")
    p.add_argument("--max-forward-jump", type=float, default=ReplayOptions.max_forward_jump_s,
                   help="forward stamp jump that starts a new epoch [s]")
    p.add_argument("--jobs", type=int, default=1, help="bags replayed in parallel processes")
    p.add_argument("--storage", default="mcap", choices=bag_io.STORAGE_IDS,
                   help="storage of the output bags")
    p.add_argument("--no-bag", action="store_true", help="do not write output bags")
    p.add_argument("--no-plot", action="store_true", help="do not write PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from alpamayo_ros.tools.regression import add_arguments as add_regression_arguments
    add_regression_arguments(p)
    return p


def overrides_from_args(args: argparse.Namespace) -> dict:
    out: dict[str, Any] = {}
    for attr, name in (("seed", "model.seed"), ("rate", "rate_hz"), ("backend", "model.backend"),
                       ("checkpoint", "model.checkpoint_dir"), ("device", "model.device"),
                       ("dtype", "model.dtype")):
        value = getattr(args, attr)
        if value is not None:
            out[name] = value
    return out


def make_jobs(bags: Sequence[Path], values: dict, options: ReplayOptions, output_dir: Path,
              write_bag: bool = True, write_plot: bool = True, storage: str = "mcap"
              ) -> list[BagJob]:
    jobs = []
    for i, bag in enumerate(bags):
        stem = f"{i:02d}_{Path(bag).name}"
        jobs.append(BagJob(
            bag=str(bag), values=values, options=options,
            output_bag=str(output_dir / f"{stem}_plan") if write_bag else None,
            output_storage=storage,
            plot=str(output_dir / f"{stem}.png") if write_plot else None))
    return jobs


Runner = Callable[[Sequence[BagJob], argparse.Namespace], list]


def _local_runner(jobs: Sequence[BagJob], args: argparse.Namespace) -> list:
    return run_jobs(jobs, args.jobs, progress=not args.quiet)


def run_cli(args: argparse.Namespace, runner: Runner = _local_runner) -> int:
    """The replay command after argument parsing; `runner` executes the bag jobs
    (local processes here, Ray tasks in tools/ray_replay.py)."""
    try:
        values = resolve_parameters(read_parameter_file(args.params, args.node_name),
                                    overrides_from_args(args))
        options = ReplayOptions(max_delay_s=args.max_delay,
                                max_forward_jump_s=args.max_forward_jump,
                                namespace=args.namespace,
                                progress=not args.quiet and args.jobs <= 1)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        jobs = make_jobs(args.bags, values, options, args.output_dir, not args.no_bag,
                         not args.no_plot, args.storage)
        outcomes = runner(jobs, args)
    except (AlpamayoError, OSError) as exc:
        print(f"alpamayo-replay: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    report = build_report(values, options, outcomes)
    from alpamayo_ros.tools.replay_outputs import write_csv, write_summary_plot
    (args.output_dir / "report.json").write_text(report_json(report))
    write_csv(args.output_dir / "ticks.csv", report)
    if not args.no_plot:
        write_summary_plot(args.output_dir / "summary.png", report)
    _print_summary(report, args.output_dir)
    code = EXIT_OK
    if report["aggregate"]["bags_with_errors"]:
        for bag in report["bags"]:
            if bag["status"] != "ok":
                print(f"alpamayo-replay: error: {bag['bag']}: {bag['error']}", file=sys.stderr)
        code = EXIT_ERROR
    if args.golden is not None:
        from alpamayo_ros.tools.regression import run_from_args
        code = max(code, run_from_args(args, report))
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(build_arg_parser().parse_args(argv))


def _print_summary(report: Mapping, output_dir: Path) -> None:
    agg = report["aggregate"]
    print(f"replayed {agg['bags']} bag(s): {agg['ticks']} ticks, {agg['ok_ticks']} planned")
    for key, m in agg["metrics"].items():
        if m["count"]:
            print(f"  {key:>4} s: minADE {m['mean_min_ade']:.3f} m, minFDE "
                  f"{m['mean_min_fde']:.3f} m over {m['count']} ticks")
    print(f"report: {output_dir / 'report.json'}")


if __name__ == "__main__":
    sys.exit(main())
