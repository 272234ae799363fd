"""TopicRecorder: the closed-loop simulator's bag (rclpy messages and raw topics -> rosbag2).

Writes through the bag player's BagRecorder (rosbags, metadata version 8). Message types
outside the Kilted typestore and alpamayo_ros (e.g. carla_msgs) are registered from their
installed definitions, share/<package>/msg/<Name>.msg under the ament prefixes or this
interpreter's prefix, so the bag carries their schema.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.serialization import serialize_message

from alpamayo_ros.testbed.bag_player_node import RECORD_QOS, BagRecorder, message_class
from alpamayo_ros.bag import bag_io


def register_interface_type(msgtype: str) -> None:
    """Make `msgtype` ("pkg/msg/Name") known to bag_io's typestore (no-op when known).

    Raises bag_io.BagError when its .msg definition is not installed anywhere we look."""
    store = bag_io.typestore()
    if msgtype in store.types:
        return
    package, _, name = msgtype.split("/")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    for prefix in prefixes:
        path = Path(prefix) / "share" / package / "msg" / f"{name}.msg"
        if path.is_file():
            from rosbags.typesys import get_types_from_msg
            text = path.read_text()
            # Nested types of the same kind first (e.g. CarlaActorList's CarlaActorInfo).
            for pkg, nested in re.findall(r"^\s*([A-Za-z]\w*)/(\w+)(?:\[[^\]]*\])?\s",
                                          text, flags=re.MULTILINE):
                register_interface_type(f"{pkg}/msg/{nested}")
            store.register(get_types_from_msg(text, msgtype))
            return
    raise bag_io.BagError(f"no definition of {msgtype} found (looked for share/{package}/msg/"
                          f"{name}.msg under {prefixes})")


def msgtype_of(msg: Any) -> str:
    """'pkg/msg/Name' of an rclpy message instance."""
    module = type(msg).__module__.split(".")[0]
    return f"{module}/msg/{type(msg).__name__}"


class TopicRecorder:
    """Records messages handed to it and, once they appear, the topics in `follow`."""

    def __init__(self, node: Node, path: Path, storage: str, follow: Iterable[str],
                 clock_ns: Callable[[], int]) -> None:
        self._node = node
        self._bag = BagRecorder(Path(path), storage)
        self._clock_ns = clock_ns
        self._follow = [t for t in follow if t]
        self._subs: dict[str, Any] = {}
        self._last_discovery = 0.0

    def write(self, topic: str, msg: Any, log_time_ns: int) -> None:
        msgtype = msgtype_of(msg)
        register_interface_type(msgtype)
        self._bag.write(topic, msgtype, int(log_time_ns), serialize_message(msg))

    def discover(self) -> None:
        """Subscribe (raw) to followed topics that have a publisher in the graph."""
        for topic, types in self._node.get_topic_names_and_types():
            if (topic in self._follow and topic not in self._subs and types
                    and self._node.count_publishers(topic) > 0):
                msgtype = types[0]
                try:
                    register_interface_type(msgtype)
                    cls = message_class(msgtype)
                except Exception as exc:  # not installed: say so once, keep recording others
                    self._node.get_logger().error(f"cannot record {topic} ({msgtype}): {exc}")
                    self._subs[topic] = None
                    continue
                self._subs[topic] = self._node.create_subscription(
                    cls, topic, lambda raw, t=topic, m=msgtype: self._bag.write(
                        t, m, self._clock_ns(), raw), self._qos_for(topic), raw=True)

    def _qos_for(self, topic: str) -> QoSProfile:
        """RECORD_QOS, transient local when every publisher of the topic offers it (as
        rosbag2 adapts): the messages a publisher sent before this subscription matched
        (the controller's first status) are then delivered on matching."""
        infos = self._node.get_publishers_info_by_topic(topic)
        latched = bool(infos) and all(i.qos_profile.durability ==
                                      DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        if not latched:
            return RECORD_QOS
        return QoSProfile(history=RECORD_QOS.history, depth=RECORD_QOS.depth,
                          reliability=RECORD_QOS.reliability,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def discover_missing(self, min_interval_s: float = 0.2) -> None:
        """discover(), at most every min_interval_s wall seconds and only while a followed
        topic is not subscribed yet (cheap enough to call on every simulation step)."""
        if len(self._subs) == len(self._follow):
            return
        now = time.monotonic()
        if now - self._last_discovery >= min_interval_s:
            self._last_discovery = now
            self.discover()

    def all_matched(self) -> bool:
        """Every followed topic that has publishers is subscribed and matched."""
        self.discover()
        for topic in self._follow:
            if self._node.count_publishers(topic) == 0:
                continue
            if topic in self._subs and self._subs[topic] is None:
                continue  # cannot be recorded (logged once)
            sub = self._subs.get(topic)
            if sub is None or sub.get_publisher_count() == 0:
                return False
        return True

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._bag.counts)

    def close(self) -> None:
        self._bag.close()
