"""The `alpamayo_planner` node: a lifecycle node wiring ROS topics, a timer and a worker
thread to PlannerCore.

Wiring only. Buffers, frame selection, history, the model call and output checks live in
alpamayo_ros.core.planner_core; message conversion in convert.py / markers.py /
diagnostics.py; parameters in params.py; the model in model_loader.py.

Lifecycle (managed node, as Nav2 and Autoware run heavy nodes): parameters are declared at
construction; `configure` checks them, loads the model and warms it up ("loading" and
"warming up" in /diagnostics, with their durations; a bad checkpoint fails the transition
with the readable error) and subscribes to the inputs, so the buffers fill while inactive;
`activate` starts planning (the outputs are lifecycle publishers); `deactivate` stops it
at once: a running model call is abandoned (logged), its result is dropped whenever it
returns, and the node stays responsive meanwhile (services, /diagnostics); `cleanup`
destroys inputs, outputs and the model (model.close() returns its memory; under an
abandoned call, once that call returns); `shutdown` works from any state. With
`autostart` (default) the node configures and activates itself, so the plain executable
and `ros2 launch` plan with no manager; a failing configure then ends the process with
status 2. /diagnostics run on wall time in every state.

Threads: one SingleThreadedExecutor runs the sensor callbacks and the timers; the planning
timer only hands a tick to a daemon worker thread and returns, so frames and odometry
keep flowing while the model runs. A tick that arrives while the worker is busy is dropped
and counted (TickGate), never queued. A MultiThreadedExecutor's threads would only contend
for the GIL (every callback here is short) and, on a small machine, let the node fall
behind 50 Hz odometry plus four cameras (docs/design.md, "Node threads", has the runs that
showed it); the callback groups stay correct under either executor.

Shutdown (close): nothing is published once it began (PublishGate, open only while
active); a model call still running after WORKER_STOP_TIMEOUT_S is abandoned, its result
never published, and run_node leaves the process (ros/spin.py, ros/shutdown.py).
"""
from __future__ import annotations

import enum
import gc
import sys
import threading
import time
import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, NoReturn, Optional

from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockChange, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.subscription import Subscription
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image

from alpamayo_ros.core.errors import ConfigError, DecodeError, InputNotReady, ModelInputError
from alpamayo_ros.core.input_streams import TimeJump
from alpamayo_ros.core.model_family import FAMILIES
from alpamayo_ros.core.navigation import NAVIGATION_TOPIC, navigation_ignored_reason
from alpamayo_ros.core.outputs import OutputTick, enabled_outputs
from alpamayo_ros.core.plan_message import OutputContext, output_stamp_ns
from alpamayo_ros.core.plan_result import PlanResult, PlanStatus
from alpamayo_ros.core.planner_params import NODE_NAME, PLANNER_PARAMETERS, planner_config
from alpamayo_ros.core.planner_core import PlannerCore
from alpamayo_ros.core.planner_health import (HealthReport, Level, PlannerHealth, TickOutcome,
                                              inference_path_report)
from alpamayo_ros.core.ring_buffer import InsertStatus
from alpamayo_ros.core.tick_gate import QuestionSlot, TickGate
from alpamayo_ros.core.types import (CAMERA_IMAGE_SHAPE, NS_PER_S, InferencePath,
                                     ModelDescription)
from alpamayo_ros.msg import NavigationInstruction
from alpamayo_ros.srv import Ask
from alpamayo_ros.ros import convert, params
from alpamayo_ros.ros.diagnostics import to_diagnostic_array
from alpamayo_ros.ros.model_loader import load_model
from alpamayo_ros.ros.qos import (CAMERA_SUBSCRIPTION_QOS, LATCHED_DIAGNOSTICS_QOS,
                                  LATCHED_PLAN_QOS, NAVIGATION_QOS,
                                  ODOMETRY_SUBSCRIPTION_QOS, PLAN_QOS, reliable)
from alpamayo_ros.ros.shutdown import (WORKER_STOP_TIMEOUT_S, GatedCallbacks, PublishGate,
                                       StartupInterrupted, WorkerThread, shutdown_logger)
from alpamayo_ros.ros.spin import run_node, take_pending

_OUTCOMES = {PlanStatus.OK: TickOutcome.PLANNED, PlanStatus.SKIPPED: TickOutcome.SKIPPED,
             PlanStatus.INVALID_OUTPUT: TickOutcome.INVALID_OUTPUT,
             PlanStatus.MODEL_ERROR: TickOutcome.MODEL_ERROR}
