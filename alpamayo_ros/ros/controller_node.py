"""The `alpamayo_controller` node: follows the planner's plans with the bridge's vehicle command.

Wiring only; the control logic is alpamayo_ros.control.tracking_controller, the lockstep
rule alpamayo_ros.control.lockstep, message conversion control_convert.py, parameters
closed_loop_params.py.

In: odometry (/carla/<role>/odometry), plans (alpamayo/plan). Out: one
carla_msgs/CarlaEgoVehicleControl per odometry sample on /carla/<role>/vehicle_control_cmd
(stamped with that sample's stamp), optionally AckermannDriveStamped, /diagnostics (one
status, published periodically and at once on every mode change), and in lockstep
CarlaControl PAUSE/PLAY while a planning tick's output is awaited. A watchdog on the node
clock brakes fully when odometry stops arriving.
"""
from __future__ import annotations

import sys
import time
from typing import Optional

from carla_msgs.msg import CarlaControl, CarlaEgoVehicleControl
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import deserialize_message

from alpamayo_ros.control import plan_check
from alpamayo_ros.control.lockstep import LockstepGate
from alpamayo_ros.control.reference_plan import PlanRejected
from alpamayo_ros.control.tracking_controller import (Mode, OdometryInput, StepResult,
                                                      TrackingController)
from alpamayo_ros.core.log_throttle import KindThrottle, message_shape
from alpamayo_ros.core.planner_health import HealthReport, Level
from alpamayo_ros.core.types import NS_PER_S
from alpamayo_ros.msg import PlannerOutput
from alpamayo_ros.ros import closed_loop_params as CP
from alpamayo_ros.ros import control_convert
from alpamayo_ros.ros.convert import time_to_ns
from alpamayo_ros.ros.diagnostics import to_diagnostic_array
from alpamayo_ros.ros.qos import (BRIDGE_QOS, CONTROL_ODOMETRY_QOS, LATCHED_DIAGNOSTICS_QOS,
                                  LATCHED_PLAN_QOS)
from alpamayo_ros.ros.spin import run_node
from alpamayo_ros.ros.shutdown import GatedCallbacks

NODE_NAME = "alpamayo_controller"
_LOG_THROTTLE_S = 5.0


