"""Navigation instructions from a route (ROS-free): "Turn left in 11m" as the official
1.5 notebooks phrase them (notebooks/nav_demo_samples.json: maneuvers TURN_LEFT and
TURN_RIGHT, "Turn <left|right> in <distance>m", the distance to the maneuver rounded to
whole metres: 11.2 -> 11, 3.8 -> 4, 29.8 -> 30).

The route is a polyline in the odometry frame (x, y; a nav_msgs/Path). A turn is a run
of route curvature of one sign above ``min_curvature`` whose heading change reaches
``min_turn_angle_deg``; its station is where the run starts. Gentle bends stay silent. The
ego (its x, y in the same frame) is projected onto the route; the next turn ahead within
``announce_distance`` gives the instruction, which ends once the ego reaches the turn.
Distances are along the route.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from alpamayo_ros.core.errors import ConfigError


@dataclass(frozen=True)
class RouteNavigationConfig:
    """announce_distance: largest distance [m] at which a turn is announced;
    min_turn_angle_deg: heading change that makes a turn; min_curvature: curvature [1/m]
    above which the route bends; spacing: resampling step along the route [m]."""

    announce_distance: float = 50.0
    min_turn_angle_deg: float = 30.0
    min_curvature: float = 1.0 / 150.0
    spacing: float = 0.5


@dataclass(frozen=True)
class Maneuver:
    """A turn: its station along the route [m] and direction ("left" / "right")."""

    station: float
    direction: str


def instruction_text(direction: str, distance_m: float) -> str:
    """The official phrasing; whole metres, halves rounded up (half-up, not to even)."""
    return f"Turn {direction} in {int(math.floor(distance_m + 0.5))}m"


class RouteNavigator:
    """Turns of one route and the instruction for an ego position (module docstring)."""

    def __init__(self, xy, config: RouteNavigationConfig = RouteNavigationConfig()) -> None:
        points = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if len(points) < 2 or not np.isfinite(points).all():
            raise ConfigError(f"a route needs at least 2 finite points, have {len(points)}")
        step = np.linalg.norm(np.diff(points, axis=0), axis=1)
        keep = np.concatenate([[True], step > 1e-6])  # repeated points carry no heading
        points = points[keep]
        stations = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0),
                                                                   axis=1))])
        if stations[-1] <= 0.0:
            raise ConfigError("a route needs a non-zero length")
        self.config = config
        grid = np.arange(0.0, stations[-1], config.spacing)
        self.stations = grid
        self.xy = np.stack([np.interp(grid, stations, points[:, k]) for k in (0, 1)], axis=1)
        self.maneuvers = self._find_turns()

    def _find_turns(self) -> list[Maneuver]:
        if len(self.stations) < 3:
            return []
        delta = np.diff(self.xy, axis=0)
        heading = np.unwrap(np.arctan2(delta[:, 1], delta[:, 0]))
        curvature = np.diff(heading) / self.config.spacing  # at stations[1:-1]
        sign = np.where(np.abs(curvature) > self.config.min_curvature, np.sign(curvature), 0)
        turns, start = [], None
        for i in range(len(sign) + 1):
            current = sign[i] if i < len(sign) else 0
            if start is not None and current != sign[start]:
                angle = float(np.sum(curvature[start:i]) * self.config.spacing)
                if abs(angle) >= math.radians(self.config.min_turn_angle_deg):
                    turns.append(Maneuver(float(self.stations[start + 1]),
                                          "left" if angle > 0 else "right"))
                start = None
            if start is None and current != 0:
                start = i
        return turns

    def station_of(self, ego_xy) -> float:
        """Station [m] of the route point nearest to the ego."""
        distances = np.linalg.norm(self.xy - np.asarray(ego_xy, dtype=np.float64)[:2], axis=1)
        return float(self.stations[int(np.argmin(distances))])

    def next_turn(self, ego_xy) -> Optional[tuple[Maneuver, float]]:
        """(the next turn ahead, its distance [m]) or None."""
        station = self.station_of(ego_xy)
        for maneuver in self.maneuvers:
            if maneuver.station > station:
                return maneuver, maneuver.station - station
        return None

    def instruction(self, ego_xy) -> Optional[str]:
        """The instruction for the ego position, or None (no turn within reach)."""
        found = self.next_turn(ego_xy)
        if found is None or found[1] > self.config.announce_distance:
            return None
        return instruction_text(found[0].direction, found[1])
