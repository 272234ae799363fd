"""The planner node in-process: threading (drop-while-busy), model failures and bad inputs.

The PlannerNode runs in its own rclpy Context and a SingleThreadedExecutor (as in main);
the test drives it over DDS from the ros_node fixture with a sim clock and a scripted scenario
(ScenarioPublisher, explicit header stamps). Models are injected through the node's
model_loader so failures (exceptions, CUDA OOM) and slow inference can be provoked.
The constant-velocity model keeps these tests light; the real tiny model runs in
test_node_e2e.py.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from nav_msgs.msg import Path  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from alpamayo_ros.core.kinematic_model import ConstantVelocityModel  # noqa: E402
from alpamayo_ros.msg import PlannerOutput  # noqa: E402
from alpamayo_ros.core import planner_params as P  # noqa: E402
from alpamayo_ros.core.types import ModelDescription  # noqa: E402
from alpamayo_ros.ros.convert import time_to_ns  # noqa: E402
from alpamayo_ros.ros.planner_node import PlannerNode  # noqa: E402
from alpamayo_ros.ros.qos import PLAN_QOS  # noqa: E402
from alpamayo_ros.ros.scenario_publisher import ScenarioPublisher, rgb_to_image  # noqa: E402
from alpamayo_ros.tools import scenario as sc  # noqa: E402

pytestmark = pytest.mark.ros
TOPICS = P.PARAMETERS_BY_NAME["camera_topics"].default


class FlakyModel(ConstantVelocityModel):
    """Constant-velocity model that raises on chosen calls and can be slow (wall seconds)."""

    def __init__(self, fail_calls=(), error=None, delay_s=0.0):
        super().__init__()
        self.fail_calls, self.error, self.delay_s = set(fail_calls), error, delay_s
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def predict(self, model_input, options=None, initial_noise=None):
        with self._lock:
            self.calls += 1
            call = self.calls
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay_s)
            if call in self.fail_calls:
                raise self.error
            return super().predict(model_input)
        finally:
            with self._lock:
                self.active -= 1


class Rig:
    """PlannerNode (own context, sim time) + a scenario publisher and recorders in ros_node."""

    def __init__(self, ros_node, model=None, params=None, encodings=("rgb8",) * 4,
                 transports=("raw",) * 4, scenario=None):
        self.model = model or FlakyModel()
        overrides = {"model.backend": "constant_velocity", "rate_hz": 5.0,
                     "use_sim_time": True, "camera_transports": list(transports),
                     "diagnostics.period": 0.5, **(params or {})}
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=ros_node.domain_id)

        def loader(values):
            return self.model, ModelDescription("", "flaky", "cpu", "float64",
                                                P.inference_options(values))

        self.node = PlannerNode(model_loader=loader, context=self.context,
                                parameter_overrides=[Parameter(k, value=v)
                                                     for k, v in overrides.items()])
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

        self.test = ros_node
        self.scenario = scenario or sc.circle_8mps(
            duration_s=30.0, cameras=sc.default_cameras(width=32, height=32,
                                                         phases_s=(0.0, 0.01, 0.02, 0.03)))
        self.driver = ScenarioPublisher(ros_node.node, self.scenario, TOPICS, list(encodings),
                                        publish_clock=True)
        self.plans = self._record("/alpamayo/plan", PlannerOutput)
        self.paths = self._record("/alpamayo/path", Path)
        self.diagnostics = self._record("/diagnostics", DiagnosticArray)
        self.markers = self._record("/alpamayo/markers", MarkerArray)
        for pub in self.driver.camera_publishers + [self.driver.odometry_publisher]:
            ros_node.wait_for_publisher_match(pub)

    def _spin(self):
        from alpamayo_ros.ros.spin import spin_until_shutdown
        spin_until_shutdown(self.executor, self.context)

    def _record(self, topic, msg_type):
        _, inbox = self.test.subscribe(topic, msg_type, qos=PLAN_QOS)
        return inbox

    def run(self, t_from, t_to, dt=0.01, wall_per_step=0.005):
        """Advance scenario (sim) time from t_from to t_to [s], pacing on the wall clock."""
        for t in np.arange(t_from, t_to + 1e-9, dt):
            self.driver.advance_to(float(t))
            time.sleep(wall_per_step)

    def clock_only(self, t_from, t_to, dt=0.01, wall_per_step=0.005):
        """Advance /clock only (the sensors stay silent)."""
        for t in np.arange(t_from, t_to + 1e-9, dt):
            self.driver.publish_clock(float(t))
            time.sleep(wall_per_step)

    def wait_plans(self, predicate, timeout=10.0, what="plans"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(self.plans.messages)):
                return list(self.plans.messages)
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; have statuses "
                             f"{[(m.status, m.status_reason[:60]) for m in self.plans.messages]}")

    def wait_status(self, predicate, timeout=10.0, what="diagnostics"):
        """The first DiagnosticStatus (of any array received so far) matching predicate."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for array in list(self.diagnostics.messages):
                for status in array.status:
                    if predicate(status):
                        return status
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def last_status(self, name_suffix):
        for array in reversed(self.diagnostics.messages):
            for status in array.status:
                if status.name.endswith(name_suffix):
                    return status
        raise AssertionError(f"no diagnostics named *{name_suffix}")

    def close(self):
        self.node.close()
        rclpy.shutdown(context=self.context)
        self._thread.join(5.0)
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def rig_factory(ros_node):
    rigs = []

    def make(**kwargs):
        rig = Rig(ros_node, **kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def _values(status: DiagnosticStatus) -> dict:
    return {kv.key: kv.value for kv in status.values}


def _ok(plans):
    return [p for p in plans if p.status == PlannerOutput.STATUS_OK]


def test_plans_flow_and_are_stamped_with_t0(rig_factory):
    rig = rig_factory()
    rig.run(0.0, 3.0)
    plans = rig.wait_plans(lambda ps: len(_ok(ps)) >= 3)
    for plan in _ok(plans):
        t0 = time_to_ns(plan.header.stamp)
        assert t0 in {time_to_ns(s) for s in plan.inputs.frame_stamps}
        assert plan.timing.latency >= 0.0
        # Wall-clock latency from the newest frame's arrival, and tick -> model start.
        assert plan.timing.latency_wall > 0.0 and plan.timing.tick_to_model_start > 0.0
        assert time_to_ns(plan.tick_stamp) >= t0
    assert len(rig.paths.messages) >= 3
    assert rig.last_status("planner").level == DiagnosticStatus.OK
    ok_t0 = {time_to_ns(p.header.stamp) for p in _ok(plans)}
    assert rig.markers.messages
    for array in rig.markers.messages:
        lines = [m for m in array.markers if m.type == Marker.LINE_STRIP]
        assert lines and not any(m.frame_locked for m in lines)
        assert all(m.header.frame_id == plans[-1].odom_frame_id for m in lines)
        assert time_to_ns(lines[0].header.stamp) in ok_t0


def test_ticks_while_the_model_runs_are_dropped_not_queued(rig_factory):
    model = FlakyModel(delay_s=0.6)
    rig = rig_factory(model=model, params={"rate_hz": 20.0})
    started = time.monotonic()
    rig.run(0.0, 4.0)  # >= 2 s of wall time: ~80 ticks of sim time, each inference 0.6 s
    rig.wait_plans(lambda ps: len(_ok(ps)) >= 1)
    time.sleep(1.0)
    rig.run(4.0, 4.6)  # let a diagnostics period pass after the last inference
    wall = time.monotonic() - started
    values = _values(rig.last_status("planner"))
    assert model.max_active == 1
    assert int(values["dropped_ticks"]) >= 10
    # Every accepted tick ran the model once (counted by the model), no backlog.
    assert model.calls <= int(values["ticks"]) - int(values["dropped_ticks"])
    # Serial 0.6 s inferences: no more calls than fit into the wall time (a queue of the
    # ~80 ticks would show up here). The bound follows the wall time of a loaded machine.
    assert model.calls <= wall / model.delay_s + 1
    # Sensor callbacks kept flowing while the model slept: odometry at ~50 Hz sim rate.
    odometry = _values(rig.last_status("odometry"))
    assert int(odometry["received"]) >= 150


@pytest.mark.parametrize("error", [RuntimeError("boom in the expert"),
                                   MemoryError("CUDA out of memory. Tried to allocate 2 GiB")])
def test_model_failure_is_reported_and_the_node_keeps_serving(rig_factory, error):
    model = FlakyModel(fail_calls={1, 2}, error=error)
    rig = rig_factory(model=model)
    rig.run(0.0, 3.5)
    plans = rig.wait_plans(lambda ps: any(p.status == PlannerOutput.STATUS_MODEL_ERROR
                                          for p in ps) and len(_ok(ps)) >= 2)
    failed = [p for p in plans if p.status == PlannerOutput.STATUS_MODEL_ERROR]
    assert str(error) in failed[0].status_reason
    assert failed[0].candidates == []
    # A failed tick never reaches the path consumers.
    assert len(rig.paths.messages) == len(_ok(plans))
    # Reported even when later ticks succeeded before the next diagnostics period.
    status = rig.wait_status(lambda s: s.level == DiagnosticStatus.ERROR
                             and "model error" in s.message, what="a model error status")
    assert str(error) in status.message


def test_unsupported_encoding_is_rejected_and_never_planned(rig_factory):
    rig = rig_factory()

    def to_16bit(slot, t, msg):
        if slot == 2:
            msg.encoding = "16UC1"
        return msg

    rig.driver.frame_filter = to_16bit
    rig.run(0.0, 3.0)
    plans = rig.wait_plans(lambda ps: len(ps) >= 5)
    assert not _ok(plans) and not rig.paths.messages
    assert all(p.status == PlannerOutput.STATUS_SKIPPED for p in plans)
    assert "no frame received yet" in plans[-1].status_reason
    assert plans[-1].reason_code == PlannerOutput.REASON_NO_FRAME
    # The camera's status names the rejection, not mere staleness.
    camera = rig.wait_status(lambda s: s.name.endswith("cross_right_120fov")
                             and s.level == DiagnosticStatus.ERROR, what="a camera error")
    assert "every message rejected" in camera.message and "16UC1" in camera.message
    assert int(_values(camera)["rejected"]) >= 1


def test_corrupt_jpeg_skips_the_tick_then_recovers(rig_factory):
    rig = rig_factory(encodings=("rgb8", "jpeg", "rgb8", "rgb8"),
                      transports=("raw", "compressed", "raw", "raw"))

    def corrupt(slot, t, msg):
        if slot == 1 and 1.5 <= t < 2.5:
            msg.data = bytes(msg.data)[:30]  # valid signature, truncated stream
        return msg

    rig.driver.frame_filter = corrupt
    rig.run(0.0, 4.5)
    plans = rig.wait_plans(lambda ps: any("cannot be decoded" in p.status_reason for p in ps)
                           and len(_ok(ps)) >= 2, what="a decode skip and later plans")
    bad = [p for p in plans if "cannot be decoded" in p.status_reason]
    assert all(p.status == PlannerOutput.STATUS_SKIPPED and not p.candidates for p in bad)
    assert time_to_ns(_ok(plans)[-1].header.stamp) > rig.scenario.stamp_ns(2.8)


def test_image_size_change_skips_ticks_with_mixed_sizes(rig_factory):
    rig = rig_factory()

    def grow(slot, t, msg):
        return _resized(msg, 48) if slot == 0 and t >= 2.0 else msg

    rig.driver.frame_filter = grow
    rig.run(0.0, 3.5)
    plans = rig.wait_plans(lambda ps: any("frame sizes differ" in p.status_reason for p in ps),
                           what="a size-mismatch skip")
    assert _ok(plans), "plans before the size change"
    ok_after = [p for p in _ok(plans) if time_to_ns(p.header.stamp) >= rig.scenario.stamp_ns(2.0)]
    # Until all 16 selected frames share a size nothing is planned; afterwards camera 0 stays
    # wider than the others, so no plan at all may mix them.
    assert not ok_after


def _resized(msg, width):
    out = rgb_to_image(np.full((msg.height, width, 3), 90, np.uint8), "rgb8")
    out.header = msg.header
    return out


def test_non_finite_odometry_is_rejected(rig_factory):
    rig = rig_factory()
    original = rig.driver.odometry_msg

    def poisoned(t):
        msg = original(t)
        if 1.8 <= t < 2.0:
            msg.pose.pose.position.x = float("nan")
        return msg

    rig.driver.odometry_msg = poisoned
    rig.run(0.0, 4.0)
    plans = rig.wait_plans(lambda ps: len(_ok(ps)) >= 3)
    for plan in _ok(plans):
        assert all(np.isfinite(p.position.x) for p in plan.inputs.history_poses)
        assert all(np.isfinite(p.position.x) for c in plan.candidates for p in c.poses)
    odometry = _values(rig.last_status("odometry"))
    assert int(odometry["rejected"]) == 10  # 0.2 s at 50 Hz
    assert "non-finite" in odometry["last_reject_reason"]


def test_stale_inputs_skip_ticks(rig_factory):
    rig = rig_factory()
    rig.run(0.0, 2.5)
    rig.wait_plans(lambda ps: len(_ok(ps)) >= 1)
    # The clock goes on, the sensors go silent.
    for t in np.arange(2.5, 4.0, 0.01):
        rig.driver.publish_clock(float(t))
        time.sleep(0.005)
    plans = rig.wait_plans(lambda ps: any("stale" in p.status_reason for p in ps))
    stale = [p for p in plans if "stale" in p.status_reason]
    assert all(p.status == PlannerOutput.STATUS_SKIPPED for p in stale)
    ok_stamps = [time_to_ns(p.header.stamp) for p in _ok(plans)]
    assert max(ok_stamps) <= rig.scenario.stamp_ns(2.5)
    rig.clock_only(4.0, 4.6)  # one more diagnostics period, sensors still silent
    assert rig.last_status("front_wide_120fov").level == DiagnosticStatus.STALE


def test_stamps_going_backwards_clear_the_buffers(rig_factory):
    rig = rig_factory()
    rig.run(0.0, 3.0)
    rig.wait_plans(lambda ps: len(_ok(ps)) >= 2)
    # Restart the same scenario 10 s earlier (a bag loop): stamps and /clock go back.
    start = rig.scenario.start_stamp_ns
    rig.scenario.start_stamp_ns = start - 10 * 1_000_000_000
    rig.driver.rewind()
    n_before = len(rig.plans.messages)
    rig.run(0.0, 3.0)
    plans = rig.wait_plans(lambda ps: len(_ok(ps[n_before:])) >= 2)
    after = plans[n_before:]
    restart_ns = start - 10 * 1_000_000_000
    for plan in _ok(after):
        t0 = time_to_ns(plan.header.stamp)
        if t0 < restart_ns + 3 * 1_000_000_000:
            # Planned on the new timeline only: every frame and history pose is after it.
            assert all(restart_ns <= time_to_ns(s) <= t0 for s in plan.inputs.frame_stamps)
            assert time_to_ns(plan.inputs.odometry_newest) <= t0 + 1_000_000_000
    rig.run(3.0, 3.6)
    assert int(_values(rig.last_status("planner"))["input_resets"]) >= 1


def test_clock_jump_clears_the_buffers_and_names_the_cause(monkeypatch, ros_domain_id):
    """A jump back beyond time_jump_tolerance and a time source switch reset the core; the
    log says which one it was (a time source switch is not a jump back by -delta). Steps
    back below the tolerance (a bag's /clock rounding) are jitter: counted, no reset."""
    from types import SimpleNamespace

    from rclpy.clock import ClockChange, TimeJump
    from rclpy.duration import Duration

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    node = None
    try:
        node = PlannerNode(context=context, parameter_overrides=[
            Parameter("model.backend", value="constant_velocity")])
        warnings, resets = [], []
        monkeypatch.setattr(node, "get_logger", lambda: SimpleNamespace(
            warning=lambda text, **_: warnings.append(text)))
        monkeypatch.setattr(node._configured.core, "reset",
                            lambda now_ns, why: resets.append(why))
        node._on_clock_jump(TimeJump(ClockChange.ROS_TIME_NO_CHANGE, Duration(nanoseconds=-1)))
        node._on_clock_jump(TimeJump(ClockChange.ROS_TIME_NO_CHANGE,
                                     Duration(nanoseconds=-900_000_000)))
        assert resets == [] and node._configured.health.clock_jitter == 2
        node._on_clock_jump(TimeJump(ClockChange.ROS_TIME_NO_CHANGE, Duration(seconds=-2)))
        node._on_clock_jump(TimeJump(ClockChange.ROS_TIME_ACTIVATED, Duration(seconds=0)))
        assert len(resets) == 2
        assert warnings[0] == "the node clock jumped back 2.000 s: cleared all buffers"
        assert "ROS_TIME_ACTIVATED" in warnings[1] and "jumped back" not in warnings[1]
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.shutdown(context=context)


def test_clock_jitter_is_not_a_reset(rig_factory):
    """/clock stepping back by half a microsecond after every step (a bag's float-rounded
    clock next to another): counted as jitter, no buffer is cleared, plans go on."""
    rig = rig_factory()
    for t in np.arange(0.0, 3.0 + 1e-9, 0.01):
        rig.driver.advance_to(float(t))
        rig.driver.publish_clock(float(t) - 0.5e-6)
        time.sleep(0.005)
    plans = rig.wait_plans(lambda ps: len(_ok(ps)) >= 5)
    assert all(p.reason_code != PlannerOutput.REASON_CLOCK_RESET for p in plans)
    clock = rig.wait_status(lambda s: s.name.endswith("node clock")
                            and int(_values(s)["jitter_steps"]) > 10,
                            what="jitter counted in the diagnostics")
    assert float(_values(clock)["largest_jitter_s"]) < 1e-5
    assert _values(rig.last_status("planner"))["input_resets"] == "0"


def test_odometry_faults_never_give_an_ok_plan_with_impossible_motion(rig_factory):
    """Through the node: a 100 m relocalisation at 2.0 s, then from 4.5 s two frames
    alternating on the odometry topic. Ticks whose history spans the jump are skipped as
    ODOMETRY_DISCONTINUITY, alternating frames as ODOMETRY_FRAME_CHANGE; every OK plan
    has the true speed (8 m/s)."""
    rig = rig_factory(params={"rate_hz": 10.0})

    def fault(t, msg):
        if t >= 2.0:
            msg.pose.pose.position.x += 100.0
        if t >= 4.5 and int(round(t * 50)) % 2:
            msg.header.frame_id = "map"
        return msg

    rig.driver.odometry_filter = fault
    rig.run(0.0, 6.0)
    plans = rig.wait_plans(lambda ps: any(time_to_ns(p.tick_stamp) >= rig.scenario.stamp_ns(5.8)
                                          for p in ps), timeout=20.0)
    ok = _ok(plans)
    assert ok and all(abs(p.v0 - 8.0) < 0.05 for p in ok)
    codes = {p.reason_code for p in plans if p.status != PlannerOutput.STATUS_OK}
    assert PlannerOutput.REASON_ODOMETRY_DISCONTINUITY in codes
    assert PlannerOutput.REASON_ODOMETRY_FRAME_CHANGE in codes
    after_jump = [p for p in plans
                  if rig.scenario.stamp_ns(2.1) <= time_to_ns(p.tick_stamp)
                  <= rig.scenario.stamp_ns(3.4)]
    assert after_jump and all(p.reason_code == PlannerOutput.REASON_ODOMETRY_DISCONTINUITY
                              for p in after_jump)
    status = rig.wait_status(lambda s: s.name.endswith("planner")
                             and int(_values(s)["odometry_frame_changes"]) > 0,
                             what="frame changes in the diagnostics")
    assert "'odom'" in _values(status)["last_odometry_frame_change"]


@pytest.mark.parametrize("timeout_s, finished", [(0.2, False), (5.0, True)],
                         ids=["abandoned", "waited"])
def test_close_during_a_model_call_publishes_nothing_more(rig_factory, timeout_s, finished):
    """close() returns within its timeout (False: the call is abandoned) or once the call
    ended (True); either way the call's result is never published, although the context
    stays valid (a lifecycle deactivation, or close() before rclpy shuts down)."""
    model = FlakyModel(delay_s=1.5)
    rig = rig_factory(model=model)
    t = 0.0
    while model.active == 0:  # drive until a model call runs
        assert t < 20.0, "no model call"
        rig.run(t, t + 0.1)
        t += 0.1
    calls = model.calls

    def planned(plans):  # plans of ticks that called the model
        return len([p for p in plans if p.status != PlannerOutput.STATUS_SKIPPED])

    started = time.monotonic()
    assert rig.node.close(timeout_s=timeout_s) is finished
    assert time.monotonic() - started < timeout_s + 1.0
    deadline = time.monotonic() + 5.0
    while model.active and time.monotonic() < deadline:  # the abandoned call ends on its own
        time.sleep(0.02)
    assert model.active == 0 and model.calls == calls
    rig.run(t, t + 1.0)  # ticks after close() start nothing
    assert model.calls == calls
    assert rig.context.ok()
    rig.wait_plans(lambda ps: planned(ps) >= calls - 1)  # every earlier call's plan
    with pytest.raises(AssertionError):  # but none of the call running at close()
        rig.wait_plans(lambda ps: planned(ps) >= calls, timeout=1.0)


def test_cleanup_releases_the_model(ros_domain_id):
    """cleanup destroys what configure made and drops the model (its close() runs; a
    runtime then returns its memory, GPU memory included)."""
    import gc
    import weakref

    from alpamayo_ros.core.kinematic_model import ConstantVelocityModel

    class ClosableModel(ConstantVelocityModel):
        closed = 0

        def close(self):
            ClosableModel.closed += 1

    refs = []

    def loader(values):
        model = ClosableModel()
        refs.append(weakref.ref(model))
        return model, ModelDescription("", "closable", "cpu", "float64",
                                       P.inference_options(values))

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    node = PlannerNode(model_loader=loader, context=context, parameter_overrides=[
        Parameter("model.backend", value="constant_velocity")])
    try:
        assert refs[0]() is not None and node._configured is not None
        from rclpy.lifecycle import TransitionCallbackReturn
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        gc.collect()
        assert node._configured is None and ClosableModel.closed == 1
        assert refs[0]() is None
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS  # a new model
        assert len(refs) == 2 and refs[1]() is not None
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown(context=context)
