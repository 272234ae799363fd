"""The `bag_player` node: plays a rosbag2 bag onto ROS topics with /clock, and records.

Live counterpart of the stepped replay (tools/replay.py), for testing the launched planner
node with ``use_sim_time:=true`` (see docs/replay.md). No rosbag2 install is needed: the
bag is read with `rosbags` and the stored CDR bytes are published as they are
(``Publisher.publish(bytes)``), so nothing is deserialised on the way.

Timing: messages go out at their recorded **log times**, scaled by ``rate`` (2.0 = twice as
fast). /clock carries the bag's log time: it is published before every message and at
``clock_hz`` while waiting, so sim time never runs behind the data. A /clock recorded in
the bag (carla-ros-bridge bags have one) is then not played, so there is only one clock
(said once in the log); ``use_bag_clock:=true`` plays the recorded /clock instead and
generates none. ``loop`` restarts the bag; /clock then jumps back to the bag start (the
planner node clears its buffers on that jump). The publishers exist from the start;
``wait_for_subscribers`` (N > 0) holds the first message until every played topic has N
matched subscriptions (at most ``wait_for_subscribers_timeout`` s), and ``start_delay``
waits a fixed time after that.

Exit status: 0 after playback (or a signal), 2 for bad parameters or when playback failed
(a missing or damaged data file, unreadable metadata; the reason is logged).

Recorder: with ``record_path`` set, the topics in ``record_topics`` (default: the planner's
outputs) are subscribed as soon as they appear and written, as received (raw CDR), to a
rosbag2 bag (metadata version 8); each message's log time is the bag clock (sim time) at
reception. The bag is closed when the node exits.

Parameters: bag (required), rate, loop, clock_hz, publish_clock, use_bag_clock, topics
(empty = all),
wait_for_subscribers, wait_for_subscribers_timeout, start_delay, exit_when_done, linger
(seconds to keep recording after the end), record_path, record_topics, record_storage.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
from rosgraph_msgs.msg import Clock as ClockMsg

from alpamayo_ros.core.types import NS_PER_S
from alpamayo_ros.ros.convert import message_class
from alpamayo_ros.ros.qos import CLOCK_QOS
from alpamayo_ros.ros.shutdown import GatedCallbacks, ShutdownSignals
from alpamayo_ros.ros.spin import spin_until_shutdown
from alpamayo_ros.core.outputs import OUTPUTS
from alpamayo_ros.bag import bag_io

NODE_NAME = "bag_player"
# The planner's outputs that are always on (core.outputs.OUTPUTS) and /diagnostics.
DEFAULT_RECORD_TOPICS = ["/" + row.topic for row in OUTPUTS if row.enabled_by is None] + \
    ["/diagnostics"]
# Played topics: reliable keep-last, which matches both reliable and best-effort readers.
PLAYBACK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                          reliability=ReliabilityPolicy.RELIABLE)
RECORD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                        reliability=ReliabilityPolicy.RELIABLE)


class BagRecorder:
    """Writes raw messages of subscribed topics to a bag; thread-safe."""

    def __init__(self, path: Path, storage: str) -> None:
        self._writer: Optional[bag_io.BagWriter] = bag_io.BagWriter(path, storage).__enter__()
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def write(self, topic: str, msgtype: str, log_time_ns: int, raw: bytes) -> None:
        with self._lock:
            if self._writer is None:
                return  # closed: late callbacks during shutdown are dropped
            self._writer.write_raw(topic, msgtype, log_time_ns, raw)
            self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.__exit__(None, None, None)
                self._writer = None


class BagPlayerNode(GatedCallbacks, Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        p = self._declare
        self.bag = Path(p("bag", ""))
        self.rate = float(p("rate", 1.0))
        self.loop = bool(p("loop", False))
        self.clock_hz = float(p("clock_hz", 100.0))
        self.publish_clock = bool(p("publish_clock", True))
        self.use_bag_clock = bool(p("use_bag_clock", False))
        self.topics = [t for t in p("topics", [""]) if t]
        self.start_delay = float(p("start_delay", 0.0))
        self.wait_for_subscribers = int(p("wait_for_subscribers", 0))
        self.wait_for_subscribers_timeout = float(p("wait_for_subscribers_timeout", 10.0))
        self.exit_when_done = bool(p("exit_when_done", True))
        self.linger = float(p("linger", 2.0))
        record_path = str(p("record_path", ""))
        self.record_topics = [t for t in p("record_topics", DEFAULT_RECORD_TOPICS) if t]
        record_storage = str(p("record_storage", "mcap"))
        if not str(self.bag) or not self.bag.exists():
            raise ValueError(f"parameter bag: have {str(self.bag)!r}, need an existing "
                             "rosbag2 directory")
        if not self.rate > 0:
            raise ValueError(f"parameter rate: have {self.rate}, need > 0")
        if not self.clock_hz > 0:
            raise ValueError(f"parameter clock_hz: have {self.clock_hz}, need > 0")
        own_clock = self.publish_clock and not self.use_bag_clock
        self._clock_pub = (self.create_publisher(ClockMsg, "/clock", CLOCK_QOS)
                           if own_clock else None)
        # A recorded /clock is not played while the player generates its own.
        self._skipped_topics = {"/clock"} if own_clock else set()
        self._said_dropped = False
        self._playback_pubs: dict[str, Any] = {}
        self._bag_time_ns: Optional[int] = None
        self.done = threading.Event()
        # Why playback failed (an unreadable or damaged bag); "" = it did not.
        self.failure = ""
        self.finished_loops = 0
        self.published = 0
        self.recorder = BagRecorder(Path(record_path), record_storage) if record_path else None
        self._recorded_subs: dict[str, Any] = {}
        if self.recorder is not None:
            self.create_timer(0.2, self._discover_record_topics)
        self._thread = threading.Thread(target=self._play, name="bag_player", daemon=True)

    def _declare(self, name: str, default: Any) -> Any:
        return self.declare_parameter(name, default).value

    def start(self) -> None:
        self._thread.start()

    # ---- recording -----------------------------------------------------------------
    def _discover_record_topics(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic in self.record_topics and topic not in self._recorded_subs and types:
                msgtype = types[0]
                try:
                    cls = message_class(msgtype)
                except (ImportError, AttributeError) as exc:
                    self.get_logger().error(f"cannot record {topic} ({msgtype}): {exc}")
                    self._recorded_subs[topic] = None
                    continue
                self._recorded_subs[topic] = self.create_subscription(
                    cls, topic, lambda raw, t=topic, m=msgtype: self._on_record(t, m, raw),
                    RECORD_QOS, raw=True)
                self.get_logger().info(f"recording {topic} ({msgtype})")

    def _on_record(self, topic: str, msgtype: str, raw: bytes) -> None:
        stamp = self._bag_time_ns if self._bag_time_ns is not None else time.time_ns()
        self.recorder.write(topic, msgtype, stamp, raw)

    # ---- playback ------------------------------------------------------------------
    def _publisher(self, topic: str, msgtype: str):
        pub = self._playback_pubs.get(topic)
        if pub is None:
            pub = self.create_publisher(message_class(msgtype), topic, PLAYBACK_QOS)
            self._playback_pubs[topic] = pub
        return pub

    def _set_clock(self, bag_ns: int) -> None:
        self._bag_time_ns = bag_ns
        if self._clock_pub is not None:
            sec, nanosec = divmod(int(bag_ns), NS_PER_S)
            msg = ClockMsg()
            msg.clock.sec, msg.clock.nanosec = sec, nanosec
            self._clock_pub.publish(msg)

    def _wait_until(self, bag_ns: int, bag_start: int, wall_start: float) -> bool:
        """Sleep until the wall time of bag_ns, publishing /clock; False on shutdown."""
        period = 1.0 / self.clock_hz
        while rclpy.ok(context=self.context):
            target = wall_start + (bag_ns - bag_start) / NS_PER_S / self.rate
            now = time.monotonic()
            if now >= target:
                return True
            time.sleep(min(period, target - now))
            elapsed_bag = int((time.monotonic() - wall_start) * self.rate * NS_PER_S)
            self._set_clock(min(bag_start + elapsed_bag, bag_ns))
        return False

    def _played_connections(self, reader: bag_io.BagReader) -> list:
        """The bag's connections that are played (selected topics, minus a recorded /clock
        while the player publishes its own)."""
        conns = reader.connections(self.topics or None)
        dropped = sorted({c.topic for c in conns} & self._skipped_topics)
        if dropped and not self._said_dropped:
            self._said_dropped = True
            self.get_logger().info(
                f"the bag has a recorded {', '.join(dropped)}: not played, the player "
                "publishes /clock from the log times (use_bag_clock:=true plays the "
                "recorded clock instead)")
        return [c for c in conns if c.topic not in self._skipped_topics]

    def _create_publishers(self) -> None:
        """Publishers for the played topics, created before any delay so that subscribers
        can match while the player waits (messages sent before a match are lost)."""
        with bag_io.BagReader(self.bag) as reader:
            for conn in self._played_connections(reader):
                self._publisher(conn.topic, conn.msgtype)

    def _wait_for_subscribers(self) -> None:
        """Block until every played topic has wait_for_subscribers matched subscriptions
        (or wait_for_subscribers_timeout passes; then play anyway, with a warning)."""
        deadline = time.monotonic() + self.wait_for_subscribers_timeout
        while rclpy.ok(context=self.context):
            short = {t: p.get_subscription_count() for t, p in self._playback_pubs.items()
                     if p.get_subscription_count() < self.wait_for_subscribers}
            if not short:
                return
            if time.monotonic() > deadline:
                self.get_logger().warn(f"playing although subscribers are missing: {short} "
                                       f"(need {self.wait_for_subscribers} each)")
                return
            time.sleep(0.05)

    def _play(self) -> None:
        try:
            self._create_publishers()
            if self.wait_for_subscribers > 0:
                self._wait_for_subscribers()
            if self.start_delay > 0:
                time.sleep(self.start_delay)
            while rclpy.ok(context=self.context):
                if not self._play_once():
                    return
                self.finished_loops += 1
                if not self.loop:
                    break
                self.get_logger().info("bag finished: looping (/clock jumps back)")
            self.get_logger().info(f"playback done: {self.published} messages")
            deadline = time.monotonic() + self.linger
            while time.monotonic() < deadline and rclpy.ok(context=self.context):
                time.sleep(0.05)
        except Exception as exc:  # bag errors: log, then end with exit status 2
            if rclpy.ok(context=self.context):  # else a publish raced the shutdown
                self.failure = str(exc)
                self.get_logger().error(f"playback failed: {exc}")
        finally:
            self.done.set()

    def _play_once(self) -> bool:
        with bag_io.BagReader(self.bag) as reader:
            conns = self._played_connections(reader)
            missing = sorted(set(self.topics) - {c.topic for c in conns} - self._skipped_topics)
            if missing:
                self.get_logger().warn(f"topics not in the bag: {missing}")
            for conn in conns:
                self._publisher(conn.topic, conn.msgtype)
            bag_start = reader.start_time_ns
            wall_start = time.monotonic()
            self._set_clock(bag_start)
            for conn, log_ns, raw in reader.raw_messages([c.topic for c in conns]):
                if not self._wait_until(log_ns, bag_start, wall_start):
                    return False
                self._set_clock(log_ns)
                self._playback_pubs[conn.topic].publish(bytes(raw))
                self.published += 1
        return True


def main(argv: Optional[list] = None) -> int:
    # SIGINT/SIGTERM shut down through rclpy and never raise KeyboardInterrupt in this
    # thread's wait loop (ros/shutdown.py); the recorder is closed either way.
    signals = ShutdownSignals()
    signals.install()
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    try:
        try:
            node = BagPlayerNode()
        except ValueError as exc:
            print(f"bag_player: error: {exc}", file=sys.stderr)
            return 2
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        node.start()
        spin_thread = threading.Thread(target=spin_until_shutdown, args=(executor,),
                                       daemon=True)
        spin_thread.start()
        while rclpy.ok() and not (node.done.is_set() and node.exit_when_done):
            node.done.wait(0.1)
        if node.recorder is not None:
            node.recorder.close()
            counts = ", ".join(f"{t}: {n}" for t, n in sorted(node.recorder.counts.items()))
            node.get_logger().info(f"recorded {counts or 'nothing'}")
        if rclpy.ok():
            rclpy.shutdown()
        spin_thread.join(timeout=5.0)
        executor.shutdown()
    finally:
        if node is not None:
            if node.recorder is not None:
                node.recorder.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        signals.ignore_from_now()
    return 2 if node is not None and node.failure else 0


if __name__ == "__main__":
    sys.exit(main())