class ControllerNode(GatedCallbacks, Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        values = self._values = CP.declare_and_read(self, CP.CONTROLLER_PARAMETERS,
                                                    CP.controller_cross_checks)
        self._controller = TrackingController(CP.controller_config(values))
        topics = self._topics = CP.topic_names(values)
        self._pub_cmd = self.create_publisher(CarlaEgoVehicleControl, topics["control"],
                                              BRIDGE_QOS)
        self._pub_ackermann = None
        if values["ackermann.enabled"]:
            if control_convert.ACKERMANN_AVAILABLE:
                self._pub_ackermann = self.create_publisher(
                    control_convert.AckermannDriveStamped, topics["ackermann"], BRIDGE_QOS)
            else:
                self.get_logger().warning("ackermann.enabled but ackermann_msgs is not "
                                          "installed: no AckermannDriveStamped output")
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics",
                                               LATCHED_DIAGNOSTICS_QOS)
        self._gate: Optional[LockstepGate] = None
        self._pub_pause = None
        if values["lockstep.enabled"]:
            self._gate = LockstepGate(int(round(values["lockstep.planning_period"] * NS_PER_S)))
            if values["lockstep.pause_topic"]:
                self._pub_pause = self.create_publisher(CarlaControl,
                                                        values["lockstep.pause_topic"],
                                                        BRIDGE_QOS)
        self._held: Optional[OdometryInput] = None
        self._held_since = 0.0
        self._paused = False  # PAUSE sent, PLAY not yet
        self._wired = False  # lockstep: the command's subscriber is matched
        self._last: Optional[StepResult] = None
        self._last_odom_receipt_ns: Optional[int] = None
        self._odometry_lost = False
        self._plans = {"received": 0, "ok": 0, "tracked": 0}
        self._lockstep_breaks = 0
        self._input_lags = 0
        # Warnings that can repeat every message are logged once per kind and period.
        self._throttle = KindThrottle(_LOG_THROTTLE_S)
        self._warned_no_tick = False
        self.create_subscription(Odometry, topics["odometry"], self._on_odometry,
                                 CONTROL_ODOMETRY_QOS)
        # Raw: the size of a plan is checked before it is deserialized (a huge one would
        # block this thread for seconds).
        self.create_subscription(PlannerOutput, topics["plan"], self._on_plan_bytes,
                                 LATCHED_PLAN_QOS, raw=True)
        self.create_timer(values["diagnostics.period"], self._publish_diagnostics)
        self.create_timer(0.05, self._watchdog)
        # The lockstep timeout runs on the wall clock: sim time stands still while waiting.
        self.create_timer(0.05, self._check_hold_timeout,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"following {self.resolve_topic_name(topics['plan'])} with odometry "
            f"{topics['odometry']} -> {topics['control']}; lockstep "
            f"{'on, period %g s' % values['lockstep.planning_period'] if self._gate else 'off'}")

    # ------------------------------------------------------------------ inputs
    def _on_odometry(self, msg: Odometry) -> None:
        odom = control_convert.odometry_input(msg)
        self._last_odom_receipt_ns = self.get_clock().now().nanoseconds
        if self._odometry_lost:
            self._odometry_lost = False
            self.get_logger().info("odometry back")
        gate = self._gate
        if gate is not None:
            if self._held is not None and not self._wired:
                self._held = None  # a newer sample before the first command: answer that
            elif self._held is not None:
                # The simulator stepped without our command (its own timeout): lockstep is
                # broken for that tick; answer the newest state from now on.
                self._lockstep_breaks += 1
                self._warn(("lockstep", "broken"),
                           f"lockstep broken: odometry {odom.stamp_ns / NS_PER_S:.3f} s arrived "
                           f"while waiting for the plan of tick "
                           f"{self._held.stamp_ns / NS_PER_S:.3f} s")
                self._release(publish=False)
            if gate.now_ns is not None and odom.stamp_ns < gate.now_ns:
                gate.reset()  # sim time went back: ticks restart on the new time line
            gate.note_odometry(odom.stamp_ns)
            self._lockstep_step(odom)
            return
        self._control(odom)

    def _lockstep_step(self, odom: OdometryInput) -> None:
        """Answer odom now, or hold it: until the command's (and PAUSE/PLAY's) subscriber
        is matched (a command sent before would be lost and the simulator would step
        without it), or until the planner answered the tick."""
        gate = self._gate
        if not self._check_wired():
            self.get_logger().info("lockstep: waiting for the simulator's subscriptions to the "
                                   "vehicle command and the run state before the first command",
                                   once=True)
            self._held, self._held_since = odom, time.monotonic()
            return
        if gate.must_wait(odom.stamp_ns):
            self._held, self._held_since = odom, time.monotonic()
            gate.waits += 1
            self._send_run_state(CarlaControl.PAUSE)
            self._paused = True
            return
        self._control(odom)

    def _on_plan_bytes(self, raw: bytes) -> None:
        try:
            plan_check.check_message_size(len(raw),
                                          self._controller.config.max_plan_message_bytes)
        except PlanRejected as exc:
            self._plans["received"] += 1
            self._note_decision(self._controller.refuse_plan(exc))
            return
        self._on_plan(deserialize_message(raw, PlannerOutput))

    def _on_plan(self, msg: PlannerOutput) -> None:
        self._plans["received"] += 1
        ok = msg.status == PlannerOutput.STATUS_OK
        self._plans["ok"] += int(ok)
        tick_ns = time_to_ns(msg.tick_stamp)
        decision = self._controller.offer_plan(
            status_ok=ok, status_text=f"status {msg.status}: {msg.status_reason}",
            make_plan=lambda: control_convert.reference_plan(
                msg, self._controller.config.max_plan_waypoints))
        if ok:
            self._note_decision(decision)
        if self._gate is not None:
            if tick_ns == 0 and not self._warned_no_tick:
                self._warned_no_tick = True
                self.get_logger().error("planner output without tick_stamp: lockstep cannot "
                                        "match it to a tick (waits run into lockstep.timeout)")
            ignored = self._gate.note_output(tick_ns)
            if ignored is not None:
                self._warn(("lockstep", "tick_ignored"),
                           f"lockstep: tick stamp ignored ({ignored}); "
                           f"{self._gate.ignored_ticks} ignored so far")
                return
            newest_ns = time_to_ns(msg.inputs.odometry_newest)
            if ok and newest_ns and newest_ns != tick_ns:
                # The planner ticked before it had taken the tick's own odometry: the run is
                # not exactly repeatable (see tick_settle of the CI simulator).
                self._input_lags += 1
                self._warn(("lockstep", "input_lag"),
                           f"lockstep: plan of tick {tick_ns / NS_PER_S:.3f} s used odometry up "
                           f"to {newest_ns / NS_PER_S:.3f} s")
            if self._held is not None and not self._gate.must_wait(self._held.stamp_ns):
                self._release(publish=True)

    def _warn(self, kind: tuple, text: str) -> None:
        """A WARN line, at most one per kind every _LOG_THROTTLE_S wall seconds (the first
        of each kind at once; the texts of one kind may differ)."""
        line = self._throttle.admit(kind, text, time.monotonic())
        if line is not None:
            self.get_logger().warning(line)

    def _note_decision(self, decision) -> None:
        """Count a tracked plan; log a refusal, throttled by its check (a waiting plan is
        decided later)."""
        if decision.accepted:
            self._plans["tracked"] += 1
        elif not decision.waiting:
            self._warn(("refusal", decision.kind, message_shape(decision.reason)),
                       decision.reason)

    # ------------------------------------------------------------------ outputs
    def _check_wired(self) -> bool:
        """True once the command's and the run state's publishers have a matched
        subscriber (checked here, on the sending side: a message is delivered once the
        sender knows its reader)."""
        if not self._wired:
            self._wired = (self._pub_cmd.get_subscription_count() > 0 and
                           (self._pub_pause is None or
                            self._pub_pause.get_subscription_count() > 0))
        return self._wired

    def _release(self, publish: bool) -> None:
        held, self._held = self._held, None
        if publish and held is not None:
            self._control(held)
        if self._paused:
            self._paused = False
            self._send_run_state(CarlaControl.PLAY)

    def _check_hold_timeout(self) -> None:
        if self._held is None:
            return
        if not self._wired and self._check_wired():
            held, self._held = self._held, None
            self._lockstep_step(held)
            return
        waited = time.monotonic() - self._held_since
        if waited > self._values["lockstep.timeout"] and not self._wired:
            self._gate.timeouts += 1
            self._wired = True
            self._warn(("lockstep", "timeout"),
                       f"lockstep: no subscriber of the vehicle command or the run state after "
                       f"{waited:.1f} s (wall); sending the commands anyway")
            self._release(publish=True)
        elif waited > self._values["lockstep.timeout"]:
            self._gate.timeouts += 1
            self._warn(("lockstep", "timeout"),
                       f"lockstep: no planner output for tick "
                       f"{self._held.stamp_ns / NS_PER_S:.3f} s after {waited:.1f} s (wall); "
                       f"sending the command without it")
            self._release(publish=True)

    def _send_run_state(self, command: int) -> None:
        if self._pub_pause is not None:
            self._pub_pause.publish(CarlaControl(command=command))

    def _control(self, odom: OdometryInput) -> None:
        result = self._controller.step(odom)
        if result.plan_decision is not None:
            self._note_decision(result.plan_decision)
        previous = self._last
        self._last = result
        self._pub_cmd.publish(control_convert.vehicle_control(result.command, odom.stamp_ns))
        if self._pub_ackermann is not None:
            self._pub_ackermann.publish(control_convert.ackermann_drive(
                result.wheel_angle, result.reference_speed or 0.0,
                result.reference_acceleration or 0.0, odom.stamp_ns))
        if result.event:
            text = f"t={odom.stamp_ns / NS_PER_S:.3f} s: {result.event}"
            # (rclpy fixes the severity per call site: one call per severity)
            if result.error:
                self.get_logger().error(text)
            elif result.mode == Mode.TRACKING:
                self.get_logger().info(text)
            else:
                self.get_logger().warning(text)
        if previous is None or previous.mode != result.mode or result.event:
            self._publish_diagnostics()

    def _watchdog(self) -> None:
        if self._last_odom_receipt_ns is None or self._odometry_lost:
            return
        silent = (self.get_clock().now().nanoseconds - self._last_odom_receipt_ns) / NS_PER_S
        if silent > self._values["odometry.timeout"]:
            self._odometry_lost = True
            stamp = self._last.stamp_ns if self._last is not None else 0
            self._pub_cmd.publish(control_convert.vehicle_control(
                self._controller.standstill_command(), stamp))
            self.get_logger().error(f"no odometry for {silent:.2f} s: full brake")
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        r, c = self._last, self._controller.counters
        if self._odometry_lost:
            level, message = Level.ERROR, "odometry lost: full brake"
        elif r is None:
            level, message = Level.WARN, "no odometry yet"
        elif self._controller.faulted:
            level, message = Level.ERROR, f"{r.mode.value}: {r.cause}"
        elif r.mode == Mode.TRACKING:
            level, message = Level.OK, "tracking"
        else:
            level, message = Level.WARN, f"{r.mode.value}: {r.cause}"

        def fmt(v):
            return "" if v is None else f"{v:.4f}"

        values = {"mode": "odometry_lost" if self._odometry_lost else
                  (r.mode.value if r else "none"),
                  "cause": r.cause if r else "", "stamp": fmt(r.stamp_ns / NS_PER_S if r else None),
                  "plan_age": fmt(r.plan_age_s if r else None),
                  "reference_speed": fmt(r.reference_speed if r else None),
                  "lateral_error": fmt(r.lateral_error_m if r else None),
                  "plans_received": str(self._plans["received"]),
                  "plans_ok": str(self._plans["ok"]),
                  "plans_tracked": str(self._plans["tracked"]),
                  "plans_refused": str(c.plans_refused),
                  "last_refusal": self._controller.last_refusal,
                  "refusals": ", ".join(f"{kind}={n}" for kind, n in sorted(c.refusals.items())),
                  "plans_waiting": str(c.plans_waiting),
                  "non_finite": str(c.non_finite),
                  "resets": str(c.resets), "stops": str(c.stops)}
        gate = self._gate
        if gate is not None:
            values.update(lockstep_waits=str(gate.waits),
                          lockstep_timeouts=str(gate.timeouts),
                          lockstep_breaks=str(self._lockstep_breaks),
                          lockstep_input_lags=str(self._input_lags),
                          lockstep_newest_tick=fmt(gate.newest_tick_ns / NS_PER_S
                                                   if gate.newest_tick_ns >= 0 else None),
                          lockstep_holding=fmt(self._held.stamp_ns / NS_PER_S
                                               if self._held is not None else None),
                          lockstep_ignored_ticks=str(gate.ignored_ticks),
                          lockstep_last_ignored=gate.last_ignored)
        report = HealthReport("tracking", level, message, values)
        now = self.get_clock().now().nanoseconds
        try:
            self._pub_diag.publish(to_diagnostic_array(
                [report], now, hardware_id=self.get_fully_qualified_name(),
                prefix=self.get_fully_qualified_name()))
        except Exception:
            if self.context.ok():
                raise


def main(args: Optional[list] = None) -> int:
    """Entry point of the controller_node executable (2: invalid parameters)."""
    return run_node(NODE_NAME, ControllerNode, SingleThreadedExecutor, args,
                    parameter_specs=CP.CONTROLLER_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
