"""The `alpamayo_planner` node: wires ROS topics, a timer and a worker thread to PlannerCore.

Wiring only. Buffers, frame selection, history, the model call and output checks live in
alpamayo_ros.core.planner_core; message conversion in convert.py / markers.py /
diagnostics.py; parameters in params.py; the model in model_loader.py.

Threads: one SingleThreadedExecutor runs the sensor callbacks and the timers; the planning
timer only hands a tick to a daemon worker thread and returns, so frames and odometry
keep flowing while the model runs. A tick that arrives while the worker is busy is dropped
and counted (TickGate), never queued. With rclpy's MultiThreadedExecutor instead, the
launch-equivalence test (test_launch_planner.py) failed in about half of ten runs on this
project's 2-core machine: the node fell behind 50 Hz odometry plus four cameras and skipped
every tick for odometry gaps or staleness; with this executor it passed 6 runs of 6. Its
threads only contend for the GIL, and every callback here is short; the callback groups
stay correct under either executor.

Shutdown (close): nothing is published once it began (PublishGate); a model call still
running after WORKER_STOP_TIMEOUT_S is abandoned, its result never published, and
run_node leaves the process (ros/spin.py, ros/shutdown.py).
"""
from __future__ import annotations

import sys
import threading
import time
from functools import partial
from typing import Callable, Optional

from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockChange, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from alpamayo_ros.core.errors import DecodeError, InputNotReady
from alpamayo_ros.core.plan_message import OutputContext, output_stamp_ns
from alpamayo_ros.core.plan_result import PlanResult, PlanStatus
from alpamayo_ros.core.planner_params import NODE_NAME, PLANNER_PARAMETERS, planner_config
from alpamayo_ros.core.planner_core import PlannerCore, TimeJump
from alpamayo_ros.core.planner_health import PlannerHealth, TickOutcome
from alpamayo_ros.core.ring_buffer import InsertStatus
from alpamayo_ros.core.tick_gate import TickGate
from alpamayo_ros.core.types import NS_PER_S
from alpamayo_ros.msg import PlannerOutput
from alpamayo_ros.ros import convert, params
from alpamayo_ros.ros.diagnostics import to_diagnostic_array
from alpamayo_ros.ros.markers import plan_to_markers
from alpamayo_ros.ros.model_loader import load_model
from alpamayo_ros.ros.qos import (CAMERA_SUBSCRIPTION_QOS, DIAGNOSTICS_QOS,
                                  ODOMETRY_SUBSCRIPTION_QOS, PLAN_QOS)
from alpamayo_ros.ros.shutdown import (WORKER_STOP_TIMEOUT_S, PublishGate, WorkerThread,
                                       shutdown_logger)
from alpamayo_ros.ros.spin import run_node

_OUTCOMES = {PlanStatus.OK: TickOutcome.PLANNED, PlanStatus.SKIPPED: TickOutcome.SKIPPED,
             PlanStatus.INVALID_OUTPUT: TickOutcome.INVALID_OUTPUT,
             PlanStatus.MODEL_ERROR: TickOutcome.MODEL_ERROR}
_LOG_THROTTLE_S = 5.0


