"""Navigation instructions from a route (core.route_navigation): the official phrasing,
turns found on dense, sparse and noisy routes, and when an instruction appears and expires."""
from __future__ import annotations

import math

import numpy as np
import pytest

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.route_navigation import (GuidanceSettings, GuidanceStatus, Maneuver,
                                                RouteGeometry, RouteGuide, check_scripted,
                                                parse_route_instructions, phrase)

# (nav_maneuver, distance_m, nav_text) of NVlabs/alpamayo1.5 notebooks/nav_demo_samples.json
# (f42e594): the phrasing and the rounding the model was trained with.
OFFICIAL_SAMPLES = [
    ("TURN_LEFT", 11.2, "Turn left in 11m"), ("TURN_LEFT", 13.1, "Turn left in 13m"),
    ("TURN_LEFT", 15.1, "Turn left in 15m"), ("TURN_LEFT", 6.1, "Turn left in 6m"),
    ("TURN_LEFT", 3.8, "Turn left in 4m"), ("TURN_LEFT", 5.2, "Turn left in 5m"),
    ("TURN_RIGHT", 29.8, "Turn right in 30m"), ("TURN_LEFT", 7.3, "Turn left in 7m"),
    ("TURN_LEFT", 10.2, "Turn left in 10m"), ("TURN_RIGHT", 15.7, "Turn right in 16m"),
    ("TURN_LEFT", 11.1, "Turn left in 11m"), ("TURN_RIGHT", 14.1, "Turn right in 14m"),
    ("TURN_LEFT", 13.0, "Turn left in 13m"), ("TURN_LEFT", 4.9, "Turn left in 5m"),
    ("TURN_LEFT", 17.8, "Turn left in 18m"), ("TURN_LEFT", 7.2, "Turn left in 7m"),
    ("TURN_LEFT", 4.6, "Turn left in 5m"), ("TURN_LEFT", 9.7, "Turn left in 10m"),
    ("TURN_LEFT", 594.0, "Turn left in 594m"),
]


@pytest.mark.parametrize("maneuver, distance, text", OFFICIAL_SAMPLES)
def test_phrasing_matches_the_official_samples(maneuver, distance, text):
    assert phrase(Maneuver[maneuver], distance) == text


def test_halves_round_up_and_nothing_is_negative():
    assert phrase(Maneuver.TURN_RIGHT, 2.5) == "Turn right in 3m"
    assert phrase(Maneuver.TURN_LEFT, 0.49) == "Turn left in 0m"
    assert phrase(Maneuver.TURN_LEFT, -3.0) == "Turn left in 0m"


def centre_line(pieces, start=(0.0, 0.0, 0.0), spacing=0.25):
    """Points of straights and arcs: pieces of (length [m], curvature [1/m], + = left)."""
    x, y, yaw = start
    points = [(x, y)]
    for length, kappa in pieces:
        n = max(int(math.ceil(length / spacing)), 1)
        ds = length / n
        for _ in range(n):
            if kappa == 0:
                x, y = x + ds * math.cos(yaw), y + ds * math.sin(yaw)
            else:
                x += (math.sin(yaw + kappa * ds) - math.sin(yaw)) / kappa
                y -= (math.cos(yaw + kappa * ds) - math.cos(yaw)) / kappa
                yaw += kappa * ds
            points.append((x, y))
    return np.array(points)


# The package's default closed-loop route: a 90 deg left (R50), a 60 deg right (R30) and
# a 45 deg bend (R100), which is no turn with the default settings.
DEFAULT_ROUTE = [(50, 0), (78.54, 1 / 50), (40, 0), (31.42, -1 / 30), (40, 0),
                 (78.54, 1 / 100), (120, 0)]


def test_turns_of_the_default_route():
    turns = RouteGeometry(centre_line(DEFAULT_ROUTE)).turns
    assert [t.maneuver for t in turns] == [Maneuver.TURN_LEFT, Maneuver.TURN_RIGHT]
    assert turns[0].station == pytest.approx(50.0, abs=0.5)
    assert turns[1].station == pytest.approx(50 + 78.54 + 40, abs=0.5)
    assert math.degrees(turns[0].angle) == pytest.approx(90.0, abs=1.0)
    assert math.degrees(turns[1].angle) == pytest.approx(-60.0, abs=1.0)
    # The bend becomes a turn when the settings allow radii up to 120 m.
    wide = RouteGeometry(centre_line(DEFAULT_ROUTE), GuidanceSettings(max_turn_radius=120.0))
    assert [t.maneuver for t in wide.turns] == [Maneuver.TURN_LEFT, Maneuver.TURN_RIGHT,
                                                Maneuver.TURN_LEFT]


