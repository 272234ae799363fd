"""Route obstacles (sim/obstacles.py): parsing, the contact test, the simulator's collision
and lane invasion events, the route oracle's stop and the cameras (ROS-free)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.sim import obstacles as O
from alpamayo_ros.sim.road_renderer import OBSTACLE_COLOR, RoadRenderer
from alpamayo_ros.sim.route import Route
from alpamayo_ros.sim.route_oracle import RouteOracle
from alpamayo_ros.sim.simulation import (LANE_MARKING_BROKEN, LANE_MARKING_SOLID,
                                         HeldCommand, Simulation)
from alpamayo_ros.sim.vehicle_model import VehicleParams


def straight(length=80.0, obstacles=None):
    doc = {"name": "s", "segments": [{"type": "straight", "length": length,
                                      "speed_limit": 10.0}]}
    if obstacles is not None:
        doc["obstacles"] = obstacles
    return Route.from_dict(doc)


def test_route_files_parse_obstacles_and_refuse_bad_ones():
    route = straight(obstacles=[{"s": 50.0, "lateral": 0.5, "length": 4.6, "width": 1.9}])
    (ob,) = route.obstacles
    assert (ob.s, ob.lateral, ob.length, ob.width, ob.height) == (50.0, 0.5, 4.6, 1.9, 1.5)
    assert ob.actor_id == O.OBSTACLE_ID_BASE and ob.type_id.startswith("static.")
    assert route.describe()["obstacles"][0]["s"] == 50.0
    for bad, match in (({"lateral": 0.0, "length": 1, "width": 1}, "obstacle 0: needs 's'"),
                       ({"s": 1, "length": -1, "width": 1},
                        r"obstacle 0: length: have -1.0, need a number in \(0, 100\]"),
                       ({"s": "x", "length": 1, "width": 1},
                        "obstacle 0: s: have str 'x', need a number"),
                       ({"s": 1, "length": 1, "width": 1, "widht": 2},
                        "obstacle 0: unknown key 'widht'")):
        with pytest.raises(ConfigError, match=match):
            straight(obstacles=[bad])
    with pytest.raises(ConfigError, match="obstacles: have dict"):
        straight(obstacles={"s": 1})


def test_rectangles_touch_by_separating_axes():
    a = O.rectangle_corners(0.0, 0.0, 0.0, 1.0, 1.0)           # [-1, 1]^2
    assert O.rectangles_touch(a, O.rectangle_corners(1.9, 0.0, 0.0, 1.0, 1.0))
    assert not O.rectangles_touch(a, O.rectangle_corners(2.1, 0.0, 0.0, 1.0, 1.0))
    # Rotated 45 deg, centre 2.3 m away on the x axis: its corner reaches 2.3 - 1.414 < 1.
    assert O.rectangles_touch(a, O.rectangle_corners(2.3, 0.0, math.pi / 4, 1.0, 1.0))
    assert not O.rectangles_touch(a, O.rectangle_corners(2.5, 0.0, math.pi / 4, 1.0, 1.0))
    # Diagonal neighbours whose bounding boxes overlap but which do not touch.
    assert not O.rectangles_touch(a, O.rectangle_corners(2.0, 2.0, math.pi / 4, 1.0, 1.0))


def test_obstacles_past_the_end_stand_straight_on_from_it():
    route = Route.from_dict({"segments": [
        {"type": "arc", "length": 0.5 * math.pi * 20.0, "radius": 20.0, "direction": "left",
         "speed_limit": 5.0}], "obstacles": [
        {"s": 0.5 * math.pi * 20.0 + 6.0, "lateral": 1.0, "length": 2.0, "width": 1.0}]})
    (cx, cy, yaw), = O.ObstacleField(route, route.obstacles).poses
    # The quarter circle ends at (20, 20) heading +y: 6 m on, 1 m to the left (-x).
    assert (cx, cy, yaw) == pytest.approx((19.0, 26.0, math.pi / 2), abs=0.01)


def test_in_lane_and_the_stop_station():
    inside = O.Obstacle(s=50.0, lateral=1.7, length=4.0, width=1.4)   # reaches 1.0 m
    beside = O.Obstacle(s=30.0, lateral=-2.9, length=4.0, width=1.9)  # from -1.95 m
    assert inside.in_lane(1.05) and not beside.in_lane(1.05)
    # Front 3.87 m ahead of the reference: stop at 50 - 2 - 3.87 - 1.5.
    assert O.stop_station(100.0, [inside, beside], 3.87) == pytest.approx(42.63)
    assert O.stop_station(40.0, [inside], 3.87) == 40.0
    assert O.VEHICLE_BOX.front_from(-1.42) == pytest.approx(3.87)


def test_the_simulator_reports_contact_with_an_obstacle_in_the_lane():
    route = straight(obstacles=[{"s": 30.0, "lateral": 0.0, "length": 4.6, "width": 1.9}])
    sim = Simulation(route, VehicleParams(), 50_000_000, 100_000_000, initial_speed=10.0)
    sim.apply(HeldCommand(throttle=0.1))
    first = None
    for _ in range(80):
        sim.step()
        if sim.touching and first is None:
            first = sim.actor_pose()[0]
    # The box's front (actor + 2.45 m) meets the obstacle's back (27.7 m) within a step.
    assert first is not None and 27.7 <= first + 2.45 < 27.7 + 0.55
    assert sim.crossed_markings == []


def _first_crossing(steer: float):
    """Drive 10 m/s from the lane centre with a held steer until the box crosses a
    marking: (markings, box corner laterals before and at that step)."""
    route = straight(200.0)
    sim = Simulation(route, VehicleParams(), 50_000_000, 100_000_000, initial_speed=10.0)
    sim.apply(HeldCommand(throttle=0.1, steer=steer))
    before = None
    for _ in range(100):
        before = sim._corner_laterals()
        sim.step()
        if sim.crossed_markings:
            return sim.crossed_markings, before, sim._corner_laterals()
    raise AssertionError("no marking crossed")


def test_the_simulator_reports_crossed_lane_markings():
    # Left (steer < 0): the dashed centre line at +1.75 m first.
    markings, before, now = _first_crossing(-0.05)
    assert markings == [LANE_MARKING_BROKEN]
    assert before.max() < 1.75 <= now.max()
    # Right: the solid edge line at -1.75 m.
    markings, before, now = _first_crossing(0.05)
    assert markings == [LANE_MARKING_SOLID]
    assert before.min() > -1.75 >= now.min()
    # Teleporting across the lines is a jump, not a crossing.
    sim = Simulation(straight(), VehicleParams(), 50_000_000, 100_000_000)
    sim.teleport(20.0 + 1.42, 1.5, 0.0)
    assert sim.crossed_markings == []


def test_the_route_oracle_stops_before_an_obstacle_in_its_lane():
    route = straight(80.0, [{"s": 60.0, "lateral": 0.0, "length": 4.6, "width": 1.9}])
    oracle = RouteOracle(route, rear_axle_offset_x=-1.42)
    assert oracle.stop_station == pytest.approx(60.0 - 2.3 - 3.87 - 1.5)
    plan = oracle.plan(30.0, 0.0, 0.0, 8.0)
    assert plan.speed[-1] < 0.01
    assert 30.0 + plan.xyz[-1, 0] <= oracle.stop_station + 0.05
    # Beside the lane: no stop before the route's end.
    beside = straight(80.0, [{"s": 60.0, "lateral": -2.9, "length": 4.6, "width": 1.9}])
    assert RouteOracle(beside).stop_station == 80.0


def test_obstacles_are_rendered_into_the_cameras():
    with_box = RoadRenderer(straight(obstacles=[{"s": 40.0, "lateral": 0.0, "length": 4.6,
                                                 "width": 1.9}]))
    without = RoadRenderer(straight())
    for renderer, expected in ((with_box, True), (without, False)):
        image = renderer.render(1, 320, 180, 20.0, 0.0, 0.0)   # front wide, 20 m before
        found = np.all(image == np.array(OBSTACLE_COLOR, np.uint8), axis=-1)
        assert bool(found.any()) is expected
    # The rear-looking cross cameras do not see it from here.
    side = with_box.render(0, 320, 180, 20.0, 0.0, math.pi)
    assert not np.all(side == np.array(OBSTACLE_COLOR, np.uint8), axis=-1).any()