class PlannerNode(Node):
    """Alpamayo-R1 planner node (see module docstring).

    model_loader: builds (model, description) from the validated parameters; tests inject
    failing or slow models through it. Raises ConfigError for invalid parameters.
    """

    def __init__(self, *, model_loader: Callable = load_model, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._values = values = params.declare_and_read(self)
        config = planner_config(values)
        model, self._model_desc = model_loader(values)
        self._core = PlannerCore(config, model, self._model_desc.options,
                                 on_time_jump=self._on_time_jump)
        self._camera_topics = [self.resolve_topic_name(t) for t in values["camera_topics"]]
        self._base_frame = values["base_frame_id"]
        self._output_context = OutputContext(self._base_frame, tuple(self._camera_topics),
                                             tuple(config.camera_indices), self._model_desc)
        self._gate = TickGate()
        self._health = PlannerHealth(list(config.slot_names), "odometry",
                                     max_input_age_s=config.max_input_age,
                                     max_camera_skew_s=values["diagnostics.max_camera_skew"],
                                     max_stamp_lead_s=config.max_stamp_lead,
                                     clock_stop_s=max(2.0, 2 * values["diagnostics.period"]),
                                     base_offset_xyz=config.base_offset_xyz,
                                     base_offset_tolerance=config.base_offset_tolerance)
        self._jitter_ns = int(round(config.time_jump_tolerance * NS_PER_S))
        self._worker = WorkerThread("alpamayo_infer")
        self._closing = threading.Event()
        self._publish_gate = PublishGate()

        self._pub_plan = self.create_publisher(PlannerOutput, "alpamayo/plan", PLAN_QOS)
        self._pub_path = self.create_publisher(Path, "alpamayo/path", PLAN_QOS)
        self._pub_path_odom = self.create_publisher(Path, "alpamayo/path_odom", PLAN_QOS)
        self._pub_coc = self.create_publisher(String, "alpamayo/coc", PLAN_QOS)
        self._pub_markers = (self.create_publisher(MarkerArray, "alpamayo/markers", PLAN_QOS)
                             if values["markers.enabled"] else None)
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics",
                                               DIAGNOSTICS_QOS)

        sensors = ReentrantCallbackGroup()
        for slot, (topic, transport) in enumerate(zip(values["camera_topics"],
                                                      values["camera_transports"])):
            msg_type, to_encoded = ((Image, convert.image_to_encoded) if transport == "raw"
                                    else (CompressedImage, convert.compressed_to_encoded))
            self.create_subscription(msg_type, topic, partial(self._on_image, slot, to_encoded),
                                     CAMERA_SUBSCRIPTION_QOS, callback_group=sensors)
        self.create_subscription(Odometry, values["odometry_topic"], self._on_odometry,
                                 ODOMETRY_SUBSCRIPTION_QOS, callback_group=sensors)
        timers = MutuallyExclusiveCallbackGroup()
        self.create_timer(1.0 / values["rate_hz"], self._on_tick, callback_group=timers)
        # Diagnostics run on wall time, so they go on (and say so) when /clock stops.
        self._wall_clock = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(values["diagnostics.period"], self._on_diagnostics,
                          callback_group=timers, clock=self._wall_clock)
        # A backwards jump of the node clock beyond time_jump_tolerance (sim time restarted,
        # bag looped) invalidates every buffered stamp: clear the buffers instead of planning
        # on mixed data. Smaller backward steps (a bag's /clock rounding) are jitter.
        self._jump_callback = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1),
                          on_clock_change=True), post_callback=self._on_clock_jump)
        self.get_logger().info(
            f"planning at {values['rate_hz']:g} Hz with {self._model_desc.model_id} "
            f"({values['model.backend']}, {self._model_desc.device}); cameras "
            f"{list(zip(config.camera_indices, self._camera_topics))}, odometry "
            f"{self.resolve_topic_name(values['odometry_topic'])}")

    # ------------------------------------------------------------------ inputs
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_image(self, slot: int, to_encoded: Callable, msg) -> None:
        arrival_s = time.perf_counter()
        stamp_ns = convert.time_to_ns(msg.header.stamp)
        try:
            image = to_encoded(msg)
        except DecodeError as exc:
            self._reject_camera(slot, str(exc))
            return
        result = self._core.add_image(slot, stamp_ns, image, arrival_s)
        if result.status in (InsertStatus.REJECTED, InsertStatus.TOO_OLD):
            self._reject_camera(slot, result.reason)
        else:
            self._health.record_camera(slot, self._now_ns(), stamp_ns)

    def _reject_camera(self, slot: int, reason: str) -> None:
        self._health.reject_camera(slot, reason, self._now_ns())
        self.get_logger().warning(f"{self._camera_topics[slot]}: frame rejected: {reason}",
                               throttle_duration_sec=_LOG_THROTTLE_S)

    def _on_odometry(self, msg: Odometry) -> None:
        sample = convert.odometry_to_sample(msg)
        result = self._core.add_odometry(sample)
        if result.frame_change is not None or result.time_jump is not None:
            self._health.restart_odometry()
        if result.frame_change is not None:
            self._health.record_frame_change(str(result.frame_change))
            self.get_logger().warning(str(result.frame_change),
                                      throttle_duration_sec=_LOG_THROTTLE_S)
        if result.status in (InsertStatus.REJECTED, InsertStatus.TOO_OLD):
            self._health.reject_odometry(result.reason, self._now_ns())
            self.get_logger().warning(f"odometry rejected: {result.reason}",
                                   throttle_duration_sec=_LOG_THROTTLE_S)
            return
        self._health.record_odometry(self._now_ns(), sample.stamp_ns)
        self._health.record_odometry_pose(sample.stamp_ns, sample.xyz, sample.quat_xyzw)

    def _on_time_jump(self, jump: TimeJump) -> None:
        self._health.record_time_jump()
        self.get_logger().warning(str(jump), throttle_duration_sec=_LOG_THROTTLE_S)

    def _on_clock_jump(self, jump) -> None:
        # Called only for what the JumpThreshold asks for: a backward jump, or a switch
        # between system and ROS time (ROS_TIME_ACTIVATED / DEACTIVATED).
        back_ns = -jump.delta.nanoseconds
        if jump.clock_change == ClockChange.ROS_TIME_NO_CHANGE:
            if back_ns <= self._jitter_ns:
                self._health.record_clock_jitter(back_ns / NS_PER_S)
                return
            what = f"the node clock jumped back {back_ns / NS_PER_S:.3f} s"
        else:
            what = f"the node clock changed its time source ({jump.clock_change.name})"
        self._core.reset(self._now_ns(), what)
        self._health.record_reset()
        self.get_logger().warning(f"{what}: cleared all buffers",
                                  throttle_duration_sec=_LOG_THROTTLE_S)

    # ------------------------------------------------------------------ planning
    def _on_tick(self) -> None:
        if self._closing.is_set():
            return
        tick_wall_s = time.perf_counter()
        now_ns = self._now_ns()
        if not self._gate.try_enter():
            self._health.record_dropped_tick()
            return
        self._health.record_tick()
        try:
            self._worker.submit(self._plan, now_ns, tick_wall_s)
        except RuntimeError:  # the worker is stopped (shutting down)
            self._gate.leave()

    def _plan(self, now_ns: int, tick_wall_s: float) -> None:
        """Worker thread: prepare + run + publish one tick; never raises."""
        try:
            try:
                prepared = self._core.prepare(now_ns, tick_wall_s)
            except InputNotReady as exc:
                result = self._core.skipped(now_ns, exc)
            else:
                result = self._core.run(prepared)
            with self._publish_gate.open() as allowed:
                if allowed:  # never after close() began, never while it runs
                    self._publish(result)
        except Exception as exc:  # a bug here must not kill the worker or the node
            if not self.context.ok():
                return  # shutting down: publishers are gone, nothing to report
            self._health.record_outcome(TickOutcome.MODEL_ERROR, f"{type(exc).__name__}: {exc}")
            self.get_logger().error(f"planning tick failed: {type(exc).__name__}: {exc}")
        finally:
            self._gate.leave()

    def _publish(self, result: PlanResult) -> None:
        latency_s = (self._now_ns() - output_stamp_ns(result)) / NS_PER_S
        arrival_s = result.newest_frame_arrival_s
        latency_wall_s = 0.0 if arrival_s is None else time.perf_counter() - arrival_s
        msg = convert.plan_to_msg(result, self._output_context, latency_s=latency_s,
                                  latency_wall_s=latency_wall_s)
        self._pub_plan.publish(msg)
        model_time = result.timings.model_call if result.status != PlanStatus.SKIPPED else None
        self._health.record_outcome(_OUTCOMES[result.status], result.reason,
                                    latency_s=latency_wall_s if result.ok else None,
                                    model_time_s=model_time,
                                    reason_code=result.reason_code.name)
        if result.status == PlanStatus.MODEL_ERROR:
            self.get_logger().error(f"model error: {result.reason}")
        elif not result.ok:
            self.get_logger().warning(f"no plan ({result.status.name}): {result.reason}",
                                   throttle_duration_sec=_LOG_THROTTLE_S)
        if not result.ok:  # nothing of a failed tick reaches the path/CoC consumers
            return
        path, path_odom = convert.plan_to_paths(result, self._base_frame)
        self._pub_path.publish(path)
        self._pub_path_odom.publish(path_odom)
        self._pub_coc.publish(convert.plan_to_coc(result))
        if self._pub_markers is not None:
            self._pub_markers.publish(plan_to_markers(
                result, self._base_frame, self._values["markers.coc_text_height"]))

    def _on_diagnostics(self) -> None:
        now_ns = self._now_ns()
        info = {"model_id": self._model_desc.model_id, "device": self._model_desc.device,
                "backend": self._values["model.backend"]}
        array = to_diagnostic_array(self._health.reports(now_ns, info,
                                                         self._wall_clock.now().nanoseconds),
                                    now_ns,
                                    hardware_id=self.get_fully_qualified_name(),
                                    prefix=self.get_fully_qualified_name())
        warning = self._health.base_offset_warning()
        if warning:
            self.get_logger().warning(warning, throttle_duration_sec=60.0)
        try:
            self._pub_diag.publish(array)
        except Exception:
            if self.context.ok():
                raise  # a real failure; during shutdown the publisher is simply gone

    def close(self, timeout_s: float = WORKER_STOP_TIMEOUT_S) -> bool:
        """Stop planning: no tick starts and nothing is published from now on; wait up to
        timeout_s for a running model call. False: the call is still running and is
        abandoned (its result is never published; the worker is a daemon thread)."""
        self._closing.set()
        self._publish_gate.close()
        if self._worker.stop(timeout_s):
            return True
        shutdown_logger(self).warning(f"a model call is still running after {timeout_s:g} s "
                                      "of shutdown: abandoned, its result is not published")
        return False


def main(args: Optional[list] = None, model_loader: Callable = load_model) -> int:
    """Entry point of the planner_node executable; returns the process exit status.

    2: invalid parameters or checkpoint (a readable message on stderr, no traceback).
    model_loader: as PlannerNode's (test scripts run the executable with a slow model).
    """
    return run_node(NODE_NAME, partial(PlannerNode, model_loader=model_loader),
                    SingleThreadedExecutor, args, parameter_specs=PLANNER_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
