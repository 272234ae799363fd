"""The planner node in-process: threading (drop-while-busy), model failures and bad inputs.

The PlannerNode runs in its own rclpy Context and a SingleThreadedExecutor (as in main);
the test drives it over DDS from the ros_node fixture with a sim clock and a scripted scenario
(ScenarioPublisher, explicit header stamps). Models are injected through the node's
model_loader so failures (exceptions, CUDA OOM) and a busy worker can be provoked.
The constant-velocity model keeps these tests light; the real tiny model runs in
test_node_e2e.py.

No fixed sleeps and no wall-clock bounds: the rig steps sim time and waits, after each
/clock message, until the node's clock shows it (a jump callback on the node's clock); a
busy model holds the worker until the test releases it; outputs and diagnostics are
awaited as messages. Wall time only bounds the waits (timeouts).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from nav_msgs.msg import Path  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402
from rclpy.clock import JumpThreshold  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from alpamayo_ros.core.kinematic_model import ConstantVelocityModel  # noqa: E402
from alpamayo_ros.msg import PlannerOutput  # noqa: E402
from alpamayo_ros.core import planner_params as P  # noqa: E402
from alpamayo_ros.core.types import InferencePath, ModelDescription  # noqa: E402
from alpamayo_ros.ros.convert import time_to_ns  # noqa: E402
from alpamayo_ros.ros.planner_node import PlannerNode  # noqa: E402
from alpamayo_ros.ros.qos import PLAN_QOS  # noqa: E402
from alpamayo_ros.testbed.scenario_publisher import ScenarioPublisher, rgb_to_image  # noqa: E402
from alpamayo_ros.sim import scenario as sc  # noqa: E402

pytestmark = pytest.mark.ros
TOPICS = P.PARAMETERS_BY_NAME["camera_topics"].default
TIMEOUT_S = 10.0  # for every wait; generous, as the machine may be loaded


class FlakyModel(ConstantVelocityModel):
    """Constant-velocity model that raises on chosen calls and, with held=True, keeps each
    call (and so the node's worker) busy until the test lets it return: ``allow(n)`` lets
    n calls return, ``release_all()`` every call from then on."""

    def __init__(self, fail_calls=(), error=None, held=False):
        super().__init__()
        self.fail_calls, self.error = set(fail_calls), error
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._cond = threading.Condition()
        self._permits = 0
        self._free = not held

    def allow(self, n=1):
        with self._cond:
            self._permits += n
            self._cond.notify_all()

    def release_all(self):
        with self._cond:
            self._free = True
            self._cond.notify_all()

    def wait_calls(self, n, timeout=TIMEOUT_S):
        """True once the n-th call has begun."""
        with self._cond:
            return self._cond.wait_for(lambda: self.calls >= n, timeout)

    def predict(self, model_input, options=None, initial_noise=None):
        with self._cond:
            self.calls += 1
            call = self.calls
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self._cond.notify_all()
        try:
            with self._cond:
                if not self._cond.wait_for(lambda: self._free or self._permits > 0,
                                           TIMEOUT_S * 6):
                    raise TimeoutError("a held model call was never let return by the test")
                if not self._free:
                    self._permits -= 1
            if call in self.fail_calls:
                raise self.error
            return super().predict(model_input)
        finally:
            with self._cond:
                self.active -= 1


class FallenBackModel(FlakyModel):
    """A model whose warm-up switched it from its fast path to its eager one, as
    AlpamayoRuntime does when the fast path fails its self-check."""

    def __init__(self):
        super().__init__()
        self.path = InferencePath("fast")

    def warmup(self, options, frame_shape, camera_indices=None):
        self.path = InferencePath("eager", "fast path switched off at warm-up: its first "
                                  "Euler step differs from the eager path's by 0.01")
        return 0.0

    def inference_path(self):
        return self.path


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
        # Every /clock message moves the node's clock; the jump callback wakes wait_clock.
        self._clock_changed = threading.Condition()
        self._jump_handle = self.node.get_clock().create_jump_callback(
            JumpThreshold(min_forward=Duration(nanoseconds=1),
                          min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=self._on_clock_jump)

    def _spin(self):
        from alpamayo_ros.ros.spin import spin_until_shutdown
        spin_until_shutdown(self.executor, self.context)

    def _record(self, topic, msg_type):
        _, inbox = self.test.subscribe(topic, msg_type, qos=PLAN_QOS)
        return inbox

    def _on_clock_jump(self, _jump):
        with self._clock_changed:
            self._clock_changed.notify_all()

    def wait_clock(self, t):
        """Wait until the node's clock reads scenario time t exactly (its /clock message
        was processed); the message is sent again if it seems lost (best-effort /clock)."""
        target = int(self.scenario.stamp_ns(t))
        clock = self.node.get_clock()
        for _ in range(5):
            with self._clock_changed:
                if self._clock_changed.wait_for(lambda: clock.now().nanoseconds == target,
                                                TIMEOUT_S / 5):
                    return
            self.driver.publish_clock(t)
        raise AssertionError(f"the node's clock never reached t = {t:.2f} s: it reads "
                             f"{(clock.now().nanoseconds - self.scenario.start_stamp_ns) / 1e9:.3f} s")

    def run(self, t_from, t_to, dt=0.01):
        """Advance scenario (sim) time from t_from to t_to [s], one /clock step at a time."""
        for t in np.arange(t_from, t_to + 1e-9, dt):
            self.driver.advance_to(float(t))
            self.wait_clock(float(t))

    def clock_only(self, t_from, t_to, dt=0.01):
        """Advance /clock only (the sensors stay silent)."""
        for t in np.arange(t_from, t_to + 1e-9, dt):
            self.driver.publish_clock(float(t))
            self.wait_clock(float(t))

    def wait_plans(self, predicate, timeout=TIMEOUT_S, what="plans"):
        def describe():
            return [(m.status, m.status_reason[:60]) for m in self.plans.messages]
        try:
            return self.plans.wait_until(predicate, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; have statuses {describe()}") from None

    def drain(self, t_from, t_to):
        """Advance /clock only to t_to, a diagnostics time between two ticks, then wait
        until every tick the node accepted has published its plan, and every OK plan its
        path and markers. Nothing is published after that (no tick comes before the
        clock moves again); returns the plans."""
        self.clock_only(t_from, t_to)
        report = _values(self.status_at("planner", t_to))
        accepted = int(report["ticks"]) - int(report["dropped_ticks"])
        self.wait_plans(lambda ps: len(ps) >= accepted, what=f"{accepted} plans")

        def settled():
            ok = len(_ok(self.plans.messages))
            return len(self.paths.messages) == ok and len(self.markers.messages) == ok

        self.test.wait_until(settled, TIMEOUT_S, "a path and markers for every OK plan")
        return list(self.plans.messages)

    def wait_status(self, predicate, timeout=TIMEOUT_S, what="diagnostics"):
        """The first DiagnosticStatus (of any array received so far) matching predicate."""
        def found(arrays):
            return next((s for a in arrays for s in a.status if predicate(s)), None)

        return found(self.diagnostics.wait_until(lambda arrays: found(arrays) is not None,
                                                 timeout, what))

    def diagnostics_mark(self):
        """Position in the diagnostics stream; status_at(..., since=mark) looks only after
        it (after a rewind, older arrays carry later stamps)."""
        return len(self.diagnostics.messages)

    def status_at(self, name_suffix, t, since=0):
        """The status *name_suffix of the first diagnostics array stamped in [t, t + 1 s)
        of scenario time and received after `since`; waits for it. (Arrays of an earlier
        timeline, still arriving after a rewind, carry later stamps.)"""
        target = int(self.scenario.stamp_ns(t))

        def found(arrays):
            return next((s for a in arrays[since:]
                         if 0 <= time_to_ns(a.header.stamp) - target < 1_000_000_000
                         for s in a.status if s.name.endswith(name_suffix)), None)

        arrays = self.diagnostics.wait_until(lambda arrays: found(arrays) is not None,
                                             TIMEOUT_S, f"diagnostics *{name_suffix} at "
                                             f"t >= {t:.2f} s")
        return found(arrays)

    def close(self):
        self.model.release_all()  # a held model call must end for the worker to stop
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
    plans = rig.drain(3.01, 3.5)
    assert len(_ok(plans)) >= 3
    for plan in _ok(plans):
        t0 = time_to_ns(plan.header.stamp)
        assert t0 in {time_to_ns(s) for s in plan.inputs.frame_stamps}
        assert plan.timing.latency >= 0.0
        # Wall-clock latency from the newest frame's arrival, and tick -> model start.
        assert plan.timing.latency_wall > 0.0 and plan.timing.tick_to_model_start > 0.0
        assert time_to_ns(plan.tick_stamp) >= t0
    assert len(rig.paths.messages) >= 3
    planner = rig.status_at("planner", 3.0)
    # OK; or WARN for a tick dropped while the worker was busy, which happens when a loaded
    # machine steps sim time faster than the worker runs (test_ticks_while_the_model_runs_...
    # covers drops). Nothing else.
    if planner.level != DiagnosticStatus.OK:
        assert planner.level == DiagnosticStatus.WARN, (planner.message, _values(planner))
        assert planner.message.endswith("dropped while the model was busy"), planner.message
    assert _values(planner)["last_outcome"] == "planned"
    ok_t0 = {time_to_ns(p.header.stamp) for p in _ok(plans)}
    assert rig.markers.messages
    for array in rig.markers.messages:
        lines = [m for m in array.markers if m.type == Marker.LINE_STRIP]
        # Drawn in the odometry frame at t0: they stay where the plan was made.
        assert lines and not any(m.frame_locked for m in lines)
        assert all(m.header.frame_id == plans[-1].odom_frame_id for m in lines)
        assert time_to_ns(lines[0].header.stamp) in ok_t0


def _accepted(status):
    values = _values(status)
    return int(values["ticks"]) - int(values["dropped_ticks"])


def test_ticks_while_the_model_runs_are_dropped_not_queued(rig_factory):
    """A model call holds the worker while 2 s of 20 Hz ticks and sensor data arrive: every
    one of those ticks is dropped and counted, and sensor callbacks keep running. When the
    call returns, the next call serves the next tick, not one of the busy period (nothing
    was queued)."""
    model = FlakyModel(held=True)
    rig = rig_factory(model=model, params={"rate_hz": 20.0})
    rig.run(0.0, 2.0)
    assert model.wait_calls(1), "no tick reached the model"
    rig.run(2.01, 2.5)
    before = rig.status_at("planner", 2.5)
    odometry_before = rig.status_at("odometry", 2.5)
    rig.run(2.51, 4.5)  # 40 tick periods while the first call still runs
    busy = rig.status_at("planner", 4.5)
    odometry_busy = rig.status_at("odometry", 4.5)
    assert model.calls == 1 and model.active == 1  # still inside the first call
    ticks = int(_values(busy)["ticks"]) - int(_values(before)["ticks"])
    assert ticks >= 38 and _accepted(busy) == _accepted(before)  # every tick was dropped
    # Sensor callbacks kept flowing while the worker was busy: odometry at 50 Hz sim rate.
    received = (int(_values(odometry_busy)["received"])
                - int(_values(odometry_before)["received"]))
    assert received >= 95

    # The first call returns with the clock standing still; the next call needs a new tick.
    model.allow(1)
    rig.wait_plans(lambda ps: len(_ok(ps)) >= 1, what="the plan of the first call")
    rig.run(4.51, 4.55)  # one tick
    assert model.wait_calls(2), "the tick after the busy period did not reach the model"
    rig.run(4.56, 5.0)  # the second call holds the worker: these ticks are dropped
    after = rig.status_at("planner", 5.0)
    # Exactly one tick was accepted since the busy period: the one the second call serves.
    # A queue would have started the second call on a tick of the busy period instead and
    # dropped this one.
    assert _accepted(after) - _accepted(busy) == 1
    assert model.calls == 2 and model.max_active == 1

    model.release_all()
    rig.run(5.01, 5.5)
    # Every model call published one plan (skipped ticks never reach the model).
    rig.wait_plans(lambda ps: len([p for p in ps if p.status != PlannerOutput.STATUS_SKIPPED])
                   == model.calls >= 3, what="one plan per model call")
    assert model.max_active == 1


@pytest.mark.parametrize("error", [RuntimeError("boom in the expert"),
                                   MemoryError("CUDA out of memory. Tried to allocate 2 GiB")])
def test_model_failure_is_reported_and_the_node_keeps_serving(rig_factory, error):
    model = FlakyModel(fail_calls={1, 2}, error=error)
    rig = rig_factory(model=model)
    rig.run(0.0, 3.5)
    # A failed tick never reaches the path consumers: paths and markers only for OK plans.
    plans = rig.drain(3.51, 4.5)
    assert len(_ok(plans)) >= 2
    failed = [p for p in plans if p.status == PlannerOutput.STATUS_MODEL_ERROR]
    assert str(error) in failed[0].status_reason
    assert failed[0].candidates == []
    assert len(rig.paths.messages) == len(_ok(plans))
    # Reported even when later ticks succeeded before the next diagnostics period.
    status = rig.wait_status(lambda s: s.level == DiagnosticStatus.ERROR
                             and "model error" in s.message, what="a model error status")
    assert str(error) in status.message


def test_a_fast_path_fallback_at_warmup_is_an_error_in_diagnostics_and_plans(rig_factory):
    """8f: the node says why plans come from the eager path, in /diagnostics (ERROR) and in
    every plan's ModelInfo, while it keeps planning."""
    rig = rig_factory(model=FallenBackModel())
    rig.run(0.0, 3.0)
    plans = _ok(rig.drain(3.01, 3.5))
    assert plans
    for plan in plans:
        assert plan.model.inference_path == "eager"
        assert plan.model.inference_problem.startswith("fast path switched off at warm-up")
    status = rig.wait_status(lambda s: s.name.endswith("model path"),
                             what="the model path status")
    assert status.level == DiagnosticStatus.ERROR
    assert "first Euler step differs from the eager path's by 0.01" in status.message
    assert _values(status)["inference_path"] == "eager"


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
    camera = rig.status_at("cross_right_120fov", 3.0)
    assert camera.level == DiagnosticStatus.ERROR
    assert "every message rejected" in camera.message and "16UC1" in camera.message
    assert "16UC1" in _values(camera)["last_reject_reason"]
    assert int(_values(camera)["rejected"]) > 10


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
    odometry = _values(rig.status_at("odometry", 4.0))
    assert int(odometry["rejected"]) == 10  # 0.2 s at 50 Hz
    assert "non-finite" in odometry["last_reject_reason"]


