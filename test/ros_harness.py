"""Test harness for ROS 2 processes and in-process rclpy nodes.

Three pieces, used by the fixtures in test/conftest.py:

* ``DomainIdLease`` hands out a ROS_DOMAIN_ID that no other test module (in this pytest
  run, another pytest-xdist worker, or another pytest run on the same machine) holds.
* ``RosProcess`` runs one node executable as a real process with ``--ros-args``, in its own
  process group, with its output captured to a file; it stops it with SIGINT, then SIGKILL.
* ``RosTestNode`` gives a test an rclpy node in its own ``Context`` on a chosen domain,
  spun on a background thread, plus waiting helpers (first message, n messages,
  publisher/subscriber matching). Every wait polls a condition with a timeout; nothing
  sleeps a fixed time and hopes.

No rclpy import at module import time, so collecting the test suite stays cheap.
"""
from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from alpamayo_ros.core.param_schema import param_literal

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_NAME = "alpamayo_ros"
DDS_PROFILE = REPO_ROOT / "config" / "fastdds_large_messages.xml"

# ROS_DOMAIN_ID range for tests. 0 is the default domain of anything else running on the
# machine; 101 is the largest id whose ports fit below Linux's ephemeral range.
DOMAIN_ID_MIN = 1
DOMAIN_ID_MAX = 101
DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / "alpamayo_ros_test_domains"

DEFAULT_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.02


class HarnessError(AssertionError):
    """A harness wait or process check failed (an AssertionError so pytest shows it plainly)."""


# --------------------------------------------------------------------------- environment


def venv_prefix() -> Path:
    """Prefix of the running interpreter's environment (the venv the messages live in)."""
    return Path(sys.prefix)


