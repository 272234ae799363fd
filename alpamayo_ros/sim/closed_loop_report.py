"""Closed-loop report: metrics of a recorded run, the PNG, and the golden comparison.

Input is the bag the CI simulator records (odometry of the actor origin, plans,
/diagnostics, commands) plus the route and the rear-axle offset; everything is computed
from the bag, so a report can be rebuilt from it. ROS-free (rosbags via bag/bag_io).

Metrics (report["metrics"]):
* lateral_deviation_rms_m / _max_m: rear axle to the route's centre line.
* route_progress_m: station at the end minus station at the start.
* speed_error_rms_mps: vehicle speed minus the speed a car can reach at its station
  (sim/scoring.reachable_speed: the limits, lowered ahead of lower limits and of the stop
  (route's end, or an obstacle in the lane) at 2 m/s^2, and from the start speed on
  reached at 1.5 m/s^2, the route oracle's limits).
* max_jerk_mps3: largest |d(acceleration)/dt|, acceleration from the odometry speed.
* plans_total / plans_ok, statuses; plan_age_p50_s: median age (now - t0) of OK plans
  when they reach the controller: tick - t0 in lockstep (the simulator is held at the tick
  until the plan arrives), recorder receipt time - t0 in real-time mode.
* ticks_missing: planning ticks (multiples of the period) with no output at all.
* plans_ignored: recorded plans whose tick is more than one period after the sim time
  they were recorded at, left out of every plan metric: plans of an earlier time line
  (a planner kept across a suite's runs replays its last plans, latched, to the next
  simulator's recorder when it matches; the controller's lockstep gate ignores them too).
* max_tracked_plan_age_s, stale_plans_tracked: plan ages the controller reported while
  tracking (its /diagnostics) and how many exceeded max_plan_age (must be 0).
* stops: each controlled stop of the controller (/diagnostics): start time (the odometry
  stamp the controller reported), cause, and when tracking resumed (None: it did not).
* off_road_events: times the rear axle left the asphalt (beyond the road edge by more
  than half the vehicle's width).
* odometry_sha256: digest of the odometry stream (stamps and poses): equal digests =
  identical trajectories (the determinism check).

Scores (report["scores"], sim/scoring.py): "leaderboard" (DS, RC, IP, infractions,
collisions from the bridge's /carla/<role>/collision events with the types of
/carla/actor_list, lane invasions from /carla/<role>/lane_invasion, off-lane percentage,
how the route ended), "comfort" (Bench2Drive), "efficiency_percent" and "plan_age_p50_s",
all on the part of the run before the route ended (completion, deviation, blocked).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from alpamayo_ros.core.outputs import PLAN_TOPIC
from alpamayo_ros.core.types import NS_PER_S
from alpamayo_ros.sim import scoring
from alpamayo_ros.sim.obstacles import VEHICLE_BOX, ObstacleField, stop_station
from alpamayo_ros.sim.route import Route

REPORT_FORMAT = "alpamayo_closed_loop_report/1"
VEHICLE_HALF_WIDTH_M = 0.95
_STOP_MODES = ("stopping", "stopped", "odometry_lost")
_STATUS_NAMES = {0: "OK", 1: "SKIPPED", 2: "INVALID_OUTPUT", 3: "MODEL_ERROR"}
# Limits of the reachable speed profile [m/s^2] (the route oracle's defaults).
TARGET_ACCELERATION = 1.5
TARGET_DECELERATION = 2.0


@dataclass
class RunRecord:
    """Arrays of a recorded run (times in int ns of sim time)."""

    odom_ns: np.ndarray                 # (N,)
    actor_xy: np.ndarray                # (N, 2)
    yaw: np.ndarray                     # (N,)
    speed: np.ndarray                   # (N,)
    plans: list = field(default_factory=list)        # dicts: tick_ns, t0_ns, log_ns, status, reason
    diagnostics: list = field(default_factory=list)  # dicts: t_ns, values (controller status)
    commands: int = 0
    collisions: list = field(default_factory=list)   # dicts: t_ns, actor_id
    lane_invasions: list = field(default_factory=list)  # dicts: t_ns, markings (ints)
    actor_types: dict = field(default_factory=dict)  # actor id -> CARLA type id


def read_bag(path: Path | str, role_name: str = "ego_vehicle",
             plan_topic: str = "/" + PLAN_TOPIC) -> RunRecord:
    from alpamayo_ros.bag import bag_io
    odom_topic = f"/carla/{role_name}/odometry"
    collision_topic = f"/carla/{role_name}/collision"
    invasion_topic = f"/carla/{role_name}/lane_invasion"
    stamps, xy, yaw, speed, plans, diags = [], [], [], [], [], []
    collisions, invasions, actor_types = [], [], {}
    commands = 0
    with bag_io.BagReader(path) as reader:
        counts = reader.message_counts
        commands = counts.get(f"/carla/{role_name}/vehicle_control_cmd", 0)
        for m in reader.messages([odom_topic, plan_topic, "/diagnostics", collision_topic,
                                  invasion_topic, "/carla/actor_list"]):
            msg = m.msg
            if m.topic == collision_topic:
                collisions.append({"t_ns": m.stamp_ns, "actor_id": int(msg.other_actor_id)})
            elif m.topic == invasion_topic:
                invasions.append({"t_ns": m.stamp_ns,
                                  "markings": [int(k) for k in msg.crossed_lane_markings]})
            elif m.topic == "/carla/actor_list":
                actor_types.update({int(a.id): str(a.type) for a in msg.actors})
            elif m.topic == odom_topic:
                q = msg.pose.pose.orientation
                stamps.append(m.stamp_ns)
                xy.append((msg.pose.pose.position.x, msg.pose.pose.position.y))
                yaw.append(math.atan2(2.0 * (q.w * q.z + q.x * q.y),
                                      1.0 - 2.0 * (q.y * q.y + q.z * q.z)))
                speed.append(msg.twist.twist.linear.x)
            elif m.topic == plan_topic:
                plans.append({"tick_ns": bag_io.stamp_to_ns(msg.tick_stamp), "t0_ns": m.stamp_ns,
                              "log_ns": m.log_time_ns, "status": int(msg.status),
                              "reason": msg.status_reason})
            else:
                for status in msg.status:
                    if "alpamayo_controller" in status.name:
                        diags.append({"t_ns": bag_io.stamp_to_ns(msg.header.stamp),
                                      "log_ns": m.log_time_ns,
                                      "values": {kv.key: kv.value for kv in status.values}})
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
    return RunRecord(odom_ns=np.asarray(stamps, dtype=np.int64)[order],
                     actor_xy=np.asarray(xy, dtype=np.float64).reshape(-1, 2)[order],
                     yaw=np.asarray(yaw, dtype=np.float64)[order],
                     speed=np.asarray(speed, dtype=np.float64)[order],
                     plans=plans, diagnostics=diags, commands=commands,
                     collisions=collisions, lane_invasions=invasions, actor_types=actor_types)


def odometry_digest(record: RunRecord) -> str:
    h = hashlib.sha256()
    h.update(record.odom_ns.tobytes())
    h.update(np.ascontiguousarray(record.actor_xy).tobytes())
    h.update(record.yaw.tobytes())
    h.update(record.speed.tobytes())
    return h.hexdigest()


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def stops_from_diagnostics(diagnostics: Sequence[Mapping]) -> list[dict]:
    """Controlled stops: a new entry each time the controller enters a stop mode or the
    cause changes; `ended_s` when tracking resumed."""
    stops: list[dict] = []
    current = None
    def when(d):  # the odometry stamp the status is about; else the message stamp
        stamp = d["values"].get("stamp", "")
        return float(stamp) if stamp else d["t_ns"] / NS_PER_S

    for d in sorted(diagnostics, key=lambda d: (when(d), d["log_ns"])):
        mode, cause = d["values"].get("mode", ""), d["values"].get("cause", "")
        t = when(d)
        if mode in _STOP_MODES:
            key = cause if mode != "odometry_lost" else "odometry lost"
            if current is None or current["cause"] != key:
                current = {"start_s": round(t, 3), "cause": key, "ended_s": None}
                stops.append(current)
        elif mode == "tracking" and current is not None:
            current["ended_s"] = round(t, 3)
            current = None
    return stops


def compute_report(record: RunRecord, route: Route, *, rear_axle_offset_x: float,
                   planning_period_s: float, lockstep: bool, max_plan_age_s: float = 1.0,
                   run: Optional[Mapping[str, Any]] = None) -> dict:
    """The report dict (see module docstring)."""
    if len(record.odom_ns) < 2:
        raise ValueError(f"run has {len(record.odom_ns)} odometry samples, need >= 2")
    axle = record.actor_xy + rear_axle_offset_x * np.stack([np.cos(record.yaw),
                                                            np.sin(record.yaw)], axis=1)
    proj = route.project(axle)
    t = record.odom_ns / NS_PER_S  # sim time
    target = scoring.reachable_speed(
        route, proj.s, float(proj.s[0]), float(record.speed[0]), TARGET_ACCELERATION,
        TARGET_DECELERATION, stop_station(route.length, route.obstacles,
                                          VEHICLE_BOX.front_from(rear_axle_offset_x)))
    accel = np.gradient(record.speed, t) if len(t) > 2 else np.zeros_like(t)
    jerk = np.gradient(accel, t) if len(t) > 2 else np.zeros_like(t)
    lo, hi = route.road.asphalt
    off = (proj.lateral < lo + VEHICLE_HALF_WIDTH_M) | (proj.lateral > hi - VEHICLE_HALF_WIDTH_M)
    off_events = int(np.count_nonzero(off[1:] & ~off[:-1]) + int(off[0]))

    period_ns = int(round(planning_period_s * NS_PER_S))
    plans = [p for p in record.plans if p["tick_ns"] <= p["log_ns"] + period_ns]
    ok = [p for p in plans if p["status"] == 0]
    ages = [((p["tick_ns"] if lockstep else max(p["log_ns"], p["tick_ns"])) - p["t0_ns"])
            / NS_PER_S for p in ok]
    end_ns = int(record.odom_ns[-1])
    expected = set(range(period_ns, end_ns, period_ns))  # the last tick may end the run
    answered = {p["tick_ns"] for p in plans}
    missing = sorted(expected - answered)
    statuses: dict[str, int] = {}
    for p in plans:
        name = _STATUS_NAMES.get(p["status"], str(p["status"]))
        statuses[name] = statuses.get(name, 0) + 1
    last_diag = record.diagnostics[-1]["values"] if record.diagnostics else {}
    tracked_ages = [float(d["values"]["plan_age"]) for d in record.diagnostics
                    if d["values"].get("mode") == "tracking" and d["values"].get("plan_age")]
    metrics = {
        "duration_s": round(float(t[-1] - t[0]), 6),
        "lateral_deviation_rms_m": _rms(proj.lateral),
        "lateral_deviation_max_m": float(np.max(np.abs(proj.lateral))),
        "route_progress_m": float(proj.s[-1] - proj.s[0]),
        "speed_error_rms_mps": _rms(record.speed - target),
        "mean_speed_mps": float(np.mean(record.speed)),
        "max_jerk_mps3": float(np.max(np.abs(jerk))),
        "plans_total": len(plans),
        "plans_ignored": len(record.plans) - len(plans),
        "plans_ok": len(ok),
        "plan_statuses": statuses,
        "plan_age_p50_s": float(np.median(ages)) if ages else None,
        "plan_age_max_s": float(np.max(ages)) if ages else None,
        "ticks_expected": len(expected),
        "ticks_missing": [round(m / NS_PER_S, 3) for m in missing],
        "max_tracked_plan_age_s": max(tracked_ages) if tracked_ages else None,
        "stale_plans_tracked": sum(a > max_plan_age_s for a in tracked_ages),
        "stops": stops_from_diagnostics(record.diagnostics),
        "off_road_events": off_events,
        "commands": record.commands,
        "lockstep": {k: int(last_diag[k]) for k in ("lockstep_waits", "lockstep_timeouts",
                                                    "lockstep_breaks", "lockstep_input_lags")
                     if k in last_diag},
        "odometry_sha256": odometry_digest(record),
    }
    skipped = [p["reason"] for p in plans if p["status"] != 0]
    scores = compute_scores(record, route, t, target, metrics["plan_age_p50_s"])
    return {"format": REPORT_FORMAT, "route": route.describe(), "run": dict(run or {}),
            "metrics": metrics, "scores": scores,
            "skip_reasons_first": skipped[:5],
            "series": {"t_s": t.round(4).tolist(), "station_m": proj.s.round(3).tolist(),
                       "lateral_m": proj.lateral.round(4).tolist(),
                       "speed_mps": record.speed.round(4).tolist(),
                       "target_speed_mps": target.round(4).tolist()},
            "path": {"x": axle[:, 0].round(3).tolist(), "y": axle[:, 1].round(3).tolist()}}


def compute_scores(record: RunRecord, route: Route, t: np.ndarray, target: np.ndarray,
                   plan_age_p50_s: Optional[float]) -> dict:
    """report["scores"] (module docstring): the leaderboard's on the actor origin (the
    vehicle location its criteria use), comfort and efficiency up to the route's end."""
    proj = route.project(record.actor_xy)
    end_xy, _ = route.pose_at([route.length])
    index = np.clip(np.searchsorted(record.odom_ns, [c["t_ns"] for c in record.collisions]),
                    0, len(t) - 1)
    events = [{"t_s": c["t_ns"] / NS_PER_S, "actor_id": c["actor_id"],
               "x": record.actor_xy[i, 0], "y": record.actor_xy[i, 1],
               "speed": record.speed[i]} for c, i in zip(record.collisions, index)]
    trace = scoring.RouteTrace(
        t_s=t, station_m=proj.s, lateral_m=proj.lateral,
        heading_error_rad=record.yaw - proj.heading, speed_mps=record.speed,
        distance_to_end_m=np.hypot(*(record.actor_xy - end_xy[0]).T),
        route_length_m=route.length, lane_width_m=route.road.lane_width,
        collisions=scoring.count_collisions(events, record.actor_types),
        lane_invasions=[{"t_s": e["t_ns"] / NS_PER_S,
                         "markings": [scoring.LANE_MARKINGS.get(k, str(k))
                                      for k in e["markings"]]}
                        for e in record.lane_invasions])
    leaderboard = scoring.score_route(trace)
    scored = t <= leaderboard["ended_s"] + 1e-9
    return {"leaderboard": leaderboard,
            "comfort": scoring.comfort(t[scored], record.yaw[scored], record.speed[scored]),
            "efficiency_percent": scoring.efficiency(record.speed[scored], target[scored]),
            "collision_events": len(record.collisions),
            "plan_age_p50_s": plan_age_p50_s}