def test_stale_inputs_skip_ticks(rig_factory):
    rig = rig_factory()
    rig.run(0.0, 2.5)
    rig.wait_plans(lambda ps: len(_ok(ps)) >= 1)
    rig.clock_only(2.51, 4.0)  # the clock goes on, the sensors go silent
    plans = rig.wait_plans(lambda ps: any("stale" in p.status_reason for p in ps))
    stale = [p for p in plans if "stale" in p.status_reason]
    assert all(p.status == PlannerOutput.STATUS_SKIPPED for p in stale)
    ok_stamps = [time_to_ns(p.header.stamp) for p in _ok(plans)]
    assert max(ok_stamps) <= rig.scenario.stamp_ns(2.5)
    rig.clock_only(4.01, 4.5)  # one more diagnostics period, sensors still silent
    assert rig.status_at("front_wide_120fov", 4.5).level == DiagnosticStatus.STALE


def test_stamps_going_backwards_clear_the_buffers(rig_factory):
    rig = rig_factory()
    rig.run(0.0, 3.0)
    rig.wait_plans(lambda ps: len(_ok(ps)) >= 2)
    # Restart the same scenario 10 s earlier (a bag loop): stamps and /clock go back.
    start = rig.scenario.start_stamp_ns
    rig.scenario.start_stamp_ns = start - 10 * 1_000_000_000
    rig.driver.rewind()
    mark = rig.diagnostics_mark()
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
    rig.run(3.01, 3.5)
    assert int(_values(rig.status_at("planner", 3.5, since=mark))["input_resets"]) >= 1


