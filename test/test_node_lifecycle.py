"""The planner as a managed (lifecycle) node, driven through the lifecycle services of a
real process: configure (loading and warming up reported in /diagnostics, a failing
configure with its reason), activate, deactivate while a model call runs, cleanup,
shutdown; autostart:=false waits for a manager.

The planner runs as test/slow_planner_node.py (the planner_node executable with the
constant-velocity model, whose calls after the first two take --delay seconds, and whose
load takes --load-delay seconds).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
import ros_harness  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402

from alpamayo_ros.core import planner_params as P  # noqa: E402
from alpamayo_ros.msg import PlannerOutput  # noqa: E402
from alpamayo_ros.ros.qos import DIAGNOSTICS_QOS, PLAN_QOS  # noqa: E402
from alpamayo_ros.testbed.scenario_publisher import ScenarioPublisher  # noqa: E402
from alpamayo_ros.sim import scenario as sc  # noqa: E402

pytestmark = pytest.mark.ros
SLOW_NODE = ros_harness.REPO_ROOT / "test" / "slow_planner_node.py"
TOPICS = P.PARAMETERS_BY_NAME["camera_topics"].default


class Manager:
    """A lifecycle manager in the test's node: change_state / get_state of the planner."""

    def __init__(self, ros_node, node_name: str = P.NODE_NAME):
        self.ros_node = ros_node
        self.change = ros_node.node.create_client(ChangeState, f"/{node_name}/change_state")
        self.get = ros_node.node.create_client(GetState, f"/{node_name}/get_state")
        for client in (self.change, self.get):
            assert client.wait_for_service(timeout_sec=30.0), client.srv_name

    def _call(self, client, request, timeout: float):
        future = client.call_async(request)
        self.ros_node.wait_until(future.done, timeout=timeout, what=f"{client.srv_name}")
        return future.result()

    def transition(self, transition_id: int, timeout: float = 30.0) -> bool:
        return self._call(self.change, ChangeState.Request(
            transition=Transition(id=transition_id)), timeout).success

    def state(self) -> int:
        return self._call(self.get, GetState.Request(), 10.0).current_state.id


def _lifecycle_statuses(inbox) -> list:
    return [s for a in list(inbox.messages) for s in a.status if s.name.endswith("lifecycle")]


def _start(ros_process, *extra, **params):
    return ros_process("slow_planner_node", *extra, command=[sys.executable, str(SLOW_NODE)],
                       params={"use_sim_time": True, "rate_hz": 5.0, "autostart": False,
                               "model.backend": "constant_velocity", **params})