@pytest.mark.parametrize("every", [1, 4, 8])  # 0.25, 1 and 2 m between points
def test_an_intersection_turn_on_sparse_points(every):
    """A 90 deg right turn of radius 12 m, given as polylines of 0.25 .. 2 m spacing."""
    points = centre_line([(80, 0), (math.pi / 2 * 12, -1 / 12), (50, 0)])[::every]
    (turn,) = RouteGeometry(points).turns
    assert turn.maneuver is Maneuver.TURN_RIGHT
    assert turn.station == pytest.approx(80.0, abs=1.0)


def test_a_noisy_route_and_a_lane_change_are_read_right():
    rng = np.random.default_rng(3)
    points = centre_line([(80, 0), (math.pi / 2 * 15, 1 / 15), (60, 0)], spacing=1.0)
    points = points + rng.normal(0.0, 0.05, points.shape)
    (turn,) = RouteGeometry(points).turns
    assert turn.maneuver is Maneuver.TURN_LEFT
    assert turn.station == pytest.approx(80.0, abs=2.0)
    # A lane change (3.5 m over 40 m as two opposite bends) is no turn.
    s = np.linspace(0.0, 200.0, 801)
    lateral = 3.5 * np.clip((s - 80.0) / 40.0, 0, 1) ** 2 * (3 - 2 * np.clip((s - 80.0) / 40.0,
                                                                           0, 1))
    assert RouteGeometry(np.stack([s, lateral], axis=1)).turns == ()


def drive(guide, points, stations):
    """Guidance at the route points nearest to the given stations (0.25 m spacing)."""
    return [guide.update(*points[int(round(s / 0.25))]) for s in stations]


def test_an_instruction_appears_at_the_announce_distance_and_expires_at_the_turn():
    points = centre_line([(100, 0), (math.pi / 2 * 20, 1 / 20), (100, 0)])
    guide = RouteGuide(GuidanceSettings(announce_distance=40.0))
    (turn,) = guide.set_route(points).turns
    stations = np.arange(0.0, 140.0, 0.25)
    out = drive(guide, points, stations)
    shown = [g for g in out if g.status is GuidanceStatus.INSTRUCTION]
    first = next(g.station for g in shown)
    last = shown[-1].station
    assert first == pytest.approx(turn.station - 40.0, abs=0.3)
    assert last == pytest.approx(turn.station, abs=0.3)
    # Every station between shows the distance left, rounded as the samples are.
    for g in shown:
        assert g.text == phrase(Maneuver.TURN_LEFT, turn.station - g.station)
        assert g.text.startswith("Turn left in ")
    assert "Turn left in 40m" in {g.text for g in shown}
    assert "Turn left in 11m" in {g.text for g in shown}
    before = [g for g in out if g.station < first - 0.3]
    after = [g for g in out if g.station > last + 0.3]
    assert before and all(g.status is GuidanceStatus.NONE_AHEAD and g.text == ""
                          for g in before)
    assert after and all(g.text == "" for g in after)


def test_the_nearest_turn_ahead_is_announced():
    points = centre_line([(30, 0), (math.pi / 2 * 10, -1 / 10), (20, 0),
                          (math.pi / 2 * 10, 1 / 10), (50, 0)])
    guide = RouteGuide()
    right, left = guide.set_route(points).turns
    assert (right.maneuver, left.maneuver) == (Maneuver.TURN_RIGHT, Maneuver.TURN_LEFT)
    (g,) = drive(guide, points, [10.0])
    assert g.text == phrase(Maneuver.TURN_RIGHT, right.station - 10.0) == "Turn right in 20m"
    (g,) = drive(guide, points, [right.end_station + 2.0])
    assert g.text == phrase(Maneuver.TURN_LEFT, left.station - g.station)


def test_off_route_and_no_route():
    guide = RouteGuide(GuidanceSettings(max_offset=5.0))
    assert guide.update(0.0, 0.0).status is GuidanceStatus.NO_ROUTE
    guide.set_route(centre_line([(100, 0), (math.pi / 2 * 20, 1 / 20)]))
    assert guide.update(60.0, 4.0).status is GuidanceStatus.INSTRUCTION
    off = guide.update(60.0, 7.0)
    assert off.status is GuidanceStatus.OFF_ROUTE and off.text == ""
    assert off.offset == pytest.approx(7.0)