def ros_environment(
    domain_id: int,
    log_dir: Path,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for ROS processes started by a test, matching the test's own.

    PYTHONPATH starts with the repository root (hand-written modules from the source tree;
    alpamayo_ros.msg is found in the venv through pkgutil.extend_path), ROS_DOMAIN_ID is the
    test module's domain, logs go to ``log_dir``, discovery stays on localhost and Fast DDS
    uses the large-message profile unless FASTDDS_DEFAULT_PROFILES_FILE is already set.
    """
    env = dict(os.environ if base is None else base)
    python_path = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(python_path))
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_LOG_DIR"] = str(log_dir)
    env.setdefault("HOME", str(log_dir))  # rclpy.init fails without HOME or ROS_LOG_DIR
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(DDS_PROFILE))
    env["PYTHONUNBUFFERED"] = "1"  # node output reaches the log file before a crash
    return env


def resolve_executable(name: str) -> list[str]:
    """Command that runs the alpamayo_ros executable ``name``.

    The installed wrapper ``$VENV/lib/alpamayo_ros/<name>`` (what CMake installs, where
    ``ros2 run`` looks) is preferred; without an install the source wrapper
    ``scripts/<name>`` is used. Both run with this interpreter, so a test exercises the
    same Python environment as itself.
    """
    installed = venv_prefix() / "lib" / PACKAGE_NAME / name
    if installed.is_file():
        return [sys.executable, str(installed)]
    source = REPO_ROOT / "scripts" / name
    if source.is_file():
        return [sys.executable, str(source)]
    raise FileNotFoundError(
        f"no executable {name!r}: have neither {installed} (installed) nor {source} (source)"
    )


def ros_args(
    params_file: str | os.PathLike | None = None,
    remaps: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    node_name: str | None = None,
    namespace: str | None = None,
) -> list[str]:
    """``--ros-args`` command line: params file, ``-r from:=to`` remaps and ``-p name:=value``."""
    out = ["--ros-args"]
    if params_file is not None:
        out += ["--params-file", str(params_file)]
    if node_name:
        out += ["-r", f"__node:={node_name}"]
    if namespace:
        out += ["-r", f"__ns:={namespace}"]
    for src, dst in (remaps or {}).items():
        out += ["-r", f"{src}:={dst}"]
    for name, value in (params or {}).items():
        out += ["-p", f"{name}:={param_literal(value)}"]
    return out


# --------------------------------------------------------------------------- domain ids


class DomainIdLease:
    """Holds one ROS_DOMAIN_ID, exclusive among all processes on this machine.

    Each id is an flock on ``<tmp>/alpamayo_ros_test_domains/<id>.lock``; the kernel drops
    the lock when the holder exits, so a crashed run never leaks an id. Works across
    pytest-xdist workers and concurrent pytest runs alike.
    """

    def __init__(self, lo: int = DOMAIN_ID_MIN, hi: int = DOMAIN_ID_MAX, start: int | None = None):
        if not 0 <= lo <= hi <= 232:
            raise ValueError(f"domain id range [{lo}, {hi}] is outside ROS's 0..232")
        DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
        span = hi - lo + 1
        first = (os.getpid() if start is None else start) % span
        for k in range(span):
            candidate = lo + (first + k) % span
            fd = os.open(DOMAIN_LOCK_DIR / f"{candidate}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.domain_id = candidate
            self._fd: int | None = fd
            return
        raise RuntimeError(f"all {span} ROS domain ids in [{lo}, {hi}] are held by other tests")

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DomainIdLease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------- processes


@dataclass
class RosProcess:
    """One node executable run as a real process in its own process group.

    ``command`` is the full argv (see ``resolve_executable`` and ``ros_args``); stdout and
    stderr go to ``log_path`` (a file, not a pipe, so a chatty node can never block on a
    full pipe).
    """

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = REPO_ROOT
    popen: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> "RosProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: SIGINT reaches the node (shell background jobs ignore
                # it) and the whole group can be killed without touching pytest.
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, "process not started"
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr interleaved)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self, tail_chars: int = 4000) -> str:
        """Command, state and output tail, for failure messages."""
        state = "running" if self.is_running() else f"exited with {self.returncode}"
        out = self.output()
        if len(out) > tail_chars:
            out = "...\n" + out[-tail_chars:]
        return f"{self.name} ({state}): {' '.join(self.command)}\n--- output ---\n{out}"

    def assert_running(self) -> None:
        if not self.is_running():
            raise HarnessError(f"process died\n{self.describe()}")

    def wait_for_output(self, pattern: str, timeout: float = DEFAULT_TIMEOUT_S) -> re.Match:
        """Wait until the output matches the regular expression ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output())
            if match:
                return match
            if not self.is_running():
                raise HarnessError(f"process exited before printing /{pattern}/\n{self.describe()}")
            if time.monotonic() > deadline:
                raise HarnessError(f"no /{pattern}/ within {timeout:.1f} s\n{self.describe()}")
            time.sleep(POLL_INTERVAL_S)

    def wait_exit(self, timeout: float = DEFAULT_TIMEOUT_S) -> int:
        """Wait for the process to exit on its own; its return code."""
        assert self.popen is not None, "process not started"
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"still running after {timeout:.1f} s\n{self.describe()}") from None

    def stop(self, sigint_timeout: float = 5.0, sigkill_timeout: float = 5.0) -> int | None:
        """SIGINT to the process group, then SIGKILL if it has not exited; the return code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self._signal_group(signal.SIGINT)
            try:
                self.popen.wait(sigint_timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait(sigkill_timeout)
        # Children the node itself left behind in its group.
        self._signal_group(signal.SIGKILL)
        return self.popen.returncode

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)  # type: ignore[union-attr]
        except (ProcessLookupError, PermissionError):
            pass


# --------------------------------------------------------------------------- rclpy node


class _Inbox:
    """Messages received by one subscription, with a condition to wait on."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.cond = threading.Condition()

    def put(self, msg: Any) -> None:
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float) -> list[Any]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.messages) >= n, timeout)
            return list(self.messages)

    def wait_until(self, predicate: Callable[[list[Any]], bool], timeout: float,
                   what: str) -> list[Any]:
        """The messages once ``predicate(messages)`` holds; HarnessError naming ``what``
        (and the number of messages) after ``timeout`` seconds."""
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(list(self.messages)), timeout):
                raise HarnessError(f"timed out after {timeout:.1f} s waiting for {what} "
                                   f"({len(self.messages)} messages received)")
            return list(self.messages)