_LOG_THROTTLE_S = 5.0
# Relative: follow the node's namespace; remappable like any topic or service.
ASK_SERVICE = "alpamayo/ask"
# Answer length of a question that sets no max_tokens.
DEFAULT_ANSWER_TOKENS = 64


class PlannerNode(GatedCallbacks, LifecycleNode):
    """Alpamayo-R1 planner node, a managed (lifecycle) node; see the module docstring.

    model_loader: builds (model, description) from the validated parameters; tests inject
    failing or slow models through it. With autostart (the default) the constructor runs
    configure and activate and raises ConfigError when configure fails.
    """

    def __init__(self, *, model_loader: Callable = load_model, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._declared, self._declare_errors = params.declare_parameters(self)
        self._model_loader = model_loader
        self._phase = Phase.UNCONFIGURED
        self._phase_since = time.monotonic()
        self._last_error = ""
        self._load_s: Optional[float] = None
        self._warmup_s: Optional[float] = None
        self._closing = threading.Event()
        # Open only while active: closed by deactivate and close (never while a publish
        # runs, none after they return).
        self._publish_gate = PublishGate(closed=True)
        self._configured: Optional[_Configured] = None
        # Bumped by every deactivation: a tick's result is published only when the node
        # has not been deactivated since the tick started (even if activated again).
        self._activation = 0
        # Diagnostics run on wall time in every state (they go on, and say so, when /clock
        # stops or while the model loads).
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics",
                                               LATCHED_DIAGNOSTICS_QOS)
        self._wall_clock = Clock(clock_type=ClockType.STEADY_TIME)
        period = self._declared.get("diagnostics.period", 1.0)
        self.create_timer(period if isinstance(period, (int, float)) and period > 0 else 1.0,
                          self._on_diagnostics, clock=self._wall_clock)
        autostart = self._declared.get("autostart", True)
        if autostart is True:
            self._autostart()

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        """configure + activate; ConfigError with the reason when configure fails."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise ConfigError(self._last_error or "configure failed")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ConfigError(self._last_error or "activate failed")

    def _set_phase(self, phase: "Phase", publish: bool = False) -> None:
        self._phase, self._phase_since = phase, time.monotonic()
        if publish:  # the executor may be blocked by the transition: publish right away
            self._on_diagnostics()

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Validate the parameters, load the model and warm it up, create the inputs (the
        buffers fill while inactive) and outputs. FAILURE with the readable error."""
        try:
            values = params.checked(self, self._declared, self._declare_errors)
            config = planner_config(values)
            for row in enabled_outputs(values):  # a missing package fails before loading
                if row.enabled_by is not None:
                    convert.output_message_class(row.type, row.enabled_by)
            self._set_phase(Phase.LOADING, publish=True)
            start = time.perf_counter()
            model, description = self._model_loader(values)
            self._load_s = time.perf_counter() - start
            self._set_phase(Phase.WARMING_UP, publish=True)
            self._warmup_s = _warm_up(model, description, config)
            # The warm-up may have switched the model to another path (self-check).
            description = dataclasses.replace(description, path=_inference_path(model))
            self._configured = _Configured.create(self, values, config, model, description)
        except Exception as exc:  # every cause ends the transition with its reason
            if not self.context.ok():
                self._abandon_configure()
            self._last_error = (str(exc) if isinstance(exc, ConfigError)
                                else f"{type(exc).__name__}: {exc}")
            self.get_logger().error(f"configure failed: {self._last_error}")
            self._release()
            self._set_phase(Phase.CONFIGURE_FAILED, publish=True)
            return TransitionCallbackReturn.FAILURE
        if not self.context.ok():
            self._abandon_configure()
        self._last_error = ""
        c = self._configured
        self.get_logger().info(
            f"configured: {description.model_id} ({values['model.backend']}, "
            f"{description.device}) loaded in {self._load_s:.2f} s, warm-up "
            f"{self._warmup_s:.2f} s; planning at {values['rate_hz']:g} Hz once active; "
            f"cameras {list(zip(config.camera_indices, c.camera_topics))}, odometry "
            f"{self.resolve_topic_name(values['odometry_topic'])}")
        self._set_phase(Phase.INACTIVE, publish=True)
        return TransitionCallbackReturn.SUCCESS

    def _abandon_configure(self) -> NoReturn:
        """A signal shut rclpy down while configure ran (a manager's configure: the model
        loads in the executor's thread): not a failure, and no transition can complete
        (rclpy would log an ERROR publishing it). Release what was made and leave the
        executor with StartupInterrupted (ros/spin.py ends the process cleanly)."""
        shutdown_logger(self).info("configure abandoned: shutting down")
        self._release()
        self._set_phase(Phase.UNCONFIGURED)
        raise StartupInterrupted("shutdown during configure")

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start planning (the lifecycle publishers go live)."""
        result = super().on_activate(state)
        if not self._closing.is_set():
            self._publish_gate.reopen()
        self._set_phase(Phase.ACTIVE)
        self.get_logger().info(f"planning at {self._configured.values['rate_hz']:g} Hz")
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop planning at once: no tick starts and nothing is published from now on. A
        running model call is not waited for (a GPU call may take seconds): it is
        abandoned, and its result dropped when it returns; both are logged."""
        self._stop_planning(0.0)
        c = self._configured
        if c is not None and c.gate.busy:
            self.get_logger().warning(
                "deactivate: a model call is running; it is abandoned and its result will "
                "be dropped")
        self._set_phase(Phase.INACTIVE)
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Destroy the inputs, outputs and the model (its memory, GPU memory included, is
        returned)."""
        self._release()
        self._set_phase(Phase.UNCONFIGURED)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_planning(WORKER_STOP_TIMEOUT_S)
        self._release()
        self._set_phase(Phase.FINALIZED)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._stop_planning(WORKER_STOP_TIMEOUT_S)
        self._release()
        self._set_phase(Phase.UNCONFIGURED)
        return TransitionCallbackReturn.SUCCESS

    def _stop_planning(self, timeout_s: float) -> bool:
        """No publish after this returns, and no result of a tick started before it ever;
        True when no model call is running any more (waited for up to timeout_s)."""
        self._publish_gate.close()
        self._activation += 1
        c = self._configured
        return c is None or c.gate.wait_idle(timeout_s)

    def _release(self) -> None:
        """Destroy what configure created and drop the model; under a running (abandoned)
        model call, the core and the model are closed when that call returns."""
        c, self._configured = self._configured, None
        if c is None:
            return
        c.destroy(self)
        if c.gate.call_when_idle(partial(_close_model, c.core, c.model)):
            self.get_logger().info("the model is freed once the abandoned model call returns")
        del c
        gc.collect()

    # ------------------------------------------------------------------ inputs
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_image(self, slot: int, to_encoded: Callable, msg) -> None:
        c = self._configured
        if c is None:
            return
        arrival_s = time.perf_counter()
        stamp_ns = convert.time_to_ns(msg.header.stamp)
        try:
            image = to_encoded(msg)
        except DecodeError as exc:
            self._reject_camera(c, slot, str(exc))
            return
        result = c.core.inputs.add_image(slot, stamp_ns, image, arrival_s)
        if result.status in (InsertStatus.REJECTED, InsertStatus.TOO_OLD):
            self._reject_camera(c, slot, result.reason)
        else:
            c.health.record_camera(slot, self._now_ns(), stamp_ns)

    def _reject_camera(self, c: "_Configured", slot: int, reason: str) -> None:
        c.health.reject_camera(slot, reason, self._now_ns())
        self.get_logger().warning(f"{c.camera_topics[slot]}: frame rejected: {reason}",
                                  throttle_duration_sec=_LOG_THROTTLE_S)

    def _on_odometry(self, msg: Odometry) -> None:
        c = self._configured
        if c is None:
            return
        sample = convert.odometry_to_sample(msg)
        result = c.core.inputs.add_odometry(sample)
        if result.frame_change is not None or result.time_jump is not None:
            c.health.restart_odometry()
        if result.frame_change is not None:
            c.health.record_frame_change(str(result.frame_change))
            self.get_logger().warning(str(result.frame_change),
                                      throttle_duration_sec=_LOG_THROTTLE_S)
        if result.status in (InsertStatus.REJECTED, InsertStatus.TOO_OLD):
            c.health.reject_odometry(result.reason, self._now_ns())
            self.get_logger().warning(f"odometry rejected: {result.reason}",
                                      throttle_duration_sec=_LOG_THROTTLE_S)
            return
        c.health.record_odometry(self._now_ns(), sample.stamp_ns)
        c.health.record_odometry_pose(sample.stamp_ns, sample.xyz, sample.quat_xyzw)

    def _on_navigation(self, msg: NavigationInstruction) -> None:
        """Buffer an instruction (1.5); refused ones are logged with the reason. A model
        family without navigation (R1, the dry run) ignores them with one WARN."""
        c = self._configured
        if c is None:
            return
        ignored = navigation_ignored_reason(c.description.family, c.values["model.backend"])
        if ignored:
            c.navigation_ignored += 1
            if c.navigation_ignored == 1:
                self.get_logger().warning(f"{NAVIGATION_TOPIC}: {ignored}")
            return
        valid_for_ns = convert.duration_to_ns(msg.valid_for)
        result = c.core.inputs.add_navigation(convert.time_to_ns(msg.header.stamp), msg.text,
                                              valid_for_ns, msg.source)
        if result.status == InsertStatus.REJECTED:
            self.get_logger().warning(f"{NAVIGATION_TOPIC}: instruction from "
                                      f"{msg.source or 'an unnamed source'} refused: "
                                      f"{result.reason}",
                                      throttle_duration_sec=_LOG_THROTTLE_S)

    def _ask_refusal(self, c: Optional["_Configured"]) -> str:
        """Why a question cannot be answered now ("" when it can be queued)."""
        if c is None or self._phase is not Phase.ACTIVE:
            return f"the planner is {self._phase.value}, not active"
        family = FAMILIES.get(c.description.family)
        if family is None or not family.questions:
            what = family.label if family else f"the {c.values['model.backend']} backend"
            return f"{what} answers no questions (an Alpamayo 1.5 checkpoint does)"
        if c.last_input is None:
            return "no tick has prepared camera frames yet"
        return ""

    async def _on_ask(self, request: Ask.Request, response: Ask.Response) -> Ask.Response:
        """alpamayo/ask: answer from the newest planned tick's frames on the model worker
        (queued behind a running tick, before later ones); one question waits at a time."""
        start = time.perf_counter()
        c = self._configured
        reason = self._ask_refusal(c)
        if reason:
            response.status, response.reason = Ask.Response.STATUS_REFUSED, reason
            return response
        t0_ns, model_input = c.last_input
        done: Future = Future(executor=self.executor)
        done.add_done_callback(lambda _: None)  # its task wakes the executor

        def answer() -> None:
            try:
                done.set_result(c.model.ask(model_input, request.question,
                                            int(request.max_tokens) or DEFAULT_ANSWER_TOKENS))
            except Exception as exc:  # reported in the response, never raised
                done.set_result(exc)

        try:
            queued = c.questions.submit(c.worker, answer)
        except RuntimeError:  # the worker stopped (cleanup or shutdown)
            response.status, response.reason = (Ask.Response.STATUS_REFUSED,
                                                "the planner is shutting down")
            return response
        if not queued:
            response.status = Ask.Response.STATUS_BUSY
            response.reason = "another question is waiting for the model"
            return response
        out = await done
        response.t0 = convert.ns_to_time(t0_ns)
        response.latency = time.perf_counter() - start
        if isinstance(out, ModelInputError):  # the question itself (text, R1, ...)
            response.status, response.reason = Ask.Response.STATUS_REFUSED, str(out)
            return response
        if isinstance(out, Exception):
            response.status = Ask.Response.STATUS_ERROR
            response.reason = f"{type(out).__name__}: {out}"
            return response
        response.status, response.answer = Ask.Response.STATUS_OK, out.answer
        response.model_time = out.seconds
        return response

    def _on_time_jump(self, jump: TimeJump) -> None:
        c = self._configured
        if c is not None:
            c.health.record_time_jump()
        self.get_logger().warning(str(jump), throttle_duration_sec=_LOG_THROTTLE_S)

    def _on_clock_jump(self, jump) -> None:
        # Called for every forward step of the node clock (each /clock of sim time), a
        # backward jump, and a switch between system and ROS time (ROS_TIME_ACTIVATED /
        # DEACTIVATED). Runs inside rclpy's clock update: no timer is created or destroyed
        # here (that would change the clock's callback list while it is walked).
        c = self._configured
        if c is None:
            return
        now_ns = self._now_ns()
        if jump.clock_change == ClockChange.ROS_TIME_NO_CHANGE and jump.delta.nanoseconds > 0:
            c.ticks.forward(now_ns)
            return
        back_ns = -jump.delta.nanoseconds
        if jump.clock_change == ClockChange.ROS_TIME_NO_CHANGE:
            if back_ns <= c.jitter_ns:
                c.health.record_clock_jitter(back_ns / NS_PER_S)
                c.ticks.backward(now_ns, restart=False)
                return
            what = f"the node clock jumped back {back_ns / NS_PER_S:.3f} s"
        else:
            what = f"the node clock changed its time source ({jump.clock_change.name})"
        c.core.reset(now_ns, what)
        c.health.record_reset()
        c.ticks.backward(now_ns, restart=True,
                         clock_driven=jump.clock_change != ClockChange.ROS_TIME_DEACTIVATED)
        self.get_logger().warning(f"{what}: restarted the buffers and the ticks",
                                  throttle_duration_sec=_LOG_THROTTLE_S)

    def _on_rephase(self) -> None:
        """The re-phased tick is due (TickPhase): plan it, and hand the ticks back to the
        timer once it runs on the period's multiples again."""
        c = self._configured
        if c is None:
            return
        now_ns = self._now_ns()
        if c.ticks.due(now_ns):
            self._on_tick()
            c.ticks.ticked(now_ns)

    # ------------------------------------------------------------------ planning
    def _on_tick(self) -> None:
        c = self._configured
        if c is None or self._publish_gate.closed:
            return
        # The tick plans on every input delivered before it, however far the executor lags.
        take_pending([e for e in c.entities if isinstance(e, Subscription)])
        tick_wall_s = time.perf_counter()
        now_ns = self._now_ns()
        c.ticks.last_tick_ns = now_ns
        if not c.gate.try_enter():
            c.health.record_dropped_tick()
            return
        c.health.record_tick()
        try:
            c.worker.submit(self._plan, c, now_ns, tick_wall_s, self._activation)
        except RuntimeError:  # the worker is stopped (cleanup or shutdown)
            c.gate.leave()

    def _plan(self, c: "_Configured", now_ns: int, tick_wall_s: float,
              activation: int) -> None:
        """Worker thread: prepare + run + publish one tick; never raises. activation: the
        node's activation count when the tick started."""
        try:
            try:
                prepared = c.core.prepare(now_ns, tick_wall_s)
            except InputNotReady as exc:
                result = c.core.skipped(now_ns, exc)
            else:
                # The frames a question is answered from (references, no copy).
                c.last_input = (prepared.t0_ns, prepared.model_input)
                result = c.core.run(prepared)
            with self._publish_gate.open() as allowed:
                # Never after deactivate/close began, never while they run, never a result
                # of a tick from before a deactivation.
                current = allowed and activation == self._activation
                if current:
                    self._publish(c, result)
            if not current and not self._closing.is_set() and self.context.ok():
                self.get_logger().info(
                    f"a planning tick abandoned by deactivate ended after "
                    f"{time.perf_counter() - tick_wall_s:.1f} s: its result is dropped")
        except Exception as exc:  # a bug here must not kill the worker or the node
            if not self.context.ok():
                return  # shutting down: publishers are gone, nothing to report
            c.health.record_outcome(TickOutcome.MODEL_ERROR, f"{type(exc).__name__}: {exc}")
            self.get_logger().error(f"planning tick failed: {type(exc).__name__}: {exc}")
        finally:
            c.gate.leave()

    def _publish(self, c: "_Configured", result: PlanResult) -> None:
        latency_s = (self._now_ns() - output_stamp_ns(result)) / NS_PER_S
        arrival_s = result.newest_frame_arrival_s
        latency_wall_s = 0.0 if arrival_s is None else time.perf_counter() - arrival_s
        tick = OutputTick(result, c.output_context, latency_s, latency_wall_s,
                          c.values["markers.coc_text_height"], c.values)
        # One publisher per row of core.outputs.OUTPUTS; nothing of a failed tick but the
        # PlannerOutput reaches the consumers (the builders return None).
        for row, publisher in c.outputs:
            data = row.build(tick)
            if data is not None:
                publisher.publish(convert.to_ros_message(data))
        model_time = result.timings.model_call if result.status != PlanStatus.SKIPPED else None
        c.health.record_outcome(_OUTCOMES[result.status], result.reason,
                                latency_s=latency_wall_s if result.ok else None,
                                model_time_s=model_time, reason_code=result.reason_code)
        if result.status == PlanStatus.MODEL_ERROR:
            self.get_logger().error(f"model error: {result.reason}")
        elif not result.ok:
            self.get_logger().warning(f"no plan ({result.status.name}): {result.reason}",
                                      throttle_duration_sec=_LOG_THROTTLE_S)

    # ------------------------------------------------------------------ diagnostics
    def _lifecycle_report(self) -> HealthReport:
        """State of the node: unconfigured, loading, warming up, inactive, active (with the
        load and warm-up durations), or why configure failed."""
        in_phase = time.monotonic() - self._phase_since
        values = {"state": self._phase.value, "in_state_s": f"{in_phase:.1f}"}
        for key, seconds in (("load_s", self._load_s), ("warmup_s", self._warmup_s)):
            if seconds is not None:
                values[key] = f"{seconds:.2f}"
        if self._last_error:
            values["last_error"] = self._last_error
        level, message = {
            Phase.UNCONFIGURED: (Level.STALE, "unconfigured: waiting for configure"),
            Phase.LOADING: (Level.OK, f"loading the model ({in_phase:.0f} s so far)"),
            Phase.WARMING_UP: (Level.OK, f"warming up (model loaded in {self._load_s or 0:.1f} "
                                         f"s; {in_phase:.0f} s so far)"),
            Phase.INACTIVE: (Level.WARN, "inactive: configured, not planning"),
            Phase.ACTIVE: (Level.OK, "active"),
            Phase.CONFIGURE_FAILED: (Level.ERROR, f"configure failed: {self._last_error}"),
            Phase.FINALIZED: (Level.STALE, "finalized"),
        }[self._phase]
        return HealthReport("lifecycle", level, message, values)

    def _on_diagnostics(self) -> None:
        now_ns = self._now_ns()
        reports = [self._lifecycle_report()]
        c = self._configured
        if c is not None:
            counters = c.core.counters()
            info = {"model_id": c.description.model_id, "device": c.description.device,
                    "backend": c.values["model.backend"],
                    "family": c.description.family or "none",
                    "navigation_ignored": str(c.navigation_ignored),
                    **{f"navigation_{k}": str(getattr(counters, f"navigation_{k}"))
                       for k in ("added", "rejected", "used", "none", "expired", "empty")}}
            reports += c.health.reports(now_ns, info, self._wall_clock.now().nanoseconds)
            reports.append(inference_path_report(_inference_path(c.model)))
            warning = c.health.base_offset_warning()
            if warning:
                self.get_logger().warning(warning, throttle_duration_sec=60.0)
        array = to_diagnostic_array(reports, now_ns,
                                    hardware_id=self.get_fully_qualified_name(),
                                    prefix=self.get_fully_qualified_name())
        try:
            self._pub_diag.publish(array)
        except Exception:
            if self.context.ok():
                raise  # a real failure; during shutdown the publisher is simply gone

    def destroy_node(self) -> None:
        """No callback and no publish of the worker from now on (also without close())."""
        self._publish_gate.close()
        super().destroy_node()

    def close(self, timeout_s: float = WORKER_STOP_TIMEOUT_S) -> bool:
        """Stop planning for good: no tick starts and nothing is published from now on;
        wait up to timeout_s for a running model call. False: the call is still running and
        is abandoned (its result is never published; the worker is a daemon thread)."""
        self._closing.set()
        self._stop_planning(0.0)
        c = self._configured
        if c is None or c.worker.stop(timeout_s):
            return True
        shutdown_logger(self).warning(f"a model call is still running after {timeout_s:g} s "
                                      "of shutdown: abandoned, its result is not published")
        return False