def test_a_route_that_passes_close_to_itself_keeps_the_leg_being_driven():
    """Out 100 m, a U-turn of radius 4 m, back 100 m 8 m to the left: driving back past
    station 50 of the way out stays on the way back (turn ahead: none; station > 100)."""
    points = centre_line([(100, 0), (math.pi * 4, 1 / 4), (100, 0)])
    guide = RouteGuide()
    (uturn,) = guide.set_route(points).turns
    assert math.degrees(uturn.angle) == pytest.approx(180.0, abs=2.0)
    stations = np.arange(0.0, 100 + math.pi * 4 + 60.0, 0.5)
    out = drive(guide, points, stations)
    assert [g.station for g in out] == pytest.approx(list(stations), abs=0.3)


def test_scripted_instructions_hold_from_their_station_to_the_next():
    points = centre_line([(300, 0)])
    script = check_scripted([(120.0, "Turn right in 40m"), (140.0, "Turn right in 20m"),
                             (160.0, "")])
    guide = RouteGuide(scripted=script)
    guide.set_route(points)
    texts = {s: g.text for s, g in zip(range(0, 300, 5),
                                       drive(guide, points, range(0, 300, 5)))}
    assert {s for s, t in texts.items() if t == "Turn right in 40m"} == {120, 125, 130, 135}
    assert {s for s, t in texts.items() if t == "Turn right in 20m"} == {140, 145, 150, 155}
    assert all(texts[s] == "" for s in texts if s < 120 or s >= 160)


def test_route_file_instructions_are_checked():
    ok = parse_route_instructions([{"s": 120.0, "text": "Turn right in 40m"}], "r.json")
    assert ok[0].s == 120.0 and ok[0].text == "Turn right in 40m"
    assert parse_route_instructions(None, "r.json") == ()
    bad = [
        ({"s": 1.0}, "r.json: instructions: have dict, need a list"),
        ([{"s": 1.0}], "r.json: instructions[0]: have"),
        ([{"s": -1.0, "text": "x"}], "instructions[0].s"),
        ([{"s": 5.0, "text": "a"}, {"s": 1.0, "text": "b"}], "increasing order"),
        ([{"s": 1.0, "text": "go <|route_end|>"}], "special-token"),
        ([{"s": 1.0, "text": "x", "until": 3}], "need {\"s\""),
        ([{"s": True, "text": "x"}], "need a finite number"),
    ]
    for raw, words in bad:
        with pytest.raises(ConfigError, match=None) as info:
            parse_route_instructions(raw, "r.json")
        assert words in str(info.value) and "\n" not in str(info.value)


def test_unusable_routes_and_settings_are_refused():
    for points in ([], [[0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, math.nan], [1.0, 0.0]],
                   np.zeros((3, 1))):
        with pytest.raises(ValueError, match="route: need"):
            RouteGeometry(points)
    with pytest.raises(ConfigError, match="announce_distance"):
        GuidanceSettings(announce_distance=0.0)


def test_parameter_files_and_docs_agree_with_the_schema():
    from pathlib import Path

    from alpamayo_ros.core.param_schema import defaults, render_markdown_table, validate
    from alpamayo_ros.core.parameter_file import read_parameter_file
    from alpamayo_ros.core.route_navigation import (DOCS_PATH, NODE_NAME,
                                                    ROUTE_NAVIGATION_PARAMETERS)

    config = Path(__file__).resolve().parents[1] / "config"
    base = read_parameter_file(config / "route_navigation.yaml", NODE_NAME)
    values = validate(base, ROUTE_NAVIGATION_PARAMETERS)
    assert values == defaults(ROUTE_NAVIGATION_PARAMETERS)
    base.update(read_parameter_file(config / "autoware_route_navigation.yaml", NODE_NAME))
    autoware = validate(base, ROUTE_NAVIGATION_PARAMETERS)
    assert autoware["route_type"] == "autoware_planning_msgs/msg/Path"
    assert autoware["odometry_topic"] == "/localization/kinematic_state"
    assert render_markdown_table(ROUTE_NAVIGATION_PARAMETERS) in DOCS_PATH.read_text(), (
        "docs/navigation.md is out of date: python -m alpamayo_ros.core.route_navigation "
        "--write-docs")