def test_ticks_stay_on_the_periods_multiples_after_the_clock_restarts(rig_factory):
    """A planner that lives on while sim time restarts (a suite's kept planner) and whose
    clock reaches the new time line off the period's multiples (its first /clock of the new
    run is 0.05 s after the restart) still ticks on the multiples k * period, as a fresh
    process: what the controller's lockstep gate waits for. rcl alone re-anchors the timer
    at the first new /clock + period (ticks at 0.25, 0.45, ... here: every lockstep tick
    unanswered). It plans again as soon as 1.5 s of the new time line's history is there."""
    rig = rig_factory()
    period_ns = 200_000_000  # rate_hz 5
    rig.run(0.0, 3.0)
    rig.wait_plans(lambda ps: len(_ok(ps)) >= 2)
    restart_ns = rig.scenario.start_stamp_ns - 10 * 1_000_000_000
    rig.scenario.start_stamp_ns = restart_ns
    rig.driver.rewind()
    n_before = len(rig.plans.messages)
    rig.clock_only(0.05, 0.05)
    rig.run(0.06, 2.5)
    # (the old time line's last plans may still arrive after n_before)
    plans = [p for p in rig.drain(2.51, 2.55)[n_before:]
             if time_to_ns(p.tick_stamp) < restart_ns + 10 * 1_000_000_000]
    ticks = [time_to_ns(p.tick_stamp) - restart_ns for p in plans]
    assert ticks == [k * period_ns for k in range(1, 13)], ticks
    assert [p.status == PlannerOutput.STATUS_OK for p in plans].index(True) <= 8  # by 1.8 s


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
        assert warnings[0] == ("the node clock jumped back 2.000 s: restarted the buffers and "
                               "the ticks")
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
        rig.wait_clock(float(t))
        rig.driver.publish_clock(float(t) - 0.5e-6)
        rig.wait_clock(float(t) - 0.5e-6)
    plans = rig.wait_plans(lambda ps: len(_ok(ps)) >= 5)
    assert all(p.reason_code != PlannerOutput.REASON_CLOCK_RESET for p in plans)
    rig.clock_only(3.01, 3.5)
    clock = rig.status_at("node clock", 3.5)
    assert int(_values(clock)["jitter_steps"]) > 10
    assert float(_values(clock)["largest_jitter_s"]) < 1e-5
    assert _values(rig.status_at("planner", 3.5))["input_resets"] == "0"


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
    plans = rig.drain(6.01, 6.5)
    assert any(time_to_ns(p.tick_stamp) >= rig.scenario.stamp_ns(5.8) for p in plans)
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
    status = _values(rig.status_at("planner", 6.5))
    assert int(status["odometry_frame_changes"]) > 0
    assert "'odom'" in status["last_odometry_frame_change"]