class Phase(enum.Enum):
    """What the node is doing, as /diagnostics reports it."""

    UNCONFIGURED = "unconfigured"
    LOADING = "loading"
    WARMING_UP = "warming up"
    INACTIVE = "inactive"
    ACTIVE = "active"
    CONFIGURE_FAILED = "configure failed"
    FINALIZED = "finalized"


def _close_model(core: PlannerCore, model) -> None:
    """Stop the core's decoding threads and free the model (model.close(), if it has one)."""
    core.close()
    close = getattr(model, "close", None)
    if close is not None:
        close()


def _warm_up(model, description: ModelDescription, config) -> float:
    """The model's warm-up (graph capture, allocation) on frames of the configured size;
    seconds it took (0 for models without one)."""
    warmup = getattr(model, "warmup", None)
    if warmup is None:
        return 0.0
    width, height = config.output_image_size or CAMERA_IMAGE_SHAPE[::-1]
    return float(warmup(description.options, (height, width),
                        camera_indices=tuple(config.camera_indices)))


def _inference_path(model) -> InferencePath:
    """The model's inference path and its problem (none for models without paths)."""
    inference_path = getattr(model, "inference_path", None)
    return inference_path() if inference_path is not None else InferencePath()


class TickPhase:
    """Keeps the planning ticks on the multiples k * period (k >= 1) of the node clock's
    time line, as a timer created before the first /clock ticks (what the controller's
    lockstep gate expects, control/lockstep.py), across backward jumps of that clock.

    rcl re-anchors a timer whose clock jumps back past its last call at `now + period`
    (rcl/timer.c): a planner that lives on while the simulator restarts sim time at 0
    and that sees the new time line first at 0.25 s would tick at 0.75, 1.25, ... while
    the simulator waits at 0.5 s for a plan (seen as lockstep timeouts of 120 s per tick
    with a suite's kept planner). So on a backward jump the timer is cancelled and the
    next tick is the first multiple of the period at or after the new time (not before
    one period, as a fresh timer's first tick); the clock's forward steps trigger `guard`
    once it is reached, and its callback (PlannerNode._on_rephase) plans and calls
    `ticked`, which hands the ticks back to the timer (reset: next call one period
    later) when that tick fell exactly on the multiple, else waits for the next one.
    A switch to system time (ROS time deactivated) resets the timer at once (no steps
    drive it there). last_tick_ns: the time of the newest tick (set by the tick)."""

    def __init__(self, timer, guard) -> None:
        self.timer = timer
        self.guard = guard
        self.period_ns = int(timer.timer_period_ns)
        self.pending_ns: Optional[int] = None  # the re-phased tick due at this time
        self.last_tick_ns: Optional[int] = None
        self.rephased = 0

    def backward(self, now_ns: int, restart: bool, clock_driven: bool = True) -> None:
        """The clock went back to now_ns: a time line restart (restart) or jitter (the
        next tick stays one period after the last one)."""
        p = self.period_ns
        due = max(-(-now_ns // p), 1) * p
        if not restart and self.last_tick_ns is not None:
            due = max(due, self.last_tick_ns + p)
        if restart:
            self.last_tick_ns = None
        if not clock_driven:
            self.pending_ns = None
            self.timer.reset()
            return
        self.pending_ns = due
        self.rephased += 1
        self.timer.cancel()
        self.forward(now_ns)

    def forward(self, now_ns: int) -> None:
        if self.pending_ns is not None and now_ns >= self.pending_ns:
            self.guard.trigger()

    def due(self, now_ns: int) -> bool:
        return self.pending_ns is not None and now_ns >= self.pending_ns

    def ticked(self, now_ns: int) -> None:
        """The re-phased tick at now_ns ran."""
        p = self.period_ns
        if now_ns % p == 0:
            self.pending_ns = None
            self.timer.reset()  # next call at now + period: on the multiples again
        else:
            self.pending_ns = (now_ns // p + 1) * p


@dataclass
class _Configured:
    """Everything configure creates and cleanup destroys."""

    values: dict
    config: Any
    model: Any
    description: ModelDescription
    core: PlannerCore
    health: PlannerHealth
    gate: TickGate
    worker: WorkerThread
    camera_topics: list
    base_frame: str
    output_context: OutputContext
    jitter_ns: int
    outputs: list  # (core.outputs.OutputRow, lifecycle publisher) per enabled row
    entities: list  # subscriptions and timers
    jump_callback: Any
    ticks: "TickPhase" = None  # the planning timer and its re-phasing after clock jumps
    # Instructions received while the model family takes none (R1, dry run).
    navigation_ignored: int = 0
    # (t0 [ns], ModelInput) of the newest prepared tick: what questions are asked about.
    last_input: Optional[tuple] = None
    # The question queued or running on the worker (one at a time; core.tick_gate).
    questions: QuestionSlot = field(default_factory=QuestionSlot)

    @classmethod
    def create(cls, node: "PlannerNode", values: dict, config, model,
               description: ModelDescription) -> "_Configured":
        camera_topics = [node.resolve_topic_name(t) for t in values["camera_topics"]]
        health = PlannerHealth(list(config.slot_names), "odometry",
                               max_input_age_s=config.max_input_age,
                               max_camera_skew_s=values["diagnostics.max_camera_skew"],
                               max_stamp_lead_s=config.max_stamp_lead,
                               clock_stop_s=max(2.0, 2 * values["diagnostics.period"]),
                               base_offset_xyz=config.base_offset_xyz,
                               base_offset_tolerance=config.base_offset_tolerance)
        publish = node.create_lifecycle_publisher
        c = cls(values=values, config=config, model=model, description=description,
                core=PlannerCore(config, model, description.options,
                                 on_time_jump=node._on_time_jump),
                health=health, gate=TickGate(), worker=WorkerThread("alpamayo_infer"),
                camera_topics=camera_topics, base_frame=values["base_frame_id"],
                output_context=OutputContext(values["base_frame_id"], tuple(camera_topics),
                                             tuple(config.camera_indices), description),
                jitter_ns=int(round(config.time_jump_tolerance * NS_PER_S)),
                outputs=[(row, publish(convert.message_class(row.type), row.topic_in(values),
                                       LATCHED_PLAN_QOS if row.latched else PLAN_QOS))
                         for row in enabled_outputs(values)],
                entities=[], jump_callback=None)
        sensors = ReentrantCallbackGroup()
        camera_qos, odometry_qos = ((reliable(CAMERA_SUBSCRIPTION_QOS),
                                     reliable(ODOMETRY_SUBSCRIPTION_QOS))
                                    if values["inputs.reliable"] else
                                    (CAMERA_SUBSCRIPTION_QOS, ODOMETRY_SUBSCRIPTION_QOS))
        for slot, (topic, transport) in enumerate(zip(values["camera_topics"],
                                                      values["camera_transports"])):
            msg_type, to_encoded = ((Image, convert.image_to_encoded) if transport == "raw"
                                    else (CompressedImage, convert.compressed_to_encoded))
            c.entities.append(node.create_subscription(
                msg_type, topic, partial(node._on_image, slot, to_encoded),
                camera_qos, callback_group=sensors))
        c.entities.append(node.create_subscription(
            Odometry, values["odometry_topic"], node._on_odometry, odometry_qos,
            callback_group=sensors))
        c.entities.append(node.create_subscription(
            NavigationInstruction, NAVIGATION_TOPIC, node._on_navigation, NAVIGATION_QOS,
            callback_group=sensors))
        c.entities.append(node.create_service(Ask, ASK_SERVICE, node._on_ask,
                                              callback_group=ReentrantCallbackGroup()))
        ticking = MutuallyExclusiveCallbackGroup()
        timer = node.create_timer(1.0 / values["rate_hz"], node._on_tick,
                                  callback_group=ticking)
        c.entities.append(timer)
        c.ticks = TickPhase(timer, node.create_guard_condition(
            node.gated_callback(node._on_rephase), callback_group=ticking))
        # A backwards jump of the node clock beyond time_jump_tolerance (sim time restarted,
        # bag looped) invalidates every buffered stamp of the old time line: restart the
        # buffers instead of planning on mixed data, and the ticks on the new time line's
        # multiples of the period (TickPhase). Smaller backward steps (a bag's /clock
        # rounding) are jitter. Forward steps drive a re-phased tick.
        c.jump_callback = node.get_clock().create_jump_callback(
            JumpThreshold(min_forward=Duration(nanoseconds=1),
                          min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=node.gated_callback(node._on_clock_jump))
        return c

    def destroy(self, node: "PlannerNode") -> None:
        """Stop the worker (a running call is abandoned), destroy inputs and outputs."""
        self.worker.stop(0.0)
        for entity in self.entities:
            if hasattr(entity, "timer_period_ns"):
                node.destroy_timer(entity)
            elif hasattr(entity, "srv_type"):
                node.destroy_service(entity)
            else:
                node.destroy_subscription(entity)
        if self.jump_callback is not None:
            self.jump_callback.unregister()
        if self.ticks is not None:
            node.destroy_guard_condition(self.ticks.guard)
        for _, publisher in self.outputs:
            node.destroy_lifecycle_publisher(publisher)


def main(args: Optional[list] = None, model_loader: Callable = load_model) -> int:
    """Entry point of the planner_node executable; returns the process exit status.

    2: invalid parameters or checkpoint (a readable message on stderr, no traceback).
    model_loader: as PlannerNode's (test scripts run the executable with a slow model).
    """
    return run_node(NODE_NAME, partial(PlannerNode, model_loader=model_loader),
                    SingleThreadedExecutor, args, parameter_specs=PLANNER_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
