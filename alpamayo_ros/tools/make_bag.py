"""Write a synthetic scenario to a rosbag2 bag: 4 rendered cameras + 50 Hz odometry.

Executable ``make_scenario_bag`` (``python -m alpamayo_ros.tools.make_bag``). The cameras
are rendered by sim/scenario.py at their own rates and phases and stored as raw
sensor_msgs/Image (rgb8 / bgr8 / bgra8) or JPEG sensor_msgs/CompressedImage; odometry is
nav_msgs/Odometry of the rear-axle base frame (frame ``odom``, child ``base_link``).

Each message's bag log time is its header stamp plus a configurable receive latency
(default 0: an ideal recorder). ``--write-params`` also writes a planner parameter file
whose topics and transports match the bag, ready for ``alpamayo-replay``.

Faults for robustness tests (``BagFaults``): dropped topics, gaps with no messages, a
jump of every stamp after some time (as when a bag loops or a simulator resets).
"""
from __future__ import annotations

import argparse
import heapq
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from alpamayo_ros.core import config
from alpamayo_ros.core.config import CAMERA_NAMES_BY_INDEX
from alpamayo_ros.core.errors import AlpamayoError, ConfigError
from alpamayo_ros.core.navigation import NAVIGATION_TOPIC
from alpamayo_ros.bag import bag_io
from alpamayo_ros.sim.scenario import (PRESETS, SUPPORTED_ENCODINGS, Scenario, default_cameras,
                                         make_preset)
from alpamayo_ros.core.types import NS_PER_S

DEFAULT_ODOMETRY_TOPIC = "/" + config.DEFAULT_ODOMETRY_TOPIC
CLOCK_TOPIC = "/clock"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"


def camera_topic(index: int, encoding: str) -> str:
    """Default topic of a camera: /cameras/<rig name>/image[/compressed]."""
    base = "/" + config.camera_topic(index)
    return base + "/compressed" if encoding == "jpeg" else base


def camera_frame_id(index: int) -> str:
    return f"camera_{CAMERA_NAMES_BY_INDEX[index]}"


@dataclass(frozen=True)
class BagFaults:
    """Faults written into a bag on purpose.

    drop_topics: topics left out entirely.
    gaps: (topic or "*", t_start [s], t_end [s]) windows with no messages of that topic.
    time_jump: (t_at [s], offset [s]): every message with scenario time >= t_at gets its
        header stamp shifted by offset (negative = backwards, like a simulator reset); the
        log time keeps running, as a recorder's clock would.
    wrong_type_topic: a topic that is written with std_msgs/String instead of its type.
    position_jump: (t_at [s], (dx, dy, dz) [m]): odometry positions from t_at on are
        offset (a localisation re-initialisation); the cameras are unchanged.
    odometry_frame_ids: frame_ids the odometry header cycles through, one per message
        (two localisations publishing into one topic); () = the scenario's frame.
    odometry_frame_window: (t_start [s], t_end [s], frame_id): odometry stamped in
        [t_start, t_end) has this frame_id instead (a second localisation for a while).
    """

    drop_topics: Sequence[str] = ()
    gaps: Sequence[tuple[str, float, float]] = ()
    time_jump: Optional[tuple[float, float]] = None
    wrong_type_topic: Optional[str] = None
    position_jump: Optional[tuple[float, tuple]] = None
    odometry_frame_ids: Sequence[str] = ()
    odometry_frame_window: Optional[tuple[float, float, str]] = None