@pytest.mark.parametrize("timeout_s, finished", [(0.2, False), (5.0, True)],
                         ids=["abandoned", "waited"])
def test_close_during_a_model_call_publishes_nothing_more(rig_factory, timeout_s, finished):
    """close() gives up after its timeout (False: the call is abandoned) or returns once
    the call ended (True); either way the call's result is never published, although the context
    stays valid (a lifecycle deactivation, or close() before rclpy shuts down)."""
    model = FlakyModel(held=True)
    model.allow(2)  # two calls return, the third holds the worker
    rig = rig_factory(model=model)
    t = 0.0
    while model.calls < 3:  # drive until the third model call runs
        assert t < 20.0, "no third model call"
        rig.run(t, t + 0.1)
        t += 0.11
    assert model.active == 1
    rig.wait_plans(lambda ps: len(_ok(ps)) >= 2, what="the plans of the first two calls")

    outcome = []
    closer = threading.Thread(target=lambda: outcome.append(rig.node.close(timeout_s=timeout_s)))
    closer.start()
    if finished:  # close() waits for the held call: it returns only after the release
        closer.join(0.3)
        assert closer.is_alive() and not outcome
        model.release_all()
    closer.join(TIMEOUT_S)
    assert outcome == [finished]
    # Waited: the call ended before close() returned. Abandoned: close() returned (after its
    # timeout) although the call is still held.
    assert model.active == (0 if finished else 1)
    model.release_all()  # the abandoned call ends on its own
    rig.test.wait_until(lambda: model.active == 0, TIMEOUT_S, "the held call to end")
    rig.run(t, t + 1.0)  # ticks after close() start nothing
    assert model.calls == 3
    assert rig.context.ok()
    # Give a wrongly published result time to arrive, then check none did.
    with pytest.raises(AssertionError):
        rig.wait_plans(lambda ps: len([p for p in ps
                                       if p.status != PlannerOutput.STATUS_SKIPPED]) >= 3,
                       timeout=1.0)
    assert len(_ok(rig.plans.messages)) == 2


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


