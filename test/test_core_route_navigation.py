"""Instructions from a route (issue 16 item 5, ROS-free part): the official phrasing and
rounding, and when an instruction appears and ends along the route."""
import math

import numpy as np
import pytest

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.route_navigation import (RouteNavigationConfig, RouteNavigator,
                                                instruction_text)


def route(*parts, step=0.25):
    """Polyline of ("straight", length) / ("arc", radius, +-angle_deg) parts from (0, 0)
    heading +x; also returns the station where each part starts."""
    x, y, yaw, points, starts, s = 0.0, 0.0, 0.0, [(0.0, 0.0)], [], 0.0
    for part in parts:
        starts.append(s)
        if part[0] == "straight":
            n = int(round(part[1] / step))
            for _ in range(n):
                x, y = x + step * math.cos(yaw), y + step * math.sin(yaw)
                points.append((x, y))
            s += part[1]
        else:
            radius, angle = part[1], math.radians(part[2])
            length = radius * abs(angle)
            n = int(round(length / step))
            for _ in range(n):
                yaw += angle / n
                x, y = x + (length / n) * math.cos(yaw), y + (length / n) * math.sin(yaw)
                points.append((x, y))
            s += length
    return np.array(points), starts


@pytest.mark.parametrize("distance,text", [
    (11.2, "Turn left in 11m"), (3.8, "Turn left in 4m"), (29.8, "Turn left in 30m"),
    (15.7, "Turn left in 16m"), (4.6, "Turn left in 5m"), (594.0, "Turn left in 594m"),
    (12.5, "Turn left in 13m")])
def test_official_phrasing_and_rounding(distance, text):
    """The pairs of nav_demo_samples.json (distance_m -> nav_text), and a half rounded up."""
    assert instruction_text("left", distance) == text


def test_turns_are_found_with_their_direction_and_station():
    xy, starts = route(("straight", 100.0), ("arc", 20.0, 90.0), ("straight", 60.0),
                       ("arc", 30.0, -90.0), ("straight", 40.0), ("arc", 500.0, 5.0),
                       ("straight", 20.0))
    navigator = RouteNavigator(xy)
    assert [m.direction for m in navigator.maneuvers] == ["left", "right"]  # no gentle bend
    for maneuver, start in zip(navigator.maneuvers, (starts[1], starts[3])):
        assert maneuver.station == pytest.approx(start, abs=1.0)


def test_instruction_appears_counts_down_and_ends_at_the_turn():
    xy, starts = route(("straight", 120.0), ("arc", 20.0, -90.0), ("straight", 60.0))
    navigator = RouteNavigator(xy, RouteNavigationConfig(announce_distance=50.0))
    turn = navigator.maneuvers[0].station
    assert navigator.instruction((turn - 60.0, 0.0)) is None           # beyond 50 m
    assert navigator.instruction((turn - 49.0, 0.3)) == "Turn right in 49m"
    assert navigator.instruction((turn - 11.2, -0.2)) == "Turn right in 11m"
    assert navigator.instruction((turn - 3.8, 0.0)) == "Turn right in 4m"
    assert navigator.instruction((turn + 1.0, -0.05)) is None          # in the turn
    end = xy[-1]
    assert navigator.instruction(end) is None                          # no turn left


def test_bad_routes_are_refused():
    with pytest.raises(ConfigError, match="at least 2 finite points"):
        RouteNavigator([[0.0, 0.0]])
    with pytest.raises(ConfigError, match="non-zero length"):
        RouteNavigator([[1.0, 2.0], [1.0, 2.0]])