@dataclass(frozen=True)
class BagLayout:
    """Topics and timing of a scenario bag (latencies in seconds, log = stamp + latency)."""

    odometry_topic: str = DEFAULT_ODOMETRY_TOPIC
    odometry_rate_hz: float = 50.0
    camera_topics: dict = field(default_factory=dict)   # camera index -> topic; {} = defaults
    camera_latency_s: float = 0.0
    odometry_latency_s: float = 0.0
    jpeg_quality: int = 90
    # A recorded /clock (rosgraph_msgs/Clock) at this rate [Hz], 0 = none, as carla-ros-bridge
    # bags have; its values are the scenario time rounded the way a float-seconds clock
    # is, off by up to clock_rounding_ns.
    clock_hz: float = 0.0
    clock_rounding_ns: int = 0
    # Navigation instructions (alpamayo_ros/NavigationInstruction on navigation_topic):
    # (scenario time [s], valid for [s], text) each, stamped at that time, logged then.
    navigation: tuple = ()
    navigation_topic: str = "/" + NAVIGATION_TOPIC

    def topic_of(self, index: int, encoding: str) -> str:
        return self.camera_topics.get(index) or camera_topic(index, encoding)


@dataclass(frozen=True)
class BagSummary:
    path: Path
    storage: str
    message_counts: dict
    camera_topics: dict        # camera index -> topic
    camera_transports: dict    # camera index -> "raw" | "compressed"
    odometry_topic: str
    start_stamp_ns: int
    end_stamp_ns: int


def _in_gap(topic: str, t: float, faults: BagFaults) -> bool:
    return any((g_topic in ("*", topic)) and g0 <= t < g1 for g_topic, g0, g1 in faults.gaps)


def write_scenario_bag(path: Path | str, scenario: Scenario, storage: str = "mcap",
                       layout: BagLayout = BagLayout(), faults: BagFaults = BagFaults()
                       ) -> BagSummary:
    """Render `scenario` into a new rosbag2 directory at `path`; returns what was written."""
    path = Path(path)
    jump_t, jump_ns = (None, 0) if faults.time_jump is None else (
        faults.time_jump[0], int(round(faults.time_jump[1] * NS_PER_S)))

    # One event stream per source, merged by log time so the bag is written in order.
    streams = []
    odo = scenario.odometry_samples(0.0, scenario.duration_s, layout.odometry_rate_hz)
    lat_odo = int(round(layout.odometry_latency_s * NS_PER_S))
    streams.append([(int(s) + lat_odo, 0, "odom", i) for i, s in enumerate(odo.stamp_ns)])
    cam_topics, cam_transports = {}, {}
    for order, spec in enumerate(scenario.cameras, start=1):
        topic = layout.topic_of(spec.index, spec.encoding)
        cam_topics[spec.index] = topic
        cam_transports[spec.index] = "compressed" if spec.encoding == "jpeg" else "raw"
        times = scenario.camera_stamps(spec.index)
        stamps = scenario.stamp_ns(times)
        lat = int(round(layout.camera_latency_s * NS_PER_S))
        streams.append([(int(s) + lat, order, ("cam", spec.index), float(t))
                        for s, t in zip(stamps, times)])

    if layout.clock_hz > 0:
        count = int(scenario.duration_s * layout.clock_hz) + 1
        streams.append([(int(scenario.stamp_ns(k / layout.clock_hz)), len(streams) + 1,
                         "clock", k) for k in range(count)])

    if layout.navigation:
        streams.append(sorted((int(scenario.stamp_ns(t)), len(streams) + 1, "nav", k)
                              for k, (t, _, _) in enumerate(layout.navigation)))

    counts: dict[str, int] = {}
    first = last = None
    with bag_io.BagWriter(path, storage) as writer:
        for log_ns, _, kind, item in heapq.merge(*streams):
            if kind == "clock":
                value = log_ns - (item % 2) * layout.clock_rounding_ns
                writer.write(CLOCK_TOPIC, CLOCK_TYPE, log_ns, bag_io.msg_class(CLOCK_TYPE)(
                    clock=bag_io.ns_to_stamp(value)))
                counts[CLOCK_TOPIC] = counts.get(CLOCK_TOPIC, 0) + 1
                continue
            if kind == "nav":
                _, valid_for_s, text = layout.navigation[item]
                topic = layout.navigation_topic
                writer.write(topic, bag_io.NAVIGATION_TYPE, log_ns, bag_io.navigation_message(
                    log_ns, text, int(round(valid_for_s * NS_PER_S)), "make_scenario_bag"))
                counts[topic] = counts.get(topic, 0) + 1
                continue
            if kind == "odom":
                t, topic = float(odo.t[item]), layout.odometry_topic
            else:
                t, topic = item, cam_topics[kind[1]]
            if topic in faults.drop_topics or _in_gap(topic, t, faults):
                continue
            shift = jump_ns if (jump_t is not None and t >= jump_t) else 0
            stamp_ns = int(scenario.stamp_ns(t)) + shift
            if topic == faults.wrong_type_topic:
                msgtype = "std_msgs/msg/String"
                msg = bag_io.msg_class(msgtype)(data=f"not a sensor message at {t:.3f} s")
            elif kind == "odom":
                msgtype = bag_io.ODOMETRY_TYPE
                xyz = np.asarray(odo.xyz[item], dtype=np.float64)
                if faults.position_jump is not None and t >= faults.position_jump[0]:
                    xyz = xyz + np.asarray(faults.position_jump[1], dtype=np.float64)
                frame = (faults.odometry_frame_ids[item % len(faults.odometry_frame_ids)]
                         if faults.odometry_frame_ids else scenario.odom_frame)
                window = faults.odometry_frame_window
                if window is not None and window[0] <= t < window[1]:
                    frame = window[2]
                msg = bag_io.odometry_message(
                    stamp_ns, frame, scenario.base_frame, xyz, odo.quat_xyzw[item],
                    odo.linear_velocity[item], odo.angular_velocity[item])
            else:
                spec = scenario.camera(kind[1])
                msgtype, msg = bag_io.image_message(
                    scenario.render_camera(spec.index, t), stamp_ns, camera_frame_id(spec.index),
                    spec.encoding, layout.jpeg_quality)
            # The recorder's clock keeps running: only the header stamps jump.
            writer.write(topic, msgtype, log_ns, msg)
            counts[topic] = counts.get(topic, 0) + 1
            first = stamp_ns if first is None else min(first, stamp_ns)
            last = stamp_ns if last is None else max(last, stamp_ns)
    if first is None:
        raise ConfigError(f"{path}: every message was dropped by the faults; nothing written")
    return BagSummary(path=path, storage=storage, message_counts=counts,
                      camera_topics=cam_topics, camera_transports=cam_transports,
                      odometry_topic=layout.odometry_topic, start_stamp_ns=first,
                      end_stamp_ns=last)