def test_no_callback_runs_once_the_node_is_destroyed(ros_domain_id):
    """destroy_node() while an executor in another thread runs the node's diagnostics timer:
    destroy waits for the running callback (which would otherwise publish on a destroyed
    publisher: InvalidHandle in the executor's thread), and no callback starts after it."""
    import time

    entered, started_after_destroy, errors = threading.Event(), [], []
    destroyed = threading.Event()

    class SlowDiagnostics(PlannerNode):
        def _on_diagnostics(self):
            if destroyed.is_set():
                started_after_destroy.append(time.monotonic())
            entered.set()
            time.sleep(0.3)  # a slow callback, so destroy_node() meets it running
            super()._on_diagnostics()

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    node = SlowDiagnostics(context=context, parameter_overrides=[
        Parameter("model.backend", value="constant_velocity"),
        Parameter("diagnostics.period", value=0.1)])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin():
        try:
            executor.spin()
        except Exception as exc:  # what the test is about: nothing may end up here
            if context.ok():
                errors.append(exc)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        entered.clear()
        assert entered.wait(TIMEOUT_S)  # a diagnostics callback is running now
        node.close()
        node.destroy_node()
        destroyed.set()
        time.sleep(0.5)  # the executor goes on spinning
    finally:
        rclpy.shutdown(context=context)
        thread.join(TIMEOUT_S)
        executor.shutdown()
    assert errors == [] and started_after_destroy == []