def test_every_transition_through_the_lifecycle_services(ros_process, ros_node, tmp_path):
    _, diagnostics = ros_node.subscribe("/diagnostics", DiagnosticArray, qos=DIAGNOSTICS_QOS)
    release = tmp_path / "release"  # ends the slow model calls once it exists
    proc = _start(ros_process, "--delay", "120", "--fast-calls", "4", "--load-delay", "0.6",
                  "--release-file", str(release))
    manager = Manager(ros_node)
    assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
    ros_node.wait_until(lambda: any("unconfigured" in s.message
                                    for s in _lifecycle_statuses(diagnostics)),
                        timeout=10.0, what="'unconfigured' in the diagnostics")
    assert ros_node.node.count_publishers("/alpamayo/plan") == 0  # nothing planned yet

    # configure: loading and warming up are reported while they happen, with durations.
    assert manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == State.PRIMARY_STATE_INACTIVE
    messages = [s.message for s in _lifecycle_statuses(diagnostics)]
    loading = next(i for i, m in enumerate(messages) if m.startswith("loading the model"))
    warming = next(i for i, m in enumerate(messages) if m.startswith("warming up"))
    assert loading < warming
    inactive = [s for s in _lifecycle_statuses(diagnostics) if s.message.startswith("inactive")]
    ros_node.wait_until(lambda: [s for s in _lifecycle_statuses(diagnostics)
                                 if s.message.startswith("inactive")], timeout=10.0,
                        what="'inactive' in the diagnostics")
    inactive = [s for s in _lifecycle_statuses(diagnostics) if s.message.startswith("inactive")]
    values = {kv.key: kv.value for kv in inactive[-1].values}
    assert float(values["load_s"]) >= 0.6 and "warmup_s" in values

    # The subscriptions exist from configure on (buffers fill), but nothing is planned.
    scenario = sc.circle_8mps(duration_s=60.0, cameras=sc.default_cameras(width=32,
                                                                          height=32))
    driver = ScenarioPublisher(ros_node.node, scenario, TOPICS, ["rgb8"] * 4,
                               publish_clock=True)
    _, plans = ros_node.subscribe("/alpamayo/plan", PlannerOutput, qos=PLAN_QOS)
    for pub in driver.camera_publishers + [driver.odometry_publisher]:
        ros_node.wait_for_publisher_match(pub, timeout=20.0)
    t = 0.0

    def drive(seconds: float) -> None:
        nonlocal t
        for step in np.arange(t, t + seconds, 0.01):
            driver.advance_to(float(step))
            time.sleep(0.004)
        t += seconds

    drive(2.0)
    assert not plans.messages

    # activate: plans come (1.5 s of history are buffered already).
    assert manager.transition(Transition.TRANSITION_ACTIVATE)
    assert manager.state() == State.PRIMARY_STATE_ACTIVE
    drive(1.0)
    ros_node.wait_until(lambda: any(p.status == PlannerOutput.STATUS_OK
                                    for p in list(plans.messages)),
                        timeout=20.0, what="an OK plan after activate")

    # deactivate while a (120 s) model call runs: it returns at once, the node stays
    # responsive (services, /diagnostics), the call is abandoned and its result dropped.
    while "slow model call 5 started" not in proc.output():
        assert t < 40.0, proc.describe()
        drive(0.2)
    published = len(plans.messages)
    started = time.monotonic()
    assert manager.transition(Transition.TRANSITION_DEACTIVATE)
    assert manager.state() == State.PRIMARY_STATE_INACTIVE
    assert time.monotonic() - started < 20.0  # not the call's 120 s
    proc.wait_for_output("deactivate: a model call is running; it is abandoned and its "
                         "result will be dropped", timeout=10.0)
    seen = len(diagnostics.messages)
    ros_node.wait_until(lambda: len(diagnostics.messages) >= seen + 3, timeout=20.0,
                        what="/diagnostics while the abandoned call runs")
    # cleanup and configure again under the abandoned call: at once too; the old model is
    # freed when the call returns.
    assert manager.transition(Transition.TRANSITION_CLEANUP)
    proc.wait_for_output("the model is freed once the abandoned model call returns",
                         timeout=10.0)
    assert manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == State.PRIMARY_STATE_INACTIVE
    assert "slow model call 5 finished" not in proc.output()  # still running all along
    release.touch()
    proc.wait_for_output(r"a planning tick abandoned by deactivate ended after [\d.]+ s: "
                         "its result is dropped", timeout=20.0)
    drive(1.0)
    time.sleep(0.5)
    assert len(plans.messages) == published

    # activate again: planning resumes.
    assert manager.transition(Transition.TRANSITION_ACTIVATE)
    drive(0.5)
    ros_node.wait_until(lambda: len(plans.messages) > published, timeout=20.0,
                        what="plans after re-activation")

    # deactivate + cleanup: back to unconfigured, the inputs are gone.
    assert manager.transition(Transition.TRANSITION_DEACTIVATE, timeout=30.0)
    assert manager.transition(Transition.TRANSITION_CLEANUP)
    assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
    ros_node.wait_until(lambda: ros_node.node.count_subscribers(
        "/cameras/front_tele_30fov/image") == 0, timeout=10.0, what="subscriptions gone")

    # configure again works, then shutdown from inactive finalizes the node cleanly.
    assert manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN)
    assert manager.state() == State.PRIMARY_STATE_FINALIZED
    proc.assert_running()
    assert proc.stop() == 0
    assert "Traceback" not in proc.output()


def test_a_failing_configure_reports_its_reason_and_the_node_stays_manageable(
        ros_process, ros_node, tmp_path):
    _, diagnostics = ros_node.subscribe("/diagnostics", DiagnosticArray, qos=DIAGNOSTICS_QOS)
    proc = _start(ros_process, "--delay", "0", **{"model.backend": "alpamayo",
                                                  "model.device": "cpu",
                                                  "model.checkpoint_dir": str(tmp_path / "no")})
    manager = Manager(ros_node)
    assert not manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
    ros_node.wait_until(lambda: any(s.level == DiagnosticStatus.ERROR
                                    and "configure failed: model.checkpoint_dir" in s.message
                                    for s in _lifecycle_statuses(diagnostics)),
                        timeout=10.0, what="the configure error in the diagnostics")
    assert "configure failed: model.checkpoint_dir" in proc.output()
    assert manager.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert proc.stop() == 0 and "Traceback" not in proc.output()


def test_shutdown_from_active_is_clean(ros_process, ros_node):
    proc = _start(ros_process, "--delay", "0", autostart=True)
    proc.wait_for_output("planning at 5 Hz", timeout=30.0)
    manager = Manager(ros_node)
    assert manager.state() == State.PRIMARY_STATE_ACTIVE
    assert manager.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert manager.state() == State.PRIMARY_STATE_FINALIZED
    assert proc.stop() == 0 and "Traceback" not in proc.output()


@pytest.mark.parametrize("autostart", [True, False], ids=["autostart", "managed"])
def test_a_signal_during_configure_logs_no_error(ros_process, ros_node, autostart):
    """SIGINT while configure loads the model (at start-up, or driven by a manager): a
    clean exit with status 0 and no ERROR line (the configure was not a failure)."""
    import signal

    proc = _start(ros_process, "--delay", "0", "--load-delay", "4", autostart=autostart)
    if not autostart:
        manager = Manager(ros_node)
        manager.change.call_async(ChangeState.Request(
            transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
    proc.wait_for_output("slow model load started", timeout=30.0)
    proc.popen.send_signal(signal.SIGINT)
    assert proc.wait_exit(timeout=30.0) == 0, proc.describe()
    out = proc.output()
    assert "ERROR" not in out and "Traceback" not in out, out
    assert "planning at" not in out