def planner_parameters_for(summary: BagSummary, backend: str = "constant_velocity",
                           rate_hz: float = 2.0, extra: Optional[dict] = None) -> dict:
    """Nested planner parameter file content matching a written bag.

    Returns {"alpamayo_planner": {"ros__parameters": {...}}} (config/planner.yaml layout);
    `extra` entries (flat dotted names, e.g. "model.checkpoint_dir") override.
    """
    indices = sorted(summary.camera_topics)
    flat = {
        "rate_hz": float(rate_hz),
        "camera_topics": [summary.camera_topics[i] for i in indices],
        "camera_indices": indices,
        "camera_transports": [summary.camera_transports[i] for i in indices],
        "odometry_topic": summary.odometry_topic,
        "model.backend": backend,
        "model.device": "cpu",
    }
    flat.update(extra or {})
    nested: dict = {}
    for name, value in flat.items():
        node = nested
        *groups, leaf = name.split(".")
        for g in groups:
            node = node.setdefault(g, {})
        node[leaf] = value
    return {"alpamayo_planner": {"ros__parameters": nested}}


def write_parameter_file(path: Path | str, params: dict) -> None:
    import yaml
    Path(path).write_text(yaml.safe_dump(params, sort_keys=False))


def _parse_gap(text: str) -> tuple[str, float, float]:
    try:
        topic, t0, t1 = text.rsplit(":", 2)
        return topic, float(t0), float(t1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"gap must be TOPIC:T_START:T_END (or *:...), have {text!r}")


