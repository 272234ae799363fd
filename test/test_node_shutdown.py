"""Shutdown through real processes (issue 9, item 7): SIGINT/SIGTERM, once or many times,
during a model call that cannot be interrupted ends the planner within the bound, with exit
status 0, no traceback and no plan published after the signal.

The planner runs as test/slow_planner_node.py: the planner_node executable's main() with
the constant-velocity model, whose calls after the first two sleep (a long GPU call). This
test process drives it with a sim clock and a scripted scenario and records its plans.
"""
from __future__ import annotations

import re
import signal
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
import ros_harness  # noqa: E402

from alpamayo_ros.core import planner_params as P  # noqa: E402
from alpamayo_ros.msg import PlannerOutput  # noqa: E402
from alpamayo_ros.ros.qos import PLAN_QOS  # noqa: E402
from alpamayo_ros.testbed.scenario_publisher import ScenarioPublisher  # noqa: E402
from alpamayo_ros.ros.shutdown import SHUTDOWN_BOUND_S  # noqa: E402
from alpamayo_ros.sim import scenario as sc  # noqa: E402

pytestmark = pytest.mark.ros
SLOW_NODE = ros_harness.REPO_ROOT / "test" / "slow_planner_node.py"
FAST_CALLS = 2
SLOW_CALL_S = 30.0
# From the first signal to the process exit, seen from outside: the node's shutdown work
# (bounded by SHUTDOWN_BOUND_S, measured by the node itself below) plus the interpreter's
# and DDS's teardown on a loaded 2-core machine. The old behaviour took the whole call.
EXIT_WITHIN_S = 5.0


def _model_plans(inbox) -> list:
    """Plans of ticks that called the model (SKIPPED ones never do)."""
    return [p for p in list(inbox.messages) if p.status != PlannerOutput.STATUS_SKIPPED]


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _start_slow_planner(ros_process, *extra: str):
    proc = ros_process("slow_planner_node", "--delay", str(SLOW_CALL_S),
                       "--fast-calls", str(FAST_CALLS), *extra,
                       command=[sys.executable, str(SLOW_NODE)],
                       params={"use_sim_time": True, "rate_hz": 5.0,
                               "model.backend": "constant_velocity"})
    proc.wait_for_output("planning at", timeout=30.0)
    return proc


def _drive_until_the_slow_call(proc, ros_node):
    """Publish the scenario until the first slow model call has started; the plan inbox."""
    scenario = sc.circle_8mps(duration_s=60.0, cameras=sc.default_cameras(width=32, height=32))
    driver = ScenarioPublisher(ros_node.node, scenario, P.PARAMETERS_BY_NAME["camera_topics"].default,
                               ["rgb8"] * 4, publish_clock=True)
    _, plans = ros_node.subscribe("/alpamayo/plan", PlannerOutput, qos=PLAN_QOS)
    for pub in driver.camera_publishers + [driver.odometry_publisher]:
        ros_node.wait_for_publisher_match(pub, timeout=20.0)
    started = f"slow model call {FAST_CALLS + 1} started"
    for t in np.arange(0.0, 50.0, 0.01):
        if started in proc.output():
            return plans
        driver.advance_to(float(t))
        time.sleep(0.01)
        proc.assert_running()
    raise AssertionError(f"no slow model call within 50 s of scenario time\n{proc.describe()}")


def _send(proc, names) -> float:
    """Send the signals: the first, then (once the node said it is shutting down) the rest,
    each after the node had time to take the one before. Returns when the first was sent."""
    os_signals = [getattr(signal, n) for n in names]
    proc.popen.send_signal(os_signals[0])
    sent = time.monotonic()
    if len(os_signals) > 1:
        proc.wait_for_output(r"shutting down \(", timeout=EXIT_WITHIN_S)
        for sig in os_signals[1:]:
            time.sleep(0.05)  # spacing, so the signals do not merge into one pending signal
            if proc.is_running():
                proc.popen.send_signal(sig)
    return sent


def _shutdown_seconds(output: str) -> float:
    match = re.search(r"shut down in ([0-9.]+) s", output)
    assert match, output[-3000:]
    return float(match.group(1))


