"""Driving scores as the field reports them: CARLA Leaderboard 2.0 and Bench2Drive.

ROS-free (numpy, scipy). The definitions follow the leaderboard's statistics manager and
scenario_runner's atomic criteria (RouteCompletionTest, OutsideRouteLanesTest,
InRouteTest, CollisionTest) and Bench2Drive's comfort script, as published; the numbers
are theirs, the code is written here for recorded arrays instead of a running simulator.

Leaderboard (one route):
* route completion RC [%]: the route's passed fraction (largest station reached / route
  length); 100 once it passed 99 % with the vehicle within 10 m of the route's end (the
  route is then complete and scoring stops there).
* the route ends early when the vehicle deviates more than 30 m from the route, or is
  blocked: slower than 0.1 m/s for 60 s (Bench2Drive's setting of ActorBlockedTest).
  Only what happened before the end counts.
* infraction penalty IP: product of one coefficient per infraction (pedestrian collision
  0.5, vehicle 0.6, static object 0.65, red light 0.7, stop sign 0.8) and the off-lane
  factor 1 - p/100, p = percentage of the passed route distance driven outside the lane:
  farther than lane_width / 2 + 0.5 m from the lane centre, or heading more than 120 deg
  off the lane's direction.
* driving score DS = RC x IP; infractions per km = count / (RC/100 x route length in km,
  at least 1 m), as the leaderboard's global record.
* collisions as CollisionTest counts them: a collision with the same actor within 5 s of
  the last counted one, or within 5 m of where that one happened, is the same collision;
  none is counted while the ego stands (< 0.1 m/s); the kind comes from the other actor's
  type id (static./traffic. -> static, vehicle. -> vehicle, walker. -> pedestrian).
* a suite's means are the arithmetic means over routes (compute_global_statistics).

Bench2Drive: comfort (their "smoothness") is the percentage of 20-step windows of the 10 Hz
trajectory whose nuPlan comfort metrics stay within bounds (COMFORT_BOUNDS); derivatives
by a Savitzky-Golay filter (window 7, order 2) inside each window; episodes of at most 20
steps are one window. Efficiency: mean speed over the mean target speed [%]; the target is
the speed a car can reach under the route's limits (reachable_speed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

# Leaderboard 2.0 penalty coefficients (statistics_manager.py).
PENALTIES = {"collision_pedestrian": 0.5, "collision_vehicle": 0.6, "collision_static": 0.65,
             "red_light": 0.7, "stop_sign": 0.8}
COMPLETION_PERCENT = 99.0       # RouteCompletionTest.PERCENTAGE_THRESHOLD
COMPLETION_DISTANCE_M = 10.0    # RouteCompletionTest.DISTANCE_THRESHOLD
LANE_ALLOWED_OUT_M = 0.5        # OutsideRouteLanesTest.ALLOWED_OUT_DISTANCE
WRONG_WAY_DEG = 120.0           # OutsideRouteLanesTest.MAX_VEHICLE_ANGLE
DEVIATION_M = 30.0              # InRouteTest offroad_max
BLOCKED_SPEED_MPS = 0.1         # ActorBlockedTest min_speed (Bench2Drive)
BLOCKED_TIME_S = 60.0           # ActorBlockedTest max_time (Bench2Drive)
COLLISION_SAME_ID_S = 5.0       # CollisionTest.MAX_ID_TIME
COLLISION_RADIUS_M = 5.0        # CollisionTest.COLLISION_RADIUS
COLLISION_MIN_SPEED_MPS = 0.1   # CollisionTest.EPSILON
MIN_DRIVEN_KM = 0.001

# Bench2Drive comfort: nuPlan bounds, 10 Hz, windows of 20 steps.
COMFORT_BOUNDS = {
    "lon_acceleration": (-4.05, 2.40),   # [m/s^2]
    "lat_acceleration": (-4.89, 4.89),   # [m/s^2]
    "jerk": (-8.37, 8.37),               # magnitude of the acceleration, d/dt [m/s^3]
    "lon_jerk": (-4.13, 4.13),           # [m/s^3]
    "yaw_acceleration": (-1.93, 1.93),   # [rad/s^2]
    "yaw_rate": (-0.95, 0.95),           # [rad/s]
}
COMFORT_STEP_S = 0.1
COMFORT_WINDOW = 20
SAVGOL_WINDOW, SAVGOL_ORDER = 7, 2

# Lane marking kinds of carla_msgs/CarlaLaneInvasionEvent.
LANE_MARKINGS = {0: "other", 1: "broken", 2: "solid"}


# ------------------------------------------------------------------ single formulas
def route_completion(passed_m: float, route_length_m: float, distance_to_end_m: float) -> float:
    """RC [%] of a route passed up to `passed_m`, the vehicle `distance_to_end_m` from the
    route's end point."""
    percent = 100.0 * min(max(passed_m / route_length_m, 0.0), 1.0)
    if percent > COMPLETION_PERCENT and distance_to_end_m < COMPLETION_DISTANCE_M:
        return 100.0
    return percent


