"""TrackingController: newest valid plan + odometry -> one vehicle command per odometry sample.

Plan intake (`offer_plan`): only OK plans that pass plan_check (what the controller will
follow: sizes, speeds, accelerations, poses, lateral acceleration, curvature), in the
odometry frame, anchored where this controller's odometry had the base at t0 (within
max_anchor_error), newer than the tracked one and not from before the last odometry reset
replace the tracked plan. The anchor check is never skipped: without odometry a plan is
refused, and a plan whose t0 is after the newest odometry (at most max_t0_ahead) waits for
the odometry sample that reaches it. Anything else is refused with a reason naming the
check, and the tracked plan stays.

Per odometry sample (`step`): a jump in position or yaw, time going back or a new
odometry frame resets (the plan is dropped: its anchoring belongs to the old world);
then either TRACKING (plan age <= max_plan_age) or a controlled STOP with its cause
(no plan, stale plan, reset) at stop_deceleration down to standstill, where the brake is
held. Steering and throttle are always rate limited, so no cause produces a steering spike;
while stopping the wheel follows the last plan's path if it is still trusted, else it
returns to straight at the rate limit. Every command passes one guard (`_emit`): finite,
pedals in [0, 1], steer in [-1, 1]; a non-finite value on the way brakes fully, with an
error event naming it, until the next plan is accepted.

The time base is the odometry stamp (the sim time of the state), so the output depends
only on the sequence of messages, not on when they were processed.
"""
from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.spatial.transform import Rotation

from alpamayo_ros.control import laws, plan_check
from alpamayo_ros.control.config import ControllerConfig
from alpamayo_ros.control.reference_plan import PlanRejected, ReferencePlan
from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.types import NS_PER_S

# Odometry poses kept to check where a plan was anchored [s].
_POSE_HISTORY_S = 10.0
# A plan whose t0 lies more than this outside the kept odometry cannot be checked [s].
_ANCHOR_LOOKUP_TOLERANCE_S = 0.06
# Steps longer than this are not used for integration or rate limits (first sample,
# simulator paused for a long time) [s].
_MAX_DT_S = 0.5


def _first_non_finite(*named: tuple[str, Optional[float]]) -> str:
    """Name of the first value that is not a finite number ("" when all are)."""
    for name, value in named:
        if value is not None and not math.isfinite(value):
            return name
    return ""


class Mode(enum.Enum):
    TRACKING = "tracking"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class OdometryInput:
    """Pose of the odometry child frame (CARLA: the actor origin) in frame_id, and the
    forward speed [m/s] from the twist (child frame)."""

    stamp_ns: int
    frame_id: str
    xyz: np.ndarray
    quat_xyzw: np.ndarray
    speed: float


@dataclass(frozen=True)
class PlanDecision:
    """accepted: the plan is tracked now; waiting: decided at a later odometry sample;
    reason: the refusal's text; kind: the check that refused it (a short fixed name)."""

    accepted: bool
    reason: str = ""
    waiting: bool = False
    kind: str = ""


@dataclass(frozen=True)
class Command:
    """CARLA's vehicle command: throttle, brake in [0, 1]; steer in [-1, 1], + = right."""

    throttle: float
    brake: float
    steer: float


@dataclass
class StepResult:
    command: Command
    mode: Mode
    cause: str
    stamp_ns: int
    plan_age_s: Optional[float] = None
    reference_speed: Optional[float] = None
    reference_acceleration: Optional[float] = None
    lateral_error_m: Optional[float] = None
    wheel_angle: float = 0.0
    lookahead_m: Optional[float] = None
    # A message to log once (mode change, reset, ...), "" when nothing new happened.
    event: str = ""
    # The event is an error (a non-finite value met while computing the command).
    error: bool = False
    # The decision on a plan that waited for this odometry sample, else None.
    plan_decision: Optional[PlanDecision] = None


@dataclass
class _Stop:
    cause: str
    start_ns: int
    start_speed: float
    keep_path: bool
    # Brake fully (not at stop_deceleration) until the next plan: a non-finite value was met.
    full_brake: bool = False


@dataclass
class ControllerCounters:
    plans_accepted: int = 0
    plans_refused: int = 0
    resets: int = 0
    stops: int = 0
    plans_waiting: int = 0
    non_finite: int = 0
    refusals: dict = field(default_factory=dict)