def _parse_navigation(text: str) -> tuple[float, float, str]:
    try:
        t, valid_for, instruction = text.split(":", 2)
        return float(t), float(valid_for), instruction
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"navigation must be T:VALID_FOR:TEXT (seconds, seconds, text), have {text!r}")


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="make_scenario_bag",
        description="Write a synthetic driving scenario (4 rendered cameras + odometry) "
                    "to a rosbag2 bag.")
    p.add_argument("output", type=Path, help="output bag directory (must not exist)")
    p.add_argument("--preset", default="curved_drive", choices=sorted(PRESETS))
    p.add_argument("--duration", type=float, default=10.0, help="scenario length [s]")
    p.add_argument("--storage", default="mcap", choices=bag_io.STORAGE_IDS)
    p.add_argument("--camera-rate", type=float, default=10.0, help="camera rate [Hz]")
    p.add_argument("--camera-phases", type=float, nargs=4, default=(0.0, 0.0, 0.0, 0.0),
                   metavar="S", help="first-frame offset of each camera [s]")
    p.add_argument("--width", type=int, default=576)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--encoding", default="rgb8", choices=SUPPORTED_ENCODINGS)
    p.add_argument("--odometry-rate", type=float, default=50.0, help="odometry rate [Hz]")
    p.add_argument("--odometry-topic", default=DEFAULT_ODOMETRY_TOPIC)
    p.add_argument("--camera-latency", type=float, default=0.0,
                   help="log time - header stamp of camera messages [s]")
    p.add_argument("--start-stamp", type=int, default=None,
                   help="header stamp of scenario time 0 [ns]")
    p.add_argument("--nav", action="append", type=_parse_navigation, default=[],
                   metavar="T:VALID_FOR:TEXT",
                   help="a navigation instruction on /alpamayo/navigation at scenario time T "
                        "[s], valid for VALID_FOR [s] (repeatable)")
    p.add_argument("--drop-topic", action="append", default=[], help="fault: omit a topic")
    p.add_argument("--gap", action="append", type=_parse_gap, default=[],
                   help="fault: TOPIC:T_START:T_END window without messages ('*' = all)")
    p.add_argument("--time-jump", type=float, nargs=2, metavar=("T_AT", "OFFSET"),
                   help="fault: shift stamps from T_AT [s] on by OFFSET [s]")
    p.add_argument("--write-params", type=Path, default=None,
                   help="also write a planner parameter file matching the bag")
    p.add_argument("--backend", default="constant_velocity",
                   choices=("alpamayo", "constant_velocity"),
                   help="model.backend written by --write-params")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_arg_parser().parse_args(argv)
    try:
        extra = {} if args.start_stamp is None else {"start_stamp_ns": args.start_stamp}
        scenario = make_preset(
            args.preset, duration_s=args.duration,
            cameras=default_cameras(args.camera_rate, args.width, args.height, args.encoding,
                                    args.camera_phases), **extra)
        layout = BagLayout(odometry_topic=args.odometry_topic,
                           odometry_rate_hz=args.odometry_rate,
                           camera_latency_s=args.camera_latency,
                           navigation=tuple(args.nav))
        faults = BagFaults(drop_topics=tuple(args.drop_topic), gaps=tuple(args.gap),
                           time_jump=None if args.time_jump is None else tuple(args.time_jump))
        summary = write_scenario_bag(args.output, scenario, args.storage, layout, faults)
        if args.write_params:
            write_parameter_file(args.write_params,
                                 planner_parameters_for(summary, backend=args.backend))
    except AlpamayoError as exc:
        print(f"make_scenario_bag: error: {exc}", file=sys.stderr)
        return 2
    total = sum(summary.message_counts.values())
    print(f"wrote {summary.path} ({summary.storage}, {total} messages, "
          f"{(summary.end_stamp_ns - summary.start_stamp_ns) / NS_PER_S:.2f} s)")
    for topic, n in sorted(summary.message_counts.items()):
        print(f"  {topic}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