def outside_lane(lateral_m, heading_error_rad, lane_width_m: float) -> np.ndarray:
    """Per sample: outside the route's lane (too far from its centre, or facing the wrong
    way)."""
    lateral = np.abs(np.asarray(lateral_m, dtype=np.float64))
    heading = np.abs(np.angle(np.exp(1j * np.asarray(heading_error_rad, dtype=np.float64))))
    return (lateral > lane_width_m / 2 + LANE_ALLOWED_OUT_M) | (heading > math.radians(
        WRONG_WAY_DEG))


def off_lane_percentage(station_m, outside) -> float:
    """Percentage of the passed route distance driven outside the lane: each new metre of
    route passed (the running maximum of the station grows) counts as outside when the
    sample that passed it is outside."""
    s = np.maximum.accumulate(np.asarray(station_m, dtype=np.float64))
    if len(s) < 2:
        return 0.0
    ds = np.diff(s)
    total = float(ds.sum())
    if total <= 0.0:
        return 0.0
    return 100.0 * float(ds[np.asarray(outside, dtype=bool)[1:]].sum()) / total


def infraction_penalty(counts: Mapping[str, int], off_lane_percent: float = 0.0) -> float:
    """IP: product of PENALTIES[kind] ** count and the off-lane factor."""
    ip = 1.0
    for kind, n in counts.items():
        if kind not in PENALTIES:
            raise ValueError(f"infraction kind: have {kind!r}, need one of {sorted(PENALTIES)}")
        ip *= PENALTIES[kind] ** int(n)
    return ip * (1.0 - off_lane_percent / 100.0)


def driving_score(rc_percent: float, ip: float) -> float:
    return max(rc_percent * ip, 0.0)


def per_km(count: float, rc_percent: float, route_length_m: float) -> float:
    """Infractions per driven km: count / max(RC/100 x route length [km], 1 m)."""
    return count / max(rc_percent / 100.0 * route_length_m / 1000.0, MIN_DRIVEN_KM)


def blocked_index(t_s, speed_mps) -> Optional[int]:
    """First sample at which the vehicle has been slower than BLOCKED_SPEED_MPS for more
    than BLOCKED_TIME_S, or None."""
    t = np.asarray(t_s, dtype=np.float64)
    slow_since = None
    for i, (ti, v) in enumerate(zip(t, np.asarray(speed_mps, dtype=np.float64))):
        if v < BLOCKED_SPEED_MPS:
            slow_since = ti if slow_since is None else slow_since
            if ti - slow_since > BLOCKED_TIME_S:
                return i
        else:
            slow_since = None
    return None


def collision_kind(type_id: str) -> Optional[str]:
    """PENALTIES key of a collision with an actor of this CARLA type id (None: not scored,
    e.g. a sidewalk)."""
    if ("static" in type_id or "traffic" in type_id) and "sidewalk" not in type_id:
        return "collision_static"
    if "vehicle" in type_id:
        return "collision_vehicle"
    if "walker" in type_id:
        return "collision_pedestrian"
    return None


def count_collisions(events: Sequence[Mapping[str, Any]],
                     actor_types: Mapping[int, str]) -> list[dict]:
    """The collisions CollisionTest would count, from collision events (dicts with t_s,
    actor_id, x, y: the ego's position, speed: the ego's speed), in time order.

    actor_types: actor id -> CARLA type id (/carla/actor_list); an id missing there is
    "static" when 0 (the map's layout) and "unknown" (scored as static) otherwise."""
    counted: list[dict] = []
    last_id, last_t, last_xy = None, -math.inf, None
    for ev in sorted(events, key=lambda e: e["t_s"]):
        aid, t, xy = int(ev["actor_id"]), float(ev["t_s"]), (float(ev["x"]), float(ev["y"]))
        if last_id is not None and aid == last_id and t - last_t <= COLLISION_SAME_ID_S:
            continue
        if last_xy is not None and math.hypot(xy[0] - last_xy[0],
                                              xy[1] - last_xy[1]) <= COLLISION_RADIUS_M:
            continue
        if float(ev["speed"]) < COLLISION_MIN_SPEED_MPS:
            continue
        type_id = actor_types.get(aid, "static" if aid == 0 else "unknown")
        kind = collision_kind(type_id) if type_id != "unknown" else "collision_static"
        if kind is None:
            continue
        counted.append({"t_s": round(t, 3), "kind": kind, "actor_id": aid,
                        "type_id": type_id, "x": round(xy[0], 3), "y": round(xy[1], 3)})
        last_t, last_xy = t, xy
        last_id = aid if aid != 0 else None
    return counted