class TrackingController:
    """See module docstring. Not thread-safe: call from one thread (the node's executor)."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self._offset = Pose.from_xyz_rpy(config.rear_axle_offset_xyz, (0.0, 0.0, 0.0))
        self._pi = laws.SpeedPI(config.speed_kp, config.speed_ki, config.speed_integral_limit)
        self.plan: Optional[ReferencePlan] = None
        # A checked plan whose t0 is after the newest odometry (anchor checked later).
        self._waiting: Optional[ReferencePlan] = None
        self._last_path: Optional[ReferencePlan] = None
        # The first stop starts with the first odometry sample (start_ns -1 until then).
        self._stop: Optional[_Stop] = _Stop("no plan received yet", -1, 0.0, False)
        self._poses: deque = deque()
        self._frame_id: Optional[str] = None
        self._prev: Optional[tuple[int, np.ndarray, float]] = None  # stamp, xy, yaw
        self._reset_ns: Optional[int] = None
        self._steer = 0.0
        self._throttle = 0.0
        self._mode = Mode.STOPPING
        self._pending_event = "controlled stop: no plan received yet"
        self.counters = ControllerCounters(stops=1)
        self.last_refusal = ""

    # ---------------------------------------------------------------- plans
    def offer_plan(self, *, status_ok: bool, status_text: str, make_plan) -> PlanDecision:
        """A new planner output. make_plan() builds the ReferencePlan (it may raise
        PlanRejected); it is called only for OK outputs. A plan whose t0 the odometry has
        not reached yet waits (decision.waiting) and is decided at the odometry sample that
        reaches it (StepResult.plan_decision)."""
        if not status_ok:
            return self._refuse("status", f"not tracked: {status_text}")
        try:
            plan = make_plan()
            plan_check.check_plan(plan, self.config)
        except PlanRejected as exc:
            return self._refuse(exc.kind, f"plan refused: {exc}")
        if self._prev is None:
            return self._refuse("no_odometry", "plan refused: no odometry yet, so its anchor "
                                "(the t0 pose) cannot be checked")
        ahead = (plan.t0_ns - self._prev[0]) / NS_PER_S
        if ahead > self.config.max_t0_ahead:
            return self._refuse(
                "future", f"plan refused: t0 is {ahead:.3f} s ahead of the newest "
                f"odometry (max_t0_ahead {self.config.max_t0_ahead:g} s)")
        decision = self._relate(plan)
        if decision is not None:
            return decision
        if ahead > 0:
            if self._waiting is not None and plan.t0_ns <= self._waiting.t0_ns:
                return self._refuse(
                    "older", f"plan ignored: t0 {plan.t0_ns / NS_PER_S:.3f} s is not newer "
                    f"than the waiting plan's {self._waiting.t0_ns / NS_PER_S:.3f} s")
            self._waiting = plan
            self.counters.plans_waiting += 1
            return PlanDecision(False, f"plan waits: t0 is {ahead:.3f} s ahead of the newest "
                                "odometry; its anchor is checked when the odometry reaches it",
                                waiting=True)
        return self._anchor_and_accept(plan)

    def refuse_plan(self, rejection: PlanRejected) -> PlanDecision:
        """Count and keep a refusal decided before a plan could be built (e.g. an oversized
        message that is never deserialized)."""
        return self._refuse(rejection.kind, f"plan refused: {rejection}")

    def _relate(self, plan: ReferencePlan) -> Optional[PlanDecision]:
        """The refusal of a plan that cannot replace the tracked one (frame, reset, age),
        None when it can."""
        if self._frame_id is not None and plan.odom_frame_id != self._frame_id:
            return self._refuse(
                "frame", f"plan refused: its frame {plan.odom_frame_id!r} cannot be related "
                f"to the odometry frame {self._frame_id!r}")
        if self._reset_ns is not None and plan.t0_ns < self._reset_ns:
            return self._refuse(
                "before_reset", f"plan refused: t0 {plan.t0_ns / NS_PER_S:.3f} s is before "
                f"the odometry reset at {self._reset_ns / NS_PER_S:.3f} s")
        if self.plan is not None and plan.t0_ns <= self.plan.t0_ns:
            return self._refuse(
                "older", f"plan ignored: t0 {plan.t0_ns / NS_PER_S:.3f} s is not newer than "
                f"the tracked plan's {self.plan.t0_ns / NS_PER_S:.3f} s")
        return None

    def _anchor_and_accept(self, plan: ReferencePlan) -> PlanDecision:
        at_t0 = self._position_at(plan.t0_ns)
        if at_t0 is None:
            return self._refuse(
                "anchor", f"plan refused: no odometry sample within "
                f"{_ANCHOR_LOOKUP_TOLERANCE_S:g} s of its t0 {plan.t0_ns / NS_PER_S:.3f} s, so "
                "its anchor (the t0 pose) cannot be checked")
        error = float(np.hypot(*(plan.t0_pose.position[:2] - at_t0)))
        if not error <= self.config.max_anchor_error:
            return self._refuse(
                "anchor", f"plan refused: its t0 pose is {error:.2f} m from where the "
                f"odometry had the rear axle at t0 (max_anchor_error "
                f"{self.config.max_anchor_error:g} m): not the same frame or vehicle")
        self.plan = plan
        self._last_path = plan
        self.counters.plans_accepted += 1
        return PlanDecision(True)

    def _decide_waiting(self) -> Optional[PlanDecision]:
        """Decide the waiting plan once the newest odometry has reached its t0."""
        plan = self._waiting
        if plan is None or self._prev is None or plan.t0_ns > self._prev[0]:
            return None
        self._waiting = None
        return self._relate(plan) or self._anchor_and_accept(plan)

    def _refuse(self, kind: str, reason: str) -> PlanDecision:
        self.counters.plans_refused += 1
        self.counters.refusals[kind] = self.counters.refusals.get(kind, 0) + 1
        self.last_refusal = reason
        return PlanDecision(False, reason, kind=kind)

    def _position_at(self, stamp_ns: int) -> Optional[np.ndarray]:
        """Rear-axle position of the kept odometry sample nearest to stamp_ns; None when
        none is within _ANCHOR_LOOKUP_TOLERANCE_S."""
        if not self._poses:
            return None
        stamps = np.fromiter((s for s, _ in self._poses), dtype=np.int64)
        i = int(np.argmin(np.abs(stamps - stamp_ns)))
        if abs(int(stamps[i]) - stamp_ns) > _ANCHOR_LOOKUP_TOLERANCE_S * NS_PER_S:
            return None
        return self._poses[i][1]

    # ---------------------------------------------------------------- odometry
    def rear_axle_pose(self, odom: OdometryInput) -> tuple[np.ndarray, float]:
        """Rear-axle position (2,) and yaw in the odometry frame."""
        rot = Rotation.from_quat(odom.quat_xyzw)
        xyz = np.asarray(odom.xyz, dtype=np.float64) + rot.apply(self._offset.position)
        forward = rot.apply([1.0, 0.0, 0.0])
        return xyz[:2], float(math.atan2(forward[1], forward[0]))

    def step(self, odom: OdometryInput) -> StepResult:
        """One command for one odometry sample (see module docstring)."""
        cfg = self.config
        if not (np.all(np.isfinite(odom.xyz)) and np.all(np.isfinite(odom.quat_xyzw))
                and math.isfinite(odom.speed) and np.linalg.norm(odom.quat_xyzw) > 1e-9):
            # Unusable state: brake, hold the wheel (nothing to steer by).
            return self._emit(odom.stamp_ns, Mode.STOPPING, "odometry not finite",
                              0.0, 1.0, self._steer, 0.0, event="odometry not finite: "
                              "braking, steering held")
        xy, yaw = self.rear_axle_pose(odom)
        dt = 0.0
        if self._prev is not None:
            prev_ns, prev_xy, prev_yaw = self._prev
            dt = (odom.stamp_ns - prev_ns) / NS_PER_S
            reason = None
            if self._frame_id is not None and odom.frame_id != self._frame_id:
                reason = (f"odometry frame changed from {self._frame_id!r} to "
                          f"{odom.frame_id!r}")
            elif dt < 0:
                reason = f"odometry time went back {-dt:.3f} s (simulator reset)"
            else:
                # The reported speed counts at most max_vehicle_speed: a twist can't hide a
                # teleport.
                speed = min(abs(odom.speed), cfg.max_vehicle_speed)
                jump = float(np.hypot(*(xy - prev_xy)))
                allowed = cfg.max_position_jump + 2.0 * speed * dt
                dyaw = abs(math.remainder(yaw - prev_yaw, 2.0 * math.pi))
                if jump > allowed:
                    reason = (f"odometry jumped {jump:.2f} m in {dt:.3f} s (allowed "
                              f"{allowed:.2f} m): teleport or simulator reset")
                elif dyaw > cfg.max_yaw_jump + speed * dt:
                    reason = (f"odometry yaw jumped {math.degrees(dyaw):.1f} deg in "
                              f"{dt:.3f} s: teleport or simulator reset")
            if reason is not None:
                self._reset(odom, reason)
                dt = 0.0
        if self._stop is not None and self._stop.start_ns < 0:
            self._stop = _Stop(self._stop.cause, odom.stamp_ns, self._start_speed(odom), False)
        self._frame_id = odom.frame_id
        self._prev = (odom.stamp_ns, xy, yaw)
        self._poses.append((odom.stamp_ns, xy))
        while self._poses and odom.stamp_ns - self._poses[0][0] > _POSE_HISTORY_S * NS_PER_S:
            self._poses.popleft()
        if dt > _MAX_DT_S:
            dt = 0.0
        decided = self._decide_waiting()

        plan = self.plan
        if plan is not None:
            age = plan.age_s(odom.stamp_ns)
            if age > cfg.max_plan_age:
                self.plan = None
                self._begin_stop(f"plan stale: age {age:.2f} s > max_plan_age "
                                 f"{cfg.max_plan_age:g} s (t0 {plan.t0_ns / NS_PER_S:.3f} s)",
                                 odom, keep_path=True)
            elif self._stop is not None:
                self._pending_event = (f"tracking plan of t0 {plan.t0_ns / NS_PER_S:.3f} s "
                                       f"(was stopping: {self._stop.cause})")
                self._stop = None
                self._pi.reset()
        elif self._stop is None:
            self._begin_stop("no plan", odom, keep_path=True)

        if self._stop is None:
            result = self._track(odom, xy, yaw, dt)
        else:
            result = self._stopping(odom, xy, yaw, dt)
        result.plan_decision = decided
        return result

    def _reset(self, odom: OdometryInput, reason: str) -> None:
        self.counters.resets += 1
        self.plan = None
        self._waiting = None
        self._last_path = None
        self._poses.clear()
        self._pi.reset()
        self._reset_ns = odom.stamp_ns
        self._stop = None
        self._begin_stop(f"{reason}; plan dropped", odom, keep_path=False)

    def _begin_stop(self, cause: str, odom: OdometryInput, keep_path: bool) -> None:
        if self._stop is None:
            self.counters.stops += 1
        self._stop = _Stop(cause, odom.stamp_ns, self._start_speed(odom), keep_path)
        self._pending_event = f"controlled stop: {cause}"

    def _start_speed(self, odom: OdometryInput) -> float:
        return float(np.clip(odom.speed, 0.0, self.config.max_vehicle_speed))

    # ---------------------------------------------------------------- laws
    def _steer_along(self, path: ReferencePlan, xy, yaw: float, speed: float
                     ) -> tuple[float, float, float]:
        """(wheel angle, lookahead, lateral error) of pure pursuit on path."""
        cfg = self.config
        lookahead = laws.lookahead_distance(speed, cfg.lookahead_base, cfg.lookahead_gain,
                                            cfg.lookahead_min, cfg.lookahead_max)
        nearest = path.project(xy)
        target = path.point_at_distance(nearest.s + lookahead)
        angle = laws.pure_pursuit_angle(xy, yaw, target.position, cfg.wheelbase)
        return angle, lookahead, -nearest.lateral

    def _track(self, odom: OdometryInput, xy, yaw: float, dt: float) -> StepResult:
        cfg = self.config
        plan = self.plan
        assert plan is not None
        reference = plan.state_at(odom.stamp_ns + int(round(cfg.preview_time * NS_PER_S)))
        angle, lookahead, lateral = self._steer_along(plan, xy, yaw, odom.speed)
        accel = self._pi.update(reference.speed, odom.speed, reference.acceleration, dt,
                                -cfg.full_brake_decel, cfg.full_throttle_accel)
        bad = _first_non_finite(("reference speed", reference.speed),
                                ("reference acceleration", reference.acceleration),
                                ("wheel angle", angle), ("lateral error", lateral),
                                ("acceleration command", accel))
        if bad:
            return self._fault(odom.stamp_ns, bad)
        throttle, brake = laws.acceleration_to_pedals(accel, cfg.full_throttle_accel,
                                                      cfg.full_brake_decel,
                                                      cfg.brake_deadband)
        result = self._emit(odom.stamp_ns, Mode.TRACKING, "", throttle, brake,
                            laws.wheel_angle_to_steer(angle, cfg.max_wheel_angle), dt)
        if result.error:
            return result
        result.plan_age_s = plan.age_s(odom.stamp_ns)
        result.reference_speed = reference.speed
        result.reference_acceleration = reference.acceleration
        result.lateral_error_m = lateral
        result.wheel_angle = angle
        result.lookahead_m = lookahead
        return result

    def _stopping(self, odom: OdometryInput, xy, yaw: float, dt: float) -> StepResult:
        cfg = self.config
        stop = self._stop
        assert stop is not None
        if stop.full_brake:
            return self._emit(odom.stamp_ns, Mode.STOPPING, stop.cause, 0.0, 1.0, self._steer,
                              dt)
        elapsed = max(odom.stamp_ns - stop.start_ns, 0) / NS_PER_S
        v_ref = max(stop.start_speed - cfg.stop_deceleration * elapsed, 0.0)
        path = self._last_path if stop.keep_path else None
        if path is not None and odom.speed > cfg.standstill_speed:
            angle, _, lateral = self._steer_along(path, xy, yaw, odom.speed)
            steer = laws.wheel_angle_to_steer(angle, cfg.max_wheel_angle)
        else:
            steer, lateral = 0.0, None  # straight ahead, reached at the rate limit
        if v_ref <= 0.0 and odom.speed <= cfg.standstill_speed:
            self._pi.reset()
            result = self._emit(odom.stamp_ns, Mode.STOPPED, stop.cause, 0.0,
                                cfg.standstill_brake, self._steer, dt)
        else:
            a_ref = -cfg.stop_deceleration if v_ref > 0.0 else 0.0
            accel = self._pi.update(v_ref, odom.speed, a_ref, dt, -cfg.full_brake_decel, 0.0)
            throttle, brake = laws.acceleration_to_pedals(
                accel, cfg.full_throttle_accel, cfg.full_brake_decel, cfg.brake_deadband)
            result = self._emit(odom.stamp_ns, Mode.STOPPING, stop.cause, throttle, brake,
                                steer, dt)
            result.reference_speed = v_ref
            result.reference_acceleration = a_ref
        if not result.error:
            result.lateral_error_m = lateral
        return result

    def _fault(self, stamp_ns: int, what: str) -> StepResult:
        """A non-finite value on the way to the command: full brake, wheel held, plans
        dropped until the next one is accepted."""
        self.counters.non_finite += 1
        self.plan = None
        self._last_path = None
        self._pi.reset()
        if self._stop is None:
            self.counters.stops += 1
        cause = f"non-finite {what}: full brake until the next plan"
        self._stop = _Stop(cause, stamp_ns, 0.0, False, full_brake=True)
        self._throttle = 0.0
        self._mode = Mode.STOPPING
        self._pending_event = ""
        return StepResult(command=Command(0.0, 1.0, self._steer), mode=Mode.STOPPING,
                          cause=cause, stamp_ns=stamp_ns,
                          wheel_angle=laws.steer_to_wheel_angle(self._steer,
                                                                self.config.max_wheel_angle),
                          event=cause, error=True)

    def _emit(self, stamp_ns: int, mode: Mode, cause: str, throttle: float, brake: float,
              steer: float, dt: float, event: str = "") -> StepResult:
        """The command of this step: rate limits, then the guard that every command passes
        (finite, throttle and brake in [0, 1], steer in [-1, 1])."""
        cfg = self.config
        bad = _first_non_finite(("throttle", throttle), ("brake", brake), ("steer", steer))
        if bad:
            return self._fault(stamp_ns, bad)
        self._steer = laws.rate_limit(self._steer, float(np.clip(steer, -1.0, 1.0)),
                                      cfg.steer_rate_limit, dt)
        throttle = float(np.clip(throttle, 0.0, 1.0))
        # Throttle rises at the rate limit, drops at once (releasing it is always safe).
        self._throttle = min(throttle, laws.rate_limit(self._throttle, throttle,
                                                       cfg.throttle_rate_limit, dt))
        if not event:
            event = self._pending_event
            if not event and mode != self._mode:
                event = f"{mode.value}: {cause}" if cause else mode.value
        self._mode = mode
        self._pending_event = ""
        return StepResult(command=Command(self._throttle, float(np.clip(brake, 0.0, 1.0)),
                                          self._steer),
                          mode=mode, cause=cause, stamp_ns=stamp_ns,
                          wheel_angle=laws.steer_to_wheel_angle(self._steer,
                                                                cfg.max_wheel_angle),
                          event=event)

    def standstill_command(self) -> Command:
        """Command of a watchdog stop (no odometry): full brake, wheel held."""
        self._throttle = 0.0
        return Command(0.0, 1.0, self._steer)

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def faulted(self) -> bool:
        """Braking fully after a non-finite value, until the next plan is accepted."""
        return self._stop is not None and self._stop.full_brake

    @property
    def stop_cause(self) -> str:
        return self._stop.cause if self._stop is not None else ""
