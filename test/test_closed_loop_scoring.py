"""Scores from a bag of carla-ros-bridge topics (`alpamayo-closed-loop --from-bag --bag`),
route in map coordinates; no ROS process: the bag is written here with rosbags, as the
bridge's recording would hold it (odometry, collision and lane invasion events, actor
list), and the tool reads the carla_msgs types from the bag's own definitions."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import ros_harness
from alpamayo_ros.bag import bag_io

CARLA_MSGS = ros_harness.REPO_ROOT / "test" / "interfaces" / "carla_msgs" / "msg"
ROLE = "ego_vehicle"
# A 100 m route in map coordinates (somewhere in a town, heading -90 deg).
ROUTE = {"name": "map_route", "start": {"x": 250.0, "y": -170.0, "yaw_deg": -90.0},
         "lane_width": 3.5,
         "segments": [{"type": "straight", "length": 100.0, "speed_limit": 10.0}]}


def _register_carla_types():
    from rosbags.typesys import get_types_from_msg
    store = bag_io.typestore()
    for name in ("CarlaActorInfo", "CarlaActorList", "CarlaCollisionEvent",
                 "CarlaLaneInvasionEvent"):
        msgtype = f"carla_msgs/msg/{name}"
        if msgtype not in store.types:
            store.register(get_types_from_msg((CARLA_MSGS / f"{name}.msg").read_text(),
                                              msgtype))
    return store.types


def write_bridge_bag(path):
    """12 s at 20 Hz along the route at 10 m/s (actor origin 1.42 m ahead of the start),
    2.5 m left of the lane centre for t in [2, 3) s, a vehicle hit at 5 s (two events),
    the layout hit at 11 s (after the route is complete), lane invasions at 2 and 3 s."""
    types = _register_carla_types()
    yaw = math.radians(ROUTE["start"]["yaw_deg"])
    heading = np.array([math.cos(yaw), math.sin(yaw)])
    left = np.array([-math.sin(yaw), math.cos(yaw)])
    start = np.array([ROUTE["start"]["x"], ROUTE["start"]["y"]])
    quat = (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))
    vec = types["geometry_msgs/msg/Vector3"]
    with bag_io.BagWriter(path) as bag:
        actors = types["carla_msgs/msg/CarlaActorList"](actors=[
            types["carla_msgs/msg/CarlaActorInfo"](
                id=i, parent_id=0, type=t, rosname="", rolename=r, object_type="",
                base_type="", topic_prefix="")
            for i, t, r in ((7, "vehicle.lincoln.mkz_2017", ROLE),
                            (42, "vehicle.audi.a2", ""))])
        bag.write("/carla/actor_list", "carla_msgs/msg/CarlaActorList", 0, actors)
        for k in range(240):
            t_ns = k * 50_000_000
            t = k * 0.05
            s = 1.42 + 10.0 * t
            lateral = 2.5 if 2.0 <= t < 3.0 else 0.0
            xy = start + heading * s + left * lateral
            bag.write(f"/carla/{ROLE}/odometry", bag_io.ODOMETRY_TYPE, t_ns,
                      bag_io.odometry_message(t_ns, "map", ROLE, (xy[0], xy[1], 0.0), quat,
                                              (10.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
            for t_hit, actor in ((5.0, 42), (5.05, 42), (11.0, 0)):
                if abs(t - t_hit) < 1e-9:
                    bag.write(f"/carla/{ROLE}/collision", "carla_msgs/msg/CarlaCollisionEvent",
                              t_ns, types["carla_msgs/msg/CarlaCollisionEvent"](
                                  header=bag_io.header(t_ns, f"{ROLE}/collision"),
                                  other_actor_id=actor,
                                  normal_impulse=vec(x=-100.0, y=0.0, z=0.0)))
            if k in (40, 60):
                bag.write(f"/carla/{ROLE}/lane_invasion",
                          "carla_msgs/msg/CarlaLaneInvasionEvent", t_ns,
                          types["carla_msgs/msg/CarlaLaneInvasionEvent"](
                              header=bag_io.header(t_ns, f"{ROLE}/lane_invasion"),
                              crossed_lane_markings=np.array([1], dtype=np.int32)))


def run_tool(*args):
    return subprocess.run([sys.executable, "-m", "alpamayo_ros.tools.closed_loop",
                           *[str(a) for a in args]], capture_output=True, text=True,
                          timeout=300, cwd=ros_harness.REPO_ROOT)


def _points_route():
    """The same route as lane-centre points in map coordinates, every 5 m."""
    s = np.arange(0.0, 100.0 + 1e-9, 5.0)
    return {"name": "map_route", "lane_width": 3.5, "speed_limit": 10.0,
            "points": [[250.0, -170.0 - v] for v in s]}


@pytest.mark.parametrize("route_doc", [ROUTE, _points_route()], ids=["segments", "points"])
def test_scores_of_a_bridge_bag_with_the_route_in_map_coordinates(tmp_path, route_doc):
    bag = tmp_path / "bridge_bag"
    write_bridge_bag(bag)
    route = tmp_path / "route.json"
    route.write_text(json.dumps(route_doc))
    out = tmp_path / "scored"
    proc = run_tool("--from-bag", "--bag", bag, "--route", route, "-o", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "report.json").read_text())
    lb = report["scores"]["leaderboard"]
    # Completed at the first sample past 99 m within 10 m of the end: s = 1.42 + 0.5 k,
    # k = 196 (9.8 s). Passed 98 m, 10 m of it (t in [2, 3) s: 20 samples) outside the
    # lane: 10.204 %. One vehicle collision (5.0 and 5.05 s are one); the one at 11 s
    # came after the route was complete.
    assert lb["status"] == "Completed" and lb["ended_s"] == pytest.approx(9.8)
    assert lb["route_completion"] == 100.0
    assert lb["off_lane_percent"] == pytest.approx(100.0 * 10.0 / 98.0)
    assert [(c["kind"], c["type_id"]) for c in lb["collisions"]] == [
        ("collision_vehicle", "vehicle.audi.a2")]
    ip = 0.6 * (1.0 - 10.0 / 98.0)
    assert lb["infraction_penalty"] == pytest.approx(ip)
    assert lb["driving_score"] == pytest.approx(100.0 * ip)
    assert lb["infractions_total"] == 2                  # the collision, off-lane
    assert lb["infractions_per_km"] == pytest.approx(20.0)  # 2 in 0.1 km
    assert lb["lane_invasions"] == 2 and lb["lane_invasions_by_marking"] == {"broken": 2}
    assert report["scores"]["collision_events"] == 3
    assert report["scores"]["efficiency_percent"] > 90.0
    assert "DS 53.88 = RC 100.00 x IP 0.539" in proc.stdout


def test_bag_needs_from_bag(tmp_path):
    proc = run_tool("--bag", tmp_path, "-o", tmp_path / "x")
    assert proc.returncode == 2 and "--bag needs --from-bag" in proc.stderr


def test_routes_of_map_points():
    from alpamayo_ros.core.errors import ConfigError
    from alpamayo_ros.sim.route import Route
    angles = np.linspace(0.0, math.pi / 2, 40)   # a quarter circle of R 20 m
    route = Route.from_dict({"name": "arc", "speed_limit": 5.0,
                             "points": np.column_stack([20 * np.sin(angles),
                                                        20 - 20 * np.cos(angles)]).tolist()})
    assert route.length == pytest.approx(0.5 * math.pi * 20.0, rel=1e-3)
    assert np.median(route.curvature) == pytest.approx(1 / 20.0, rel=0.02)
    assert route.heading[-1] == pytest.approx(math.pi / 2, abs=0.04)  # the last chords
    assert route.describe()["segments"][0]["type"] == "polyline"
    for doc, match in (({"points": [[0, 0]], "speed_limit": 5}, "points: have 1 points"),
                       ({"points": [[0, 0], [1, 1]]}, "needs 'speed_limit'"),
                       ({"points": [[0, 0], [0, 0]], "speed_limit": 5}, "more than one"),
                       ({"points": "abc", "speed_limit": 5}, "points: have str"),
                       ({"points": [[0, 0], [1, "a"]], "speed_limit": 5},
                        r"points\[1\]: have str 'a', need a number"),
                       ({"points": [[0, 0], [1, 1]], "speed_limit": 5, "segments": []},
                        "unknown key 'segments'")):
        with pytest.raises(ConfigError, match=match):
            Route.from_dict(doc)