# ------------------------------------------------------------------ a whole route
@dataclass
class RouteTrace:
    """What the scoring needs of a run, per odometry sample (actor origin, as the
    leaderboard's criteria use the vehicle's location): time [s], station on the route
    [m], lateral offset from the lane centre [m], heading error [rad], speed [m/s],
    distance to the route's end point [m]; and the route's length and lane width."""

    t_s: np.ndarray
    station_m: np.ndarray
    lateral_m: np.ndarray
    heading_error_rad: np.ndarray
    speed_mps: np.ndarray
    distance_to_end_m: np.ndarray
    route_length_m: float
    lane_width_m: float
    collisions: list = field(default_factory=list)    # count_collisions output
    lane_invasions: list = field(default_factory=list)  # dicts: t_s, markings (names)
    red_lights: int = 0
    stop_signs: int = 0


def score_route(trace: RouteTrace) -> dict:
    """Leaderboard scores of one route (module docstring); the dict of report["scores"]
    ["leaderboard"]."""
    n = len(trace.t_s)
    passed = np.maximum.accumulate(np.asarray(trace.station_m, dtype=np.float64))
    rc_series = 100.0 * np.clip(passed / trace.route_length_m, 0.0, 1.0)
    done = np.nonzero((rc_series > COMPLETION_PERCENT)
                      & (np.asarray(trace.distance_to_end_m) < COMPLETION_DISTANCE_M))[0]
    ends = {"completed": int(done[0]) if len(done) else None}
    deviated = np.nonzero(np.abs(trace.lateral_m) > DEVIATION_M)[0]
    ends["route_deviation"] = int(deviated[0]) if len(deviated) else None
    ends["blocked"] = blocked_index(trace.t_s, trace.speed_mps)
    # The first event ends the route (on the same sample: completion first).
    order = list(ends)
    candidates = [(index, order.index(name), name) for name, index in ends.items()
                  if index is not None]
    end, _, reason = min(candidates) if candidates else (n - 1, 0, "run ended")
    t_end = float(trace.t_s[end])
    rc = 100.0 if reason == "completed" else route_completion(
        float(passed[end]), trace.route_length_m, float(trace.distance_to_end_m[end]))
    outside = outside_lane(trace.lateral_m[:end + 1], trace.heading_error_rad[:end + 1],
                           trace.lane_width_m)
    off_pct = off_lane_percentage(trace.station_m[:end + 1], outside)
    collisions = [c for c in trace.collisions if c["t_s"] <= t_end + 1e-9]
    counts = {kind: 0 for kind in PENALTIES}
    for c in collisions:
        counts[c["kind"]] += 1
    counts["red_light"] = int(trace.red_lights)
    counts["stop_sign"] = int(trace.stop_signs)
    ip = infraction_penalty(counts, off_pct)
    invasions = [e for e in trace.lane_invasions if e["t_s"] <= t_end + 1e-9]
    infractions = {**counts, "outside_route_lanes": int(off_pct > 0.0),
                   "route_deviation": int(reason == "route_deviation"),
                   "blocked": int(reason == "blocked")}
    total = sum(infractions.values())
    return {
        "driving_score": driving_score(rc, ip),
        "route_completion": rc,
        "infraction_penalty": ip,
        "status": "Completed" if reason == "completed" else (
            "Failed - " + {"route_deviation": "Agent deviated from the route",
                           "blocked": "Agent got blocked",
                           "run ended": "route not completed when the run ended"}[reason]),
        "ended_s": round(t_end, 3),
        "route_length_m": trace.route_length_m,
        "off_lane_percent": off_pct,
        "infractions": infractions,
        "infractions_total": total,
        "infractions_per_km": per_km(total, rc, trace.route_length_m),
        "collisions": collisions,
        "lane_invasions": len(invasions),
        "lane_invasions_by_marking": _count_markings(invasions),
    }


def _count_markings(invasions: Sequence[Mapping]) -> dict:
    out: dict[str, int] = {}
    for e in invasions:
        for name in e["markings"]:
            out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items()))