def write_plot(report: Mapping, route: Route, path: Path) -> None:
    """Top-down route and driven path; lateral deviation and speed over time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 7))
    ax = fig.add_subplot(1, 2, 1)
    lo, hi = route.road.asphalt
    normal = np.stack([-np.sin(route.heading), np.cos(route.heading)], axis=1)
    for e, style in ((lo, "k-"), (hi, "k-"), (route.road.centre_line, "k--")):
        edge = route.xy + normal * e
        ax.plot(edge[:, 0], edge[:, 1], style, lw=0.6)
    ax.plot(route.xy[:, 0], route.xy[:, 1], color="0.6", lw=1.0, label="route (lane centre)")
    for footprint in ObstacleField(route, route.obstacles).footprints:
        closed = np.vstack([footprint, footprint[:1]])
        ax.fill(closed[:, 0], closed[:, 1], color="tab:orange", alpha=0.8)
    ax.plot(report["path"]["x"], report["path"]["y"], "r-", lw=1.2, label="driven (rear axle)")
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.legend(loc="best", fontsize=8)
    m = report["metrics"]
    lb = report.get("scores", {}).get("leaderboard")
    ax.set_title(f"{report['run'].get('planner', '')}: lateral RMS "
                 f"{m['lateral_deviation_rms_m']:.3f} m, progress {m['route_progress_m']:.0f} m"
                 + (f"\nDS {lb['driving_score']:.1f} (RC {lb['route_completion']:.1f} x IP "
                    f"{lb['infraction_penalty']:.3f})" if lb else ""))
    s = report["series"]
    ax2 = fig.add_subplot(2, 2, 2)
    ax2.plot(s["t_s"], s["lateral_m"], "b-")
    ax2.set_ylabel("lateral deviation [m]")
    ax2.grid(True, lw=0.3)
    ax3 = fig.add_subplot(2, 2, 4, sharex=ax2)
    ax3.plot(s["t_s"], s["speed_mps"], "b-", label="speed")
    ax3.plot(s["t_s"], s["target_speed_mps"], "k--", lw=0.8, label="route target")
    for stop in m["stops"]:
        ax3.axvline(stop["start_s"], color="r", lw=0.6)
    ax3.set_xlabel("sim time [s]")
    ax3.set_ylabel("speed [m/s]")
    ax3.legend(loc="best", fontsize=8)
    ax3.grid(True, lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------ golden comparison
@dataclass(frozen=True)
class Tolerances:
    """Allowed worsening against a golden report: absolute + relative to the golden."""

    lateral_abs_m: float = 0.05
    progress_abs_m: float = 2.0
    speed_abs_mps: float = 0.1
    jerk_abs: float = 2.0
    relative: float = 0.2
    progress_relative: float = 0.05
    score_abs: float = 1.0   # driving score and route completion points [0..100]


def compare(current: Mapping, golden: Mapping, tol: Tolerances = Tolerances()
            ) -> tuple[list[str], list[str]]:
    """(regressions, notes). Raises ValueError when the reports cannot be compared."""
    if current.get("format") != REPORT_FORMAT or golden.get("format") != REPORT_FORMAT:
        raise ValueError(f"report formats: have {current.get('format')!r} and golden "
                         f"{golden.get('format')!r}, need {REPORT_FORMAT!r}")
    if current["route"]["name"] != golden["route"]["name"]:
        raise ValueError(f"routes differ: {current['route']['name']!r} vs golden "
                         f"{golden['route']['name']!r}")
    c, g = current["metrics"], golden["metrics"]
    regressions, notes = [], []

    def worse(name, allowed_abs, higher_is_worse=True, relative=tol.relative):
        cv, gv = c.get(name), g.get(name)
        if gv is None:
            return
        if cv is None:
            regressions.append(f"{name}: missing (golden {gv})")
            return
        limit = (gv + allowed_abs + relative * abs(gv) if higher_is_worse
                 else gv - allowed_abs - relative * abs(gv))
        bad = cv > limit if higher_is_worse else cv < limit
        line = f"{name}: golden {gv:.4g} -> {cv:.4g} (limit {limit:.4g})"
        (regressions if bad else notes).append(line)

    worse("lateral_deviation_rms_m", tol.lateral_abs_m)
    worse("lateral_deviation_max_m", 2 * tol.lateral_abs_m)
    worse("speed_error_rms_mps", tol.speed_abs_mps)
    worse("max_jerk_mps3", tol.jerk_abs)
    worse("route_progress_m", tol.progress_abs_m, higher_is_worse=False,
          relative=tol.progress_relative)
    for name in ("off_road_events",):
        if c[name] > g[name]:
            regressions.append(f"{name}: golden {g[name]} -> {c[name]}")
    if c["plans_ok"] < g["plans_ok"]:
        regressions.append(f"plans_ok: golden {g['plans_ok']} -> {c['plans_ok']}")
    if len(c["stops"]) > len(g["stops"]):
        regressions.append(f"stops: golden {len(g['stops'])} -> {len(c['stops'])}: "
                           + "; ".join(s["cause"] for s in c["stops"]))
    if c["ticks_missing"] and not g["ticks_missing"]:
        regressions.append(f"ticks_missing: {c['ticks_missing'][:5]}")
    cs, gs = current.get("scores"), golden.get("scores")
    if cs and gs:
        cl, gl = cs["leaderboard"], gs["leaderboard"]
        for name in ("driving_score", "route_completion"):
            line = f"{name}: golden {gl[name]:.4g} -> {cl[name]:.4g}"
            (regressions if cl[name] < gl[name] - tol.score_abs else notes).append(line)
        if cl["infractions_total"] > gl["infractions_total"]:
            regressions.append(f"infractions: golden {gl['infractions']} -> "
                               f"{cl['infractions']}")
    if c.get("odometry_sha256") != g.get("odometry_sha256"):
        notes.append("trajectory differs from the golden run (digests differ)")
    return regressions, notes


def load_report(path: Path | str) -> dict:
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read report: {exc}") from exc
    if not isinstance(report, dict) or "metrics" not in report:
        raise ValueError(f"{path}: not a closed-loop report (no 'metrics')")
    return report
