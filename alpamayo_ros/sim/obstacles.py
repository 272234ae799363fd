"""Static obstacles placed along a route, the ego vehicle's box, and their contact test.

Route files may list obstacles in route coordinates (docs/closed_loop.md)::

    "obstacles": [{"s": 150.0, "lateral": 0.0, "length": 4.6, "width": 1.9}]

s: station of the obstacle's centre along the route [m]; lateral: offset of its centre
from the lane centre [m, + = left]; length (along the route) and width [m]; optional
height [m] (default 1.5, used for rendering). An obstacle is aligned with the route's
heading at s. Each has an actor id (OBSTACLE_ID_BASE + its index) and a CARLA type id
(`static.prop.<name>`), as the bridge's collision events and actor list name them. The
route file reader (sim/route.py) checks the values.

The ego box is the vehicle's bounding box relative to the actor origin (CARLA's vehicle
bounding box is centred near the actor origin; VEHICLE_BOX is about the Lincoln MKZ 2017
of config/carla_objects.json, 4.9 m x 2.1 m, not measured in CARLA here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

OBSTACLE_ID_BASE = 1000
OBSTACLE_TYPE_ID = "static.prop.box"
DEFAULT_HEIGHT_M = 1.5
# Gap the route oracle leaves between the vehicle's front and an obstacle in its lane [m].
STOP_GAP_M = 1.5


@dataclass(frozen=True)
class VehicleBox:
    """Half extents of the vehicle's footprint [m] and the box centre's position along the
    actor's x axis (0: centred on the actor origin)."""

    half_length: float = 2.45
    half_width: float = 1.05
    centre_x: float = 0.0

    def front_from(self, point_x: float) -> float:
        """Distance from a point on the actor's x axis (e.g. the rear axle, negative) to
        the front of the box [m]."""
        return self.centre_x + self.half_length - point_x


VEHICLE_BOX = VehicleBox()


@dataclass(frozen=True)
class Obstacle:
    """One static obstacle in route coordinates (see module docstring)."""

    s: float
    lateral: float
    length: float
    width: float
    height: float = DEFAULT_HEIGHT_M
    actor_id: int = OBSTACLE_ID_BASE
    type_id: str = OBSTACLE_TYPE_ID

    def in_lane(self, vehicle_half_width: float) -> bool:
        """Whether a vehicle on the lane centre would touch it (their lateral extents
        overlap)."""
        return abs(self.lateral) < self.width / 2 + vehicle_half_width


def rectangle_corners(cx: float, cy: float, yaw: float, half_length: float,
                      half_width: float) -> np.ndarray:
    """Corners (4, 2) of a rectangle centred at (cx, cy) with heading yaw."""
    c, s = math.cos(yaw), math.sin(yaw)
    local = np.array([[half_length, half_width], [half_length, -half_width],
                      [-half_length, -half_width], [-half_length, half_width]])
    return np.column_stack([cx + c * local[:, 0] - s * local[:, 1],
                            cy + s * local[:, 0] + c * local[:, 1]])


def rectangles_touch(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two convex rectangles (4, 2 corners each) overlap or touch.

    Separating-axis test written here: two rectangles need 4 axis projections, less
    than a geometry package (shapely is not a dependency) would cost per step."""
    for rect in (a, b):
        for k in range(2):
            edge = rect[k + 1] - rect[k]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def vehicle_corners(actor_x: float, actor_y: float, yaw: float,
                    box: VehicleBox = VEHICLE_BOX) -> np.ndarray:
    cx = actor_x + box.centre_x * math.cos(yaw)
    cy = actor_y + box.centre_x * math.sin(yaw)
    return rectangle_corners(cx, cy, yaw, box.half_length, box.half_width)


class ObstacleField:
    """The obstacles of a route in world coordinates: their footprints and the contact
    test against the vehicle box."""

    def __init__(self, route, obstacles: Sequence[Obstacle]) -> None:
        self.obstacles = tuple(obstacles)
        self.footprints = []
        self.poses = []
        for ob in self.obstacles:
            xy, heading = route.pose_at([ob.s])
            yaw = float(heading[0])
            # Before the start or past the end: straight on from there.
            along = ob.s - min(max(ob.s, 0.0), route.length)
            cx = float(xy[0, 0]) + math.cos(yaw) * along - math.sin(yaw) * ob.lateral
            cy = float(xy[0, 1]) + math.sin(yaw) * along + math.cos(yaw) * ob.lateral
            self.poses.append((cx, cy, yaw))
            self.footprints.append(rectangle_corners(cx, cy, yaw, ob.length / 2, ob.width / 2))

    def touching(self, actor_x: float, actor_y: float, yaw: float,
                 box: VehicleBox = VEHICLE_BOX) -> list[Obstacle]:
        """Obstacles the vehicle box at this actor pose touches."""
        if not self.obstacles:
            return []
        car = vehicle_corners(actor_x, actor_y, yaw, box)
        centre = car.mean(axis=0)
        reach = math.hypot(box.half_length, box.half_width)
        hits = []
        for ob, footprint in zip(self.obstacles, self.footprints):
            if (np.hypot(*(footprint.mean(axis=0) - centre))
                    > reach + math.hypot(ob.length, ob.width) / 2):
                continue  # far apart: skip the exact test
            if rectangles_touch(car, footprint):
                hits.append(ob)
        return hits


def stop_station(route_length: float, obstacles: Sequence[Obstacle], front_extent: float,
                 vehicle_half_width: float = VEHICLE_BOX.half_width,
                 gap: float = STOP_GAP_M) -> float:
    """Station where a reference point whose front is `front_extent` ahead of it must stop:
    the route's end, or STOP_GAP_M before the first obstacle in the lane, whichever comes
    first (never below 0)."""
    stop = route_length
    for ob in obstacles:
        if ob.in_lane(vehicle_half_width):
            stop = min(stop, ob.s - ob.length / 2 - front_extent - gap)
    return max(stop, 0.0)