# ------------------------------------------------------------------ comfort, efficiency
def comfort(t_s, yaw_rad, speed_mps) -> Optional[dict]:
    """Bench2Drive comfort of a trajectory (module docstring): resampled to 10 Hz; None
    when shorter than the filter window."""
    from scipy.signal import savgol_filter

    t = np.asarray(t_s, dtype=np.float64)
    if len(t) < 2:
        return None
    grid = np.arange(t[0], t[-1] + 1e-9, COMFORT_STEP_S)
    if len(grid) < SAVGOL_WINDOW:
        return None
    yaw = np.interp(grid, t, np.unwrap(np.asarray(yaw_rad, dtype=np.float64)))
    speed = np.interp(grid, t, np.asarray(speed_mps, dtype=np.float64))
    if len(grid) <= COMFORT_WINDOW:
        chunks = [slice(0, len(grid))]
    else:
        chunks = [slice(i, i + COMFORT_WINDOW)
                  for i in range(0, len(grid) - COMFORT_WINDOW + 1, COMFORT_WINDOW)]
    violations = {name: 0 for name in COMFORT_BOUNDS}
    ok = 0
    for chunk in chunks:
        def d(x, k):
            return savgol_filter(x[chunk], SAVGOL_WINDOW, SAVGOL_ORDER, deriv=k,
                                 delta=COMFORT_STEP_S)
        v = d(speed, 0)
        lon = d(speed, 1)
        yaw_rate = d(yaw, 1)
        lat = v * yaw_rate
        magnitude = np.hypot(lon, lat)
        values = {"lon_acceleration": lon, "lat_acceleration": lat,
                  "jerk": savgol_filter(magnitude, SAVGOL_WINDOW, SAVGOL_ORDER, deriv=1,
                                        delta=COMFORT_STEP_S),
                  "lon_jerk": d(speed, 2), "yaw_acceleration": d(yaw, 2),
                  "yaw_rate": yaw_rate}
        good = True
        for name, (lo, hi) in COMFORT_BOUNDS.items():
            if not np.all((values[name] > lo) & (values[name] < hi)):
                violations[name] += 1
                good = False
        ok += good
    return {"comfort_percent": 100.0 * ok / len(chunks), "windows": len(chunks),
            "windows_ok": ok, "windows_violating": violations}


def reachable_speed(route, stations, start_station: float, start_speed: float,
                    acceleration: float, deceleration: float,
                    stop_station: Optional[float] = None) -> np.ndarray:
    """The speed a car can have at each station: the route's target speed (limits,
    lowered ahead of lower limits and of the stop at `stop_station` or the route's end
    at `deceleration`), and, from (start_station, start_speed) on, no more than
    accelerating at `acceleration` allows. Stations before the start: the target."""
    base = route.target_speed(route.s, deceleration, stop_station=stop_station)
    v = base.copy()
    i0 = int(np.searchsorted(route.s, start_station, side="left"))
    prev_s, prev_v = float(start_station), max(float(start_speed), 0.0)
    for i in range(i0, len(route.s)):
        reach = math.sqrt(prev_v * prev_v + 2.0 * acceleration * max(route.s[i] - prev_s, 0.0))
        v[i] = min(base[i], reach)
        prev_s, prev_v = float(route.s[i]), float(v[i])
    s = np.clip(np.asarray(stations, dtype=np.float64), 0.0, route.length)
    return np.interp(s, route.s, v)


def efficiency(speed_mps, target_mps) -> Optional[float]:
    """Mean speed over mean target speed [%] (None when the target is 0 throughout)."""
    target = float(np.mean(target_mps)) if len(target_mps) else 0.0
    if target <= 0.0:
        return None
    return 100.0 * float(np.mean(speed_mps)) / target


# ------------------------------------------------------------------ a suite
SUMMARY_KEYS = ("driving_score", "route_completion", "infraction_penalty")


def suite_means(route_scores: Sequence[Mapping[str, Any]]) -> dict:
    """Suite averages as the leaderboard's global record: arithmetic means of DS, RC and IP
    over routes; infractions per km = all infractions / all driven km."""
    if not route_scores:
        return {}
    out = {k: float(np.mean([r[k] for r in route_scores])) for k in SUMMARY_KEYS}
    km = sum(max(r["route_completion"] / 100.0 * r["route_length_m"] / 1000.0, MIN_DRIVEN_KM)
             for r in route_scores)
    out["infractions_total"] = int(sum(r["infractions_total"] for r in route_scores))
    out["infractions_per_km"] = out["infractions_total"] / km
    out["driven_km"] = km
    return out