class RosTestNode:
    """An rclpy node in its own Context on ``domain_id``, spun on a background thread.

    The own Context keeps tests independent of rclpy's global default context, and of the
    domain in the environment. Close with ``close()`` (the fixture does): rclpy.shutdown of
    the context, join the spin thread, then destroy the node; a spin thread still running at
    interpreter exit aborts the process.
    """

    def __init__(self, domain_id: int, name: str = "test_harness"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.domain_id = domain_id
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(
            target=self._spin, name=f"spin-{name}", daemon=True
        )
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    # -- QoS --------------------------------------------------------------------------------

    def matching_qos(self, topic: str, timeout: float = DEFAULT_TIMEOUT_S, depth: int = 100):
        """A subscription QoS compatible with the topic's publishers (as ``ros2 topic echo``).

        Best effort if any publisher is best effort; transient local if all publishers are.
        Waits for at least one publisher.
        """
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        self.wait_for_publisher(topic, timeout=timeout)
        infos = self.node.get_publishers_info_by_topic(topic)
        reliability = ReliabilityPolicy.RELIABLE
        if any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos):
            reliability = ReliabilityPolicy.BEST_EFFORT
        durability = DurabilityPolicy.VOLATILE
        if infos and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos):
            durability = DurabilityPolicy.TRANSIENT_LOCAL
        return QoSProfile(depth=depth, reliability=reliability, durability=durability)

    # -- receiving --------------------------------------------------------------------------

    def subscribe(self, topic: str, msg_type: type, qos: Any = None, timeout: float = DEFAULT_TIMEOUT_S):
        """Start collecting ``topic``; returns (subscription, inbox) for ``collect_from``.

        ``qos=None`` adapts to the publishers (waits up to ``timeout`` for one).
        """
        if qos is None:
            qos = self.matching_qos(topic, timeout=timeout)
        inbox = _Inbox()
        sub = self.node.create_subscription(msg_type, topic, inbox.put, qos)
        return sub, inbox

    def collect(
        self,
        topic: str,
        msg_type: type,
        n: int,
        timeout: float = DEFAULT_TIMEOUT_S,
        qos: Any = None,
    ) -> list[Any]:
        """The first ``n`` messages received on ``topic`` within ``timeout`` seconds.

        The timeout covers discovery and reception together. Raises HarnessError with the
        number received when fewer than ``n`` arrive.
        """
        deadline = time.monotonic() + timeout
        sub, inbox = self.subscribe(topic, msg_type, qos=qos, timeout=timeout)
        try:
            got = inbox.wait_for(n, max(0.0, deadline - time.monotonic()))
        finally:
            self.node.destroy_subscription(sub)
        if len(got) < n:
            raise HarnessError(
                f"{topic}: have {len(got)} {msg_type.__name__} messages after {timeout:.1f} s, "
                f"need {n} (publishers: {self.node.count_publishers(topic)})"
            )
        return got[:n]

    def wait_for_message(
        self, topic: str, msg_type: type, timeout: float = DEFAULT_TIMEOUT_S, qos: Any = None
    ) -> Any:
        """The first message received on ``topic`` within ``timeout`` seconds."""
        return self.collect(topic, msg_type, 1, timeout=timeout, qos=qos)[0]

    # -- graph ------------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` until true; HarnessError naming ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise HarnessError(f"timed out after {timeout:.1f} s waiting for {what}")
            time.sleep(POLL_INTERVAL_S)

    def wait_for_publisher(self, topic: str, count: int = 1, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Wait until the graph shows at least ``count`` publishers on ``topic``."""
        self.wait_until(
            lambda: self.node.count_publishers(topic) >= count,
            timeout,
            f"{count} publisher(s) on {topic} (have {self.node.count_publishers(topic)})",
        )

    def wait_for_subscriber(self, topic: str, count: int = 1, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Wait until the graph shows at least ``count`` subscribers on ``topic``."""
        self.wait_until(
            lambda: self.node.count_subscribers(topic) >= count,
            timeout,
            f"{count} subscriber(s) on {topic} (have {self.node.count_subscribers(topic)})",
        )

    def wait_for_node(self, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Wait until a node called ``name`` shows in the graph (node names are discovered
        separately from, and may lag behind, topic endpoints)."""
        self.wait_until(
            lambda: name in self.node.get_node_names(), timeout, f"node {name!r} in the graph"
        )

    def wait_for_publisher_match(self, publisher: Any, count: int = 1, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Wait until ``publisher`` (of this node) is matched with ``count`` subscriptions.

        Matching means QoS-compatible and discovered both ways, so a message published now
        is delivered; the graph count alone does not guarantee that.
        """
        self.wait_until(
            lambda: publisher.get_subscription_count() >= count,
            timeout,
            f"{count} subscription(s) matched to the publisher on {publisher.topic_name}",
        )

    def wait_for_subscription_match(self, subscription: Any, count: int = 1, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Wait until ``subscription`` (of this node) is matched with ``count`` publishers."""
        self.wait_until(
            lambda: subscription.get_publisher_count() >= count,
            timeout,
            f"{count} publisher(s) matched to the subscription on {subscription.topic_name}",
        )

    # -- teardown ---------------------------------------------------------------------------

    def close(self) -> None:
        import rclpy

        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5.0)
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()

    def __enter__(self) -> "RosTestNode":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- messages


def message_differences(a: Any, b: Any, path: str = "msg", limit: int = 10) -> list[str]:
    """Field paths where two ROS messages differ (``a.b[3].c: x != y``), at most ``limit``.

    For readable failure messages; rosidl's ``==`` only says that something differs.
    """
    out: list[str] = []

    def walk(x: Any, y: Any, p: str) -> None:
        if len(out) >= limit:
            return
        fields = getattr(type(x), "get_fields_and_field_types", None)
        if fields is not None and type(x) is type(y):
            for name in fields():
                walk(getattr(x, name), getattr(y, name), f"{p}.{name}")
        elif isinstance(x, (list, tuple)) or hasattr(x, "tolist"):
            xs, ys = list(x), list(y) if hasattr(y, "__iter__") and not isinstance(y, (str, bytes)) else y
            if not isinstance(ys, list) or len(xs) != len(ys):
                out.append(f"{p}: length {len(xs)} != {len(ys) if isinstance(ys, list) else ys!r}")
                return
            for i, (xi, yi) in enumerate(zip(xs, ys)):
                walk(xi, yi, f"{p}[{i}]")
        elif x != y:
            out.append(f"{p}: {x!r} != {y!r}")

    walk(a, b, path)
    return out
