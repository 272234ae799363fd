"""Leaderboard and Bench2Drive scores (sim/scoring.py), each formula on hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from alpamayo_ros.sim import scoring as S
from alpamayo_ros.sim.route import Route, Segment


def test_route_completion_is_the_passed_percentage_and_100_near_the_end():
    assert S.route_completion(50.0, 100.0, 50.0) == 50.0
    assert S.route_completion(99.5, 100.0, 12.0) == 99.5    # > 99 % but 12 m from the end
    assert S.route_completion(99.5, 100.0, 5.0) == 100.0    # > 99 % and within 10 m
    assert S.route_completion(99.0, 100.0, 1.0) == 99.0     # 99 % is not over 99 %
    assert S.route_completion(120.0, 100.0, 30.0) == 100.0  # clipped
    assert S.route_completion(-3.0, 100.0, 90.0) == 0.0


def test_outside_lane_by_distance_and_by_heading():
    # lane 3.5 m: outside beyond 3.5 / 2 + 0.5 = 2.25 m; heading beyond 120 deg.
    lateral = [0.0, 2.25, 2.26, -3.0, 0.0, 0.0, 0.0]
    heading = np.radians([0.0, 0.0, 0.0, 0.0, 119.0, 121.0, -170.0])
    assert S.outside_lane(lateral, heading, 3.5).tolist() == [False, False, True, True,
                                                              False, True, True]


def test_off_lane_percentage_of_the_passed_route():
    # 4 x 10 m passed, the 3rd and 4th 10 m outside: 50 %.
    assert S.off_lane_percentage([0, 10, 20, 30, 40], [0, 0, 1, 1, 0]) == 50.0
    # Backing up passes nothing: running max [0, 10, 10, 20], increments [10, 0, 10];
    # the first increment was driven outside: 10 / 20.
    assert S.off_lane_percentage([0, 10, 5, 20], [0, 1, 1, 0]) == 50.0
    assert S.off_lane_percentage([3.0, 3.0], [1, 1]) == 0.0  # nothing passed


def test_infraction_penalty_is_the_product_of_coefficients_and_the_off_lane_factor():
    assert S.infraction_penalty({}) == 1.0
    # 0.6 x 0.65^2 x (1 - 0.10) = 0.22815
    assert S.infraction_penalty({"collision_vehicle": 1, "collision_static": 2}, 10.0) == \
        pytest.approx(0.22815)
    # 0.5 x 0.7 x 0.8 = 0.28
    assert S.infraction_penalty({"collision_pedestrian": 1, "red_light": 1,
                                 "stop_sign": 1}) == pytest.approx(0.28)
    with pytest.raises(ValueError, match="infraction kind"):
        S.infraction_penalty({"speeding": 1})


def test_driving_score_and_infractions_per_km():
    assert S.driving_score(80.0, 0.5) == 40.0
    assert S.per_km(3, 50.0, 2000.0) == pytest.approx(3.0)       # 3 / (0.5 x 2 km)
    assert S.per_km(3, 0.0, 2000.0) == pytest.approx(3000.0)     # at least 1 m driven


def test_blocked_after_60_s_below_0_1_mps():
    t = np.arange(0.0, 100.0, 1.0)
    speed = np.where(t < 5.0, 3.0, 0.05)
    assert S.blocked_index(t, speed) == 66      # 66 - 5 = 61 s > 60 s
    speed[30] = 0.2                             # moving once restarts the count
    assert S.blocked_index(t, speed) == 31 + 61
    assert S.blocked_index(t, np.full_like(t, 0.1)) is None  # 0.1 is not under 0.1


def test_collisions_are_counted_as_the_collision_test_does():
    types = {1000: "static.prop.box", 7: "vehicle.tesla.model3",
             8: "walker.pedestrian.0001", 9: "static.sidewalk"}
    events = [
        {"t_s": 1.0, "actor_id": 1000, "x": 0.0, "y": 0.0, "speed": 5.0},   # static
        {"t_s": 2.0, "actor_id": 1000, "x": 1.0, "y": 0.0, "speed": 5.0},   # same id < 5 s
        {"t_s": 8.0, "actor_id": 1000, "x": 20.0, "y": 0.0, "speed": 5.0},  # 7 s, 20 m: new
        {"t_s": 9.0, "actor_id": 7, "x": 22.0, "y": 0.0, "speed": 5.0},     # within 5 m
        {"t_s": 12.0, "actor_id": 7, "x": 40.0, "y": 0.0, "speed": 0.05},   # ego standing
        {"t_s": 13.0, "actor_id": 8, "x": 60.0, "y": 0.0, "speed": 3.0},    # pedestrian
        {"t_s": 14.0, "actor_id": 9, "x": 80.0, "y": 0.0, "speed": 3.0},    # sidewalk: none
        {"t_s": 15.0, "actor_id": 0, "x": 100.0, "y": 0.0, "speed": 3.0},   # layout: static
        {"t_s": 16.0, "actor_id": 7, "x": 120.0, "y": 0.0, "speed": 3.0},   # vehicle
    ]
    counted = S.count_collisions(events, types)
    assert [(c["t_s"], c["kind"]) for c in counted] == [
        (1.0, "collision_static"), (8.0, "collision_static"), (13.0, "collision_pedestrian"),
        (15.0, "collision_static"), (16.0, "collision_vehicle")]


def _trace(stations, lateral, t=None, speed=None, length=100.0, **kw):
    stations = np.asarray(stations, dtype=float)
    n = len(stations)
    t = np.arange(n, dtype=float) if t is None else np.asarray(t, dtype=float)
    return S.RouteTrace(t_s=t, station_m=stations, lateral_m=np.asarray(lateral, float),
                        heading_error_rad=np.zeros(n),
                        speed_mps=np.full(n, 10.0) if speed is None else np.asarray(speed),
                        distance_to_end_m=np.hypot(length - stations, lateral),
                        route_length_m=length, lane_width_m=3.5, **kw)


def test_a_clean_completed_route_scores_100():
    score = S.score_route(_trace(np.arange(0.0, 101.0, 10.0), np.zeros(11)))
    assert score["route_completion"] == 100.0 and score["infraction_penalty"] == 1.0
    assert score["driving_score"] == 100.0 and score["status"] == "Completed"
    assert score["ended_s"] == 10.0 and score["infractions_total"] == 0


def test_a_route_ended_by_deviation_counts_only_what_came_before():
    # Leaves the lane at 30 m (3 m off) and the route at 40 m (31 m off): ends there.
    collisions = [{"t_s": 2.0, "kind": "collision_static"},
                  {"t_s": 6.0, "kind": "collision_vehicle"}]  # after the end: not counted
    trace = _trace([0, 10, 20, 30, 40, 50, 60], [0, 0, 0, 3, 31, 40, 50],
                   collisions=collisions)
    score = S.score_route(trace)
    assert score["status"] == "Failed - Agent deviated from the route"
    assert score["ended_s"] == 4.0
    assert score["route_completion"] == 40.0
    assert score["off_lane_percent"] == 50.0                    # 20 of 40 m
    assert score["infraction_penalty"] == pytest.approx(0.65 * 0.5)
    assert score["driving_score"] == pytest.approx(40.0 * 0.325)
    assert score["infractions"]["collision_vehicle"] == 0
    # static collision, outside route lanes, route deviation: 3 in 0.04 km
    assert score["infractions_total"] == 3
    assert score["infractions_per_km"] == pytest.approx(75.0)


def test_a_blocked_route_ends_after_60_s():
    t = np.arange(0.0, 100.0, 1.0)
    stations = np.minimum(t * 10.0, 50.0)         # stands at 50 m from t = 5 s
    speed = np.where(t < 5.0, 10.0, 0.0)
    score = S.score_route(_trace(stations, np.zeros_like(t), t=t, speed=speed))
    assert score["status"] == "Failed - Agent got blocked" and score["ended_s"] == 66.0
    assert score["route_completion"] == 50.0 and score["driving_score"] == 50.0


def test_comfort_windows_within_the_nuplan_bounds():
    t = np.arange(0.0, 10.0 + 1e-9, 0.05)
    straight = S.comfort(t, np.zeros_like(t), np.full_like(t, 10.0))
    assert straight["windows"] == 5 and straight["comfort_percent"] == 100.0
    # 5 m/s^2 braking from 4 s to 6 s: the window [4, 6) s violates -4.05 m/s^2.
    speed = np.clip(10.0 - 5.0 * np.clip(t - 4.0, 0.0, None), 0.0, None)
    braking = S.comfort(t, np.zeros_like(t), speed)
    assert braking["comfort_percent"] == 80.0
    assert braking["windows_violating"]["lon_acceleration"] == 1
    # 10 m/s on a 5 m circle: yaw rate 2 rad/s, lateral 20 m/s^2 everywhere.
    circle = S.comfort(t, 2.0 * t, np.full_like(t, 10.0))
    assert circle["comfort_percent"] == 0.0
    assert circle["windows_violating"]["yaw_rate"] == 5
    assert circle["windows_violating"]["lat_acceleration"] == 5
    assert S.comfort(t[:5], np.zeros(5), np.zeros(5)) is None   # 0.2 s: too short


def test_reachable_speed_and_efficiency():
    route = Route([Segment("straight", 100.0, 10.0)])
    # From standstill at 1 m/s^2: sqrt(2 s) up to 10 m/s at 50 m; braking at 2 m/s^2 to
    # stop at 100 m: sqrt(4 (100 - s)).
    v = S.reachable_speed(route, [0.0, 8.0, 60.0, 90.0, 100.0], 0.0, 0.0, 1.0, 2.0)
    assert v == pytest.approx([0.0, 4.0, 10.0, math.sqrt(40.0), 0.0])
    # A stop station of 80 m: sqrt(4 (80 - s)) before it, 0 beyond.
    v = S.reachable_speed(route, [64.0, 90.0], 0.0, 10.0, 1.0, 2.0, stop_station=80.0)
    assert v == pytest.approx([8.0, 0.0])
    assert S.efficiency([5.0, 5.0], [10.0, 10.0]) == 50.0
    assert S.efficiency([1.0], [0.0]) is None


def test_suite_means_as_the_global_record():
    routes = [{"driving_score": 100.0, "route_completion": 100.0, "infraction_penalty": 1.0,
               "infractions_total": 0, "route_length_m": 1000.0},
              {"driving_score": 30.0, "route_completion": 50.0, "infraction_penalty": 0.6,
               "infractions_total": 2, "route_length_m": 1000.0}]
    means = S.suite_means(routes)
    assert means["driving_score"] == 65.0 and means["route_completion"] == 75.0
    assert means["infraction_penalty"] == pytest.approx(0.8)
    assert means["infractions_per_km"] == pytest.approx(2 / 1.5)   # 1 km + 0.5 km driven
