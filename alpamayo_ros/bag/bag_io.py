"""rosbag2 reading and writing (no ROS graph), and message <-> core adapters.

`rosbags` parses metadata, reads sqlite3 bags, writes bags and (de)serialises CDR; mcap
files are read front to back with every CRC checked (bag.mcap_stream), so a damaged
bag gives its messages up to the damage and then a BagError saying where (BagReader).

rosbags deserialises to its own dataclasses (not rclpy messages), so this module is the
bag-side twin of the node's alpamayo_ros/ros/convert.py: the same core checks for inbound
images and odometry, and the same plain-data descriptions (core.plan_message) for what
the planner publishes, materialised with rosbags classes instead of rclpy ones.

Times: every message in a bag has two times.
* the **log time** (``BagMessage.log_time_ns``): when the recorder received it; it orders
  the bag and paces the live player (testbed/bag_player_node.py);
* the **header stamp** (``BagMessage.stamp_ns``): when the data was measured; the planner
  core and the stepped replay work on header stamps only.

Our message types (msg/*.msg) are registered in the Kilted typestore; their RIHS01 hashes
equal rosidl's, and bags are written with rosbag2 metadata version 8 so that Humble's
``ros2 bag`` can read them. Types of other interface packages the typestore lacks (Autoware's
autoware_planning_msgs) are registered from the .msg files of the installed package when
first used (`register_package_types`).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from alpamayo_ros.core.errors import AlpamayoError
from alpamayo_ros.core.image_decode import (EncodedImage, checked_compressed_image,
                                            checked_raw_image, encode_frame)
from alpamayo_ros.core.odometry import odometry_from_msg
from alpamayo_ros.core.plan_message import MsgData
from alpamayo_ros.core.types import NS_PER_S, stamp_to_ns

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
NAVIGATION_TYPE = "alpamayo_ros/msg/NavigationInstruction"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
STORAGE_IDS = ("mcap", "sqlite3")
# Humble's rosbag2 parses metadata up to version 8 (version 9 fails there).
BAG_METADATA_VERSION = 8


class BagError(AlpamayoError, ValueError):
    """A bag cannot be read or written (missing, truncated, corrupt, unknown storage)."""


# --------------------------------------------------------------------------------------
# Typestore
# --------------------------------------------------------------------------------------


def _msg_dir_candidates() -> list[Path]:
    here = Path(__file__).resolve()
    out = [here.parents[2] / "msg"]  # source tree: <repo>/msg
    # Installed (venv or colcon install space, any lib/pythonX.Y/{site,dist}-packages
    # depth): <prefix>/share/alpamayo_ros/msg above this file.
    out += [parent / "share" / "alpamayo_ros" / "msg" for parent in here.parents[3:]]
    try:  # a sourced ROS environment names the prefix in the ament index
        from ament_index_python.packages import get_package_share_directory
        out.append(Path(get_package_share_directory("alpamayo_ros")) / "msg")
    except Exception:  # not installed or no ament index: the source tree is enough
        pass
    return out


@lru_cache(maxsize=1)
def typestore():
    """The ROS 2 Kilted typestore with alpamayo_ros/msg/* registered from msg/*.msg."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(Stores.ROS2_KILTED)
    for directory in _msg_dir_candidates():
        files = sorted(directory.glob("*.msg"))
        if files:
            types: dict = {}
            for path in files:
                types.update(get_types_from_msg(path.read_text(), f"alpamayo_ros/msg/{path.stem}"))
            store.register(types)
            return store
    raise BagError("alpamayo_ros .msg files not found; looked in "
                   + ", ".join(str(d) for d in _msg_dir_candidates()))


def _share_msg_dirs(package: str) -> list[Path]:
    """Where an installed interface package keeps its .msg files: <prefix>/share/<package>/msg
    of this interpreter's prefix (the venv) and of every AMENT_PREFIX_PATH entry."""
    prefixes = [Path(sys.prefix)]
    prefixes += [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [prefix / "share" / package / "msg" for prefix in prefixes]


@lru_cache(maxsize=None)
def register_package_types(package: str) -> None:
    """Register every message of an installed interface package (e.g. Autoware's
    autoware_planning_msgs) in the typestore, from the .msg files rosidl installs; the
    Kilted typestore has only the core ROS packages. BagError when none are found."""
    from rosbags.typesys import get_types_from_msg
    for directory in _share_msg_dirs(package):
        files = sorted(directory.glob("*.msg"))
        if files:
            types: dict = {}
            for path in files:
                types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
            typestore().register(types)
            return
    raise BagError(f"message package {package} is not installed (no .msg files in "
                   + ", ".join(str(d) for d in _share_msg_dirs(package)) + ")")


def _known_type(msgtype: str) -> None:
    """Make sure the typestore knows msgtype, registering its package when the typestore
    has none of its types (BagError when that package is not installed)."""
    types = typestore().types
    if msgtype not in types:
        package = msgtype.split("/")[0]
        if not any(name.startswith(package + "/") for name in types):
            register_package_types(package)


def msg_class(msgtype: str):
    """rosbags dataclass of a message type name, e.g. 'nav_msgs/msg/Odometry'."""
    _known_type(msgtype)
    try:
        return typestore().types[msgtype]
    except KeyError:
        raise BagError(f"unknown message type {msgtype}") from None


# --------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------


def ns_to_stamp(ns: int):
    """int ns -> builtin_interfaces/Time (floor division keeps nanosec in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return msg_class("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str):
    return msg_class("std_msgs/msg/Header")(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BagMessage:
    """One deserialised message. stamp_ns is the header stamp (None if the type has none)."""

    topic: str
    msgtype: str
    log_time_ns: int
    stamp_ns: Optional[int]
    msg: Any


@dataclass(frozen=True)
class BagConnection:
    """One topic of a bag: name, message type and number of messages."""

    topic: str
    msgtype: str
    msgcount: int


def storage_of(path: Path) -> str:
    """'mcap' or 'sqlite3' from the bag's files (metadata.yaml says it too)."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if any(path.glob("*.mcap")):
        return "mcap"
    if any(path.glob("*.db3")):
        return "sqlite3"
    raise BagError(f"{path}: no .mcap or .db3 file found; need a rosbag2 directory")


def _split_order(path: Path) -> tuple:
    """Sort key of rosbag2's split files <name>_<n>.mcap by n (then by name)."""
    stem, _, number = path.stem.rpartition("_")
    return (stem, int(number)) if number.isdigit() else (path.stem, -1)


def _metadata_topics(path: Path) -> dict:
    """(topic, type) -> message count from metadata.yaml; {} when it cannot be read."""
    import yaml
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return {(t["topic_metadata"]["name"], t["topic_metadata"]["type"]):
                int(t.get("message_count", 0)) for t in info["topics_with_message_count"]}
    except Exception:  # missing or broken metadata: the storage files are all there is
        return {}


class BagReader:
    """Context manager over one rosbag2 directory (mcap or sqlite3).

    mcap (uncompressed bag files, rosbag2's default): messages are read front to back by
    bag.mcap_stream, every CRC checked. Topics, counts and times come from metadata.yaml
    through rosbags when rosbags can open the bag; when it cannot (a file cut short has no
    summary, metadata.yaml is missing), from a pass over the readable part of the files
    (topics of metadata.yaml included when it is readable). A damaged file gives its
    messages up to the damage, then BagError ("bag_0.mcap is truncated at byte N after M
    messages: ..."), so a replay keeps the ticks it made.
    sqlite3 (and zstd-compressed bags): rosbags; after the last message sqlite's
    `PRAGMA quick_check` runs, and a damaged database is a BagError too. sqlite3 bags
    carry no checksums: bytes altered inside a message are found only when the message no
    longer deserialises.

    Errors (missing directory, unreadable metadata and storage, damage, undecodable
    message) raise BagError with the path and the cause.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._reader = None                       # rosbags Reader (sqlite3, compressed)
        self._mcap_files: list[Path] = []         # or: mcap files read by mcap_stream
        self._open_error: Optional[str] = None    # why rosbags could not open the bag
        self._connections: list[BagConnection] = []
        self._by_id: dict[int, BagConnection] = {}
        self._start_ns = 0
        self._end_ns = 0
        self._definitions: dict[str, str] = {}   # msgtype -> the bag's own definition

    def __enter__(self) -> "BagReader":
        from rosbags.rosbag2 import Reader
        if not self.path.exists():
            raise BagError(f"{self.path}: bag does not exist")
        if self.path.is_dir():
            mcap_files = sorted(self.path.glob("*.mcap"), key=_split_order)
        else:  # rosbags also opens a bare storage file
            mcap_files = [self.path] if self.path.suffix == ".mcap" else []
        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as exc:  # rosbags raises ReaderError, OSError, sqlite3/mcap errors
            if not mcap_files:
                raise BagError(f"{self.path}: cannot open bag: {exc}") from exc
            self._mcap_files, self._open_error = mcap_files, str(exc)
            self._summarise_mcap()
            return self
        self._connections = [BagConnection(c.topic, c.msgtype, c.msgcount)
                             for c in reader.connections]
        self._definitions = {c.msgtype: c.msgdef.data for c in reader.connections
                             if c.msgdef.format.name == "MSG" and c.msgdef.data}
        self._by_id = {c.id: conn for c, conn in zip(reader.connections, self._connections)}
        self._start_ns, self._end_ns = int(reader.start_time), int(reader.end_time)
        if mcap_files and not reader.compression_mode:  # "" or None: not compressed
            self._mcap_files = mcap_files
            reader.close()
        else:
            self._reader = reader
        return self

    def _summarise_mcap(self) -> None:
        """Topics, counts and times from the readable part of the mcap files."""
        from alpamayo_ros.bag import mcap_stream
        counts = dict.fromkeys(_metadata_topics(self.path), 0)
        start = end = None
        for path in self._mcap_files:
            summary, damage = mcap_stream.summarise(path)
            for key, n in summary.channels.items():
                counts[key] = counts.get(key, 0) + n
            if summary.start_ns is not None:
                start = summary.start_ns if start is None else min(start, summary.start_ns)
                end = summary.end_ns if end is None else max(end, summary.end_ns)
            if damage is not None:
                break  # nothing after the first damage is read
        self._connections = [BagConnection(t, ty, n) for (t, ty), n in counts.items()]
        self._start_ns, self._end_ns = (start, end + 1) if start is not None else (0, 0)

    def __exit__(self, *exc) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # a damaged file may fail again on close; nothing to keep
                pass
            self._reader = None

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type name."""
        return {c.topic: c.msgtype for c in self._connections}

    @property
    def message_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self._connections:
            out[c.topic] = out.get(c.topic, 0) + c.msgcount
        return out

    @property
    def start_time_ns(self) -> int:
        return self._start_ns

    @property
    def end_time_ns(self) -> int:
        return self._end_ns

    def connections(self, topics: Optional[Iterable[str]] = None) -> list[BagConnection]:
        """Connections of `topics` (all when None)."""
        wanted = None if topics is None else set(topics)
        return [c for c in self._connections if wanted is None or c.topic in wanted]

    def raw_messages(self, topics: Optional[Iterable[str]] = None
                     ) -> Iterator[tuple[BagConnection, int, bytes]]:
        """(connection, log time ns, CDR bytes) in log-time order, not deserialised;
        BagError after the messages before a damage."""
        conns = self.connections(topics)
        if not conns:
            return
        if self._mcap_files:
            yield from self._mcap_messages(conns)
            return
        try:
            for conn, log_time, raw in self._reader.messages(
                    connections=[c for c in self._reader.connections
                                 if self._by_id[c.id] in conns]):
                yield self._by_id[conn.id], log_time, raw
        except Exception as exc:  # truncated/corrupt storage, "database disk image is malformed"
            raise BagError(f"{self.path}: bag is truncated or corrupt: {exc}") from exc
        self._check_sqlite()

    def _mcap_messages(self, conns: list[BagConnection]
                       ) -> Iterator[tuple[BagConnection, int, bytes]]:
        from alpamayo_ros.bag import mcap_stream
        by_key = {(c.topic, c.msgtype): c for c in conns}
        topics = {c.topic for c in conns}
        count = 0
        for path in self._mcap_files:
            try:
                for m in mcap_stream.read_messages(path, topics):
                    conn = by_key.get((m.topic, m.msgtype))
                    if conn is not None:
                        count += 1
                        yield conn, m.log_time_ns, m.data
            except mcap_stream.McapDamage as damage:
                raise BagError(f"{self.path}: {path.name} is {damage}") from damage
            except OSError as exc:
                raise BagError(f"{self.path}: cannot read {path.name}: {exc}") from exc
        if self._open_error is not None:
            raise BagError(f"{self.path}: cannot open bag: {self._open_error} (the {count} "
                           "messages of its mcap files were read)")

    def _check_sqlite(self) -> None:
        """BagError when sqlite finds a database file damaged (b-tree structure)."""
        import sqlite3
        for db in sorted(self.path.glob("*.db3"), key=_split_order):
            try:
                con = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
                try:
                    rows = [str(r[0]) for r in con.execute("PRAGMA quick_check").fetchall()]
                finally:
                    con.close()
            except sqlite3.Error as exc:
                rows = [str(exc)]
            if rows != ["ok"]:
                text = "; ".join(" ".join(r.split()) for r in rows)
                raise BagError(f"{self.path}: {db.name} is corrupt (sqlite quick_check: "
                               f"{text[:300]})")

    def messages(self, topics: Optional[Iterable[str]] = None) -> Iterator[BagMessage]:
        """Messages of `topics` (all when None) in log-time order, deserialised;
        BagError after the messages before a damage."""
        store = typestore()
        for conn in self.connections(topics):
            # Types outside the typestore (e.g. carla_msgs) from the bag's own definitions.
            if conn.msgtype not in store.types and conn.msgtype in self._definitions:
                from rosbags.typesys import get_types_from_msg
                store.register(get_types_from_msg(self._definitions[conn.msgtype],
                                                  conn.msgtype))
        for conn, log_time, raw in self.raw_messages(topics):
            try:
                _known_type(conn.msgtype)
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # corrupt payload: say which message
                raise BagError(f"{self.path}: cannot deserialise {conn.msgtype} on "
                               f"{conn.topic} at log time {log_time} ns: {exc}") from exc
            stamp = getattr(getattr(msg, "header", None), "stamp", None)
            yield BagMessage(conn.topic, conn.msgtype, int(log_time),
                             None if stamp is None else stamp_to_ns(stamp), msg)


# --------------------------------------------------------------------------------------
# Message -> core adapters
# --------------------------------------------------------------------------------------


def image_to_encoded(msg: Any, msgtype: str) -> EncodedImage:
    """sensor_msgs Image / CompressedImage (rosbags dataclass) -> EncodedImage (no copy).

    The node's checks (core.image_decode.checked_raw_image / checked_compressed_image), so
    a frame is refused in the replay exactly when the live node refuses it: DecodeError.
    """
    if msgtype == IMAGE_TYPE:
        return checked_raw_image(msg.encoding, msg.height, msg.width, msg.step,
                                 np.asarray(msg.data))
    if msgtype == COMPRESSED_IMAGE_TYPE:
        return checked_compressed_image(msg.format, np.asarray(msg.data))
    raise BagError(f"not an image message type: have {msgtype}, need one of {IMAGE_TYPES}")


# nav_msgs/Odometry -> core OdometrySample, values as received.
odometry_to_sample = odometry_from_msg


# --------------------------------------------------------------------------------------
# Core -> message builders
# --------------------------------------------------------------------------------------


def _bag_value(value: Any) -> Any:
    if isinstance(value, MsgData):
        return to_bag_message(value)
    if isinstance(value, list):
        return [_bag_value(v) for v in value]
    return value  # scalars, strings, and numpy arrays of the field's type


def to_bag_message(data: MsgData):
    """The rosbags message of a plain-data description (core.plan_message). Fields the
    description leaves out (ones newer ROS distributions added, e.g. Marker.texture) get
    their default value."""
    fields = {k: _bag_value(v) for k, v in data.fields.items()}
    for name, default in _field_defaults(data.type):
        if name not in fields:
            fields[name] = default()
    return msg_class(data.type)(**fields)


_BASE_DEFAULTS = {"string": str, "wstring": str, "bool": bool, "float32": float,
                  "float64": float}


@lru_cache(maxsize=None)
def _field_defaults(msgtype: str) -> tuple:
    """(field name, factory of its default value) per field of a message type, from the
    typestore's field definitions (rosbags has no default constructor)."""
    from rosbags.interfaces import Nodetype
    _known_type(msgtype)
    _, fields = typestore().fielddefs[msgtype]

    def factory(kind, detail):
        if kind == Nodetype.BASE:
            return _BASE_DEFAULTS.get(detail[0], int)
        if kind == Nodetype.NAME:
            return lambda: to_bag_message(MsgData(detail, {}))
        (elem_kind, elem_detail), count = detail
        element = factory(elem_kind, elem_detail)
        if elem_kind == Nodetype.BASE and elem_detail[0] not in _BASE_DEFAULTS:
            dtype = np.uint8 if elem_detail[0] in ("byte", "char", "octet") else elem_detail[0]
            n = count if kind == Nodetype.ARRAY else 0
            return lambda: np.zeros(n, dtype=dtype)
        n = count if kind == Nodetype.ARRAY else 0
        return lambda: [element() for _ in range(n)]

    return tuple((name, factory(kind, detail)) for name, (kind, detail) in fields)


def pose_msg(xyz: Sequence[float], quat_xyzw: Sequence[float]):
    geo = typestore().types
    return geo["geometry_msgs/msg/Pose"](
        position=geo["geometry_msgs/msg/Point"](x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
        orientation=geo["geometry_msgs/msg/Quaternion"](
            x=float(quat_xyzw[0]), y=float(quat_xyzw[1]), z=float(quat_xyzw[2]),
            w=float(quat_xyzw[3])))


def image_message(rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str,
                  jpeg_quality: int = 90):
    """RGB uint8 (H, W, 3) -> (msgtype, message).

    encoding: rgb8 / bgr8 / bgra8 (raw sensor_msgs/Image) or jpeg (CompressedImage); the
    pixels are those of the live publisher (core.image_decode.encode_frame).
    """
    payload = encode_frame(rgb, encoding, jpeg_quality)  # ConfigError for other encodings
    if encoding == "jpeg":
        return COMPRESSED_IMAGE_TYPE, msg_class(COMPRESSED_IMAGE_TYPE)(
            header=header(stamp_ns, frame_id), format="jpeg",
            data=np.frombuffer(payload, dtype=np.uint8))
    h, w, channels = payload.shape
    return IMAGE_TYPE, msg_class(IMAGE_TYPE)(
        header=header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
        is_bigendian=0, step=w * channels, data=payload.reshape(-1))


def navigation_message(stamp_ns: int, text: str, valid_for_ns: int, source: str = ""):
    """alpamayo_ros/NavigationInstruction (frame_id empty, as the navigation node's)."""
    sec, nanosec = divmod(int(valid_for_ns), NS_PER_S)
    return msg_class(NAVIGATION_TYPE)(
        header=header(stamp_ns, ""), text=text, source=source,
        valid_for=msg_class("builtin_interfaces/msg/Duration")(sec=sec, nanosec=nanosec))


def odometry_message(stamp_ns: int, frame_id: str, child_frame_id: str, xyz, quat_xyzw,
                     linear_velocity, angular_velocity):
    """nav_msgs/Odometry with zero covariances (pose in frame_id, twist in child frame)."""
    t = typestore().types
    vec = t["geometry_msgs/msg/Vector3"]
    return msg_class(ODOMETRY_TYPE)(
        header=header(stamp_ns, frame_id), child_frame_id=child_frame_id,
        pose=t["geometry_msgs/msg/PoseWithCovariance"](
            pose=pose_msg(xyz, quat_xyzw), covariance=np.zeros(36)),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](
            twist=t["geometry_msgs/msg/Twist"](
                linear=vec(x=float(linear_velocity[0]), y=float(linear_velocity[1]),
                           z=float(linear_velocity[2])),
                angular=vec(x=float(angular_velocity[0]), y=float(angular_velocity[1]),
                            z=float(angular_velocity[2]))),
            covariance=np.zeros(36)))


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


class BagWriter:
    """Context manager writing a rosbag2 directory (metadata version 8, mcap or sqlite3).

    mcap files get their chunk, data-section and summary CRCs once closed
    (bag.mcap_stream.fill_crcs; rosbags writes none).

    `write(topic, msgtype, log_time_ns, msg)` adds the connection on first use; the log
    time is the bag's record time (for generated bags: the header stamp, i.e. an ideal,
    zero-latency recorder).
    """

    def __init__(self, path: Path | str, storage: str = "mcap") -> None:
        if storage not in STORAGE_IDS:
            raise BagError(f"unknown bag storage {storage!r}; need one of {STORAGE_IDS}")
        self.path = Path(path)
        self.storage = storage
        self._writer = None
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> "BagWriter":
        from rosbags.rosbag2 import StoragePlugin, Writer
        if self.path.exists():
            raise BagError(f"{self.path}: output bag already exists; remove it or pick "
                           "another path")
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=BAG_METADATA_VERSION, storage_plugin=plugin)
        self._writer.open()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if exc_type is None and self.storage == "mcap":
                # rosbags writes no CRCs; with them a reader can tell corrupted data.
                from alpamayo_ros.bag import mcap_stream
                for path in self.path.glob("*.mcap"):
                    mcap_stream.fill_crcs(path)

    def write(self, topic: str, msgtype: str, log_time_ns: int, msg: Any) -> None:
        """Serialise a rosbags message and write it."""
        self.write_raw(topic, msgtype, log_time_ns, typestore().serialize_cdr(msg, msgtype))

    def write_raw(self, topic: str, msgtype: str, log_time_ns: int, raw: bytes) -> None:
        """Write already serialised CDR bytes (e.g. from an rclpy raw subscription)."""
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=typestore())
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f"topic {topic}: have type {conn.msgtype}, tried to write {msgtype}")
        self._writer.write(conn, int(log_time_ns), raw)
