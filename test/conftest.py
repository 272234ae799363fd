"""Shared pytest fixtures: ROS domains, node processes and an rclpy test node.

Fixtures
--------
ros_domain_id (module)   a ROS_DOMAIN_ID in 1..101 held by this test module only
ros_env (module)         environment for processes on that domain (see ros_harness.ros_environment)
ros_process (function)   factory that starts node executables; stops them after the test
ros_node (function)      ros_harness.RosTestNode on the module's domain

The golden fixture set of the official model is loaded by fixture_set.py.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import ros_harness`
import ros_harness  # noqa: E402

# In-process rclpy (ros_node) reads these at rclpy.init / participant creation: set them
# before any test imports rclpy. A value from the caller (.ci/run) wins.
_SESSION_LOG_DIR = Path(tempfile.mkdtemp(prefix="alpamayo_ros_test_logs_"))
os.environ.setdefault("ROS_LOG_DIR", str(_SESSION_LOG_DIR))
os.environ.setdefault("HOME", str(_SESSION_LOG_DIR))
# User caches (the weight digest cache of model.checkpoint) go to this run's directory, not
# into the caller's ~/.cache; node processes inherit it.
os.environ["XDG_CACHE_HOME"] = str(_SESSION_LOG_DIR / "cache")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ros_harness.DDS_PROFILE))


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_LOG_DIR, ignore_errors=True)


# --------------------------------------------------------------------------- ROS domain


@pytest.fixture(scope="module")
def ros_domain_id() -> Iterator[int]:
    """A ROS_DOMAIN_ID (1..101) that no other test module holds while this one runs.

    Exclusive across pytest-xdist workers and concurrent pytest runs on the machine
    (file locks, see ros_harness.DomainIdLease).
    """
    with ros_harness.DomainIdLease() as lease:
        yield lease.domain_id


@pytest.fixture(scope="module")
def ros_env(ros_domain_id: int, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for node processes of this module: same Python and PYTHONPATH as the
    tests (repo root first), the module's ROS_DOMAIN_ID, its own ROS_LOG_DIR, localhost
    discovery and the large-message Fast DDS profile."""
    log_dir = tmp_path_factory.mktemp("ros_log")
    return ros_harness.ros_environment(ros_domain_id, log_dir)


# --------------------------------------------------------------------------- processes


class ProcessLauncher:
    """Starts alpamayo_ros executables as real processes for one test (``ros_process``)."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.processes: list[ros_harness.RosProcess] = []

    def __call__(
        self,
        executable: str,
        *args: str,
        params_file: str | os.PathLike | None = None,
        remaps: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        node_name: str | None = None,
        namespace: str | None = None,
        command: list[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ros_harness.RosProcess:
        """Start ``executable`` with ``args`` then ``--ros-args`` built from the keywords.

        ``executable`` is resolved as ``$VENV/lib/alpamayo_ros/<name>`` (the CMake install),
        falling back to ``python scripts/<name>`` from the source tree; ``command`` replaces
        that with an explicit argv (e.g. ``[sys.executable, "test/some_script.py"]``).
        ``env`` adds to or overrides the module's ROS environment.
        """
        argv = list(command) if command is not None else ros_harness.resolve_executable(executable)
        argv += list(args)
        argv += ros_harness.ros_args(params_file, remaps, params, node_name, namespace)
        proc_env = dict(self.env)
        proc_env.update(env or {})
        index = len(self.processes)
        proc = ros_harness.RosProcess(
            name=executable,
            command=argv,
            env=proc_env,
            log_path=self.log_dir / f"{index:02d}_{Path(executable).name}.log",
        )
        self.processes.append(proc.start())
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()


@pytest.fixture
def ros_process(request: pytest.FixtureRequest, ros_env: dict[str, str], tmp_path: Path) -> Iterator[ProcessLauncher]:
    """Factory: ``proc = ros_process("planner_node", params_file=..., remaps=..., params=...)``.

    Each process runs in its own process group with the module's ROS environment; its
    output is captured to a file (``proc.output()``, ``proc.describe()``) and shown in the
    report of a failed test. After the test every process gets SIGINT, then SIGKILL after
    5 s.
    """
    launcher = ProcessLauncher(ros_env, tmp_path / "processes")
    request.node.stash[_LAUNCHER_KEY] = launcher
    yield launcher
    launcher.stop_all()


_LAUNCHER_KEY = pytest.StashKey[ProcessLauncher]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the output of the test's node processes to the report of a failed test."""
    report = yield
    launcher = item.stash.get(_LAUNCHER_KEY, None)
    if launcher is not None and report.failed and report.when in ("call", "setup"):
        for proc in launcher.processes:
            report.sections.append((f"Captured output of process {proc.name}", proc.describe(20000)))
    return report


# --------------------------------------------------------------------------- rclpy node


@pytest.fixture
def ros_node(ros_domain_id: int, request: pytest.FixtureRequest) -> Iterator[ros_harness.RosTestNode]:
    """An rclpy node in its own Context on the module's domain, spinning in a thread.

    Helpers: ``wait_for_message(topic, type, timeout)``, ``collect(topic, type, n,
    timeout)``, ``wait_for_publisher/subscriber(topic)``,
    ``wait_for_publisher_match(pub)``, ``wait_for_subscription_match(sub)``; ``.node`` is
    the rclpy node for creating publishers. Shutdown order: rclpy.shutdown(context), join
    the spin thread, destroy_node.
    """
    name = "test_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]
    node = ros_harness.RosTestNode(ros_domain_id, name=name)
    try:
        yield node
    finally:
        node.close()