@pytest.mark.parametrize("names", [("SIGINT",), ("SIGTERM",), ("SIGINT", "SIGINT", "SIGINT"),
                                   ("SIGINT", "SIGTERM", "SIGINT", "SIGINT", "SIGTERM")],
                         ids=["sigint", "sigterm", "3xsigint", "5xmixed"])
def test_signals_during_a_model_call_stop_within_the_bound(ros_process, ros_node, names):
    proc = _start_slow_planner(ros_process)
    plans = _drive_until_the_slow_call(proc, ros_node)
    sent = _send(proc, names)
    code = proc.wait_exit(timeout=EXIT_WITHIN_S)
    elapsed = time.monotonic() - sent
    out = proc.output()
    assert code == 0, proc.describe()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    assert elapsed < EXIT_WITHIN_S
    assert _shutdown_seconds(out) <= SHUTDOWN_BOUND_S
    # The 30 s call was abandoned, not waited for.
    assert "abandoned" in out and f"slow model call {FAST_CALLS + 1} finished" not in out
    if len(names) > 1:
        assert "further signal(s) ignored" in out
    # The fast calls' plans arrive; the slow call's plan never does.
    assert _wait(lambda: len(_model_plans(plans)) >= FAST_CALLS, 5.0)
    assert not _wait(lambda: len(_model_plans(plans)) > FAST_CALLS, 1.0), \
        [(p.status, p.status_reason) for p in _model_plans(plans)]


def test_a_call_ending_during_shutdown_is_not_published(ros_process, ros_node, tmp_path):
    """The call returns while close() waits for it: the worker ends (no abandoning, a
    normal exit), and its result, ready after the signal, is dropped."""
    release = tmp_path / "release"
    proc = _start_slow_planner(ros_process, "--release-file", str(release))
    plans = _drive_until_the_slow_call(proc, ros_node)
    _send(proc, ["SIGINT"])
    proc.wait_for_output(r"shutting down \(SIGINT\)", timeout=EXIT_WITHIN_S)
    release.touch()
    assert proc.wait_exit(timeout=EXIT_WITHIN_S) == 0
    out = proc.output()
    finished = out.index(f"slow model call {FAST_CALLS + 1} finished")
    assert out.index("shutting down (SIGINT)") < finished < out.index("shut down in")
    assert "abandoned" not in out and "Traceback" not in out
    assert _wait(lambda: len(_model_plans(plans)) >= FAST_CALLS, 5.0)
    assert not _wait(lambda: len(_model_plans(plans)) > FAST_CALLS, 1.0)


def test_a_signal_while_the_model_loads_exits_at_once(ros_process):
    proc = ros_process("slow_planner_node", "--delay", "0", "--load-delay", str(SLOW_CALL_S),
                       command=[sys.executable, str(SLOW_NODE)],
                       params={"model.backend": "constant_velocity"})
    proc.wait_for_output("slow model load started", timeout=30.0)
    proc.popen.send_signal(signal.SIGINT)
    sent = time.monotonic()
    assert proc.wait_exit(timeout=EXIT_WITHIN_S) == 0
    assert time.monotonic() - sent < EXIT_WITHIN_S
    out = proc.output()
    assert "SIGINT during start-up: exiting" in out
    assert "Traceback" not in out and "planning at" not in out


@pytest.mark.parametrize("names", [("SIGINT",), ("SIGTERM", "SIGINT", "SIGINT")],
                         ids=["sigint", "sigterm+2xsigint"])
def test_synthetic_sensors_shut_down_cleanly(ros_process, names):
    proc = ros_process("synthetic_sensors", params={"width": 32, "height": 32})
    proc.wait_for_output("scenario", timeout=20.0)
    sent = _send(proc, names)
    assert proc.wait_exit(timeout=EXIT_WITHIN_S) == 0, proc.describe()
    assert time.monotonic() - sent < EXIT_WITHIN_S
    out = proc.output()
    assert "Traceback" not in out
    assert _shutdown_seconds(out) <= SHUTDOWN_BOUND_S
