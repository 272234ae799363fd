"""Simulation: the stepped world of the CI simulator (fixed step, integer-ns time line).

Time is k * step_ns (k = 0, 1, ...), exact in integers, so sim stamps are multiples of the
step and of any planning period that is a multiple of it. The vehicle starts on the route
(station, lateral offset, heading of the route there) at initial_speed. Each `step`
applies the held command for one step (KinematicBicycle). Cameras are due every
camera_period_ns (phase 0), as CARLA sensors with sensor_tick in synchronous mode.

After each step, `touching` lists the route's obstacles the vehicle box touches (a CARLA
collision sensor reports a contact in every frame it lasts) and `crossed_markings` the
lane markings a corner of the box crossed during the step (a lane invasion sensor's
event): LANE_MARKING_SOLID for the edge lines, LANE_MARKING_BROKEN for the dashed centre
line, as carla_msgs/CarlaLaneInvasionEvent numbers them. The vehicle drives through an
obstacle (a kinematic model has no contact forces).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.sim.obstacles import VEHICLE_BOX, ObstacleField, vehicle_corners
from alpamayo_ros.sim.route import Route
from alpamayo_ros.sim.vehicle_model import KinematicBicycle, VehicleParams, VehicleState


# carla_msgs/CarlaLaneInvasionEvent marking types.
LANE_MARKING_BROKEN, LANE_MARKING_SOLID = 1, 2


@dataclass(frozen=True)
class HeldCommand:
    """The command the simulator applies until the next one (CARLA semantics)."""

    throttle: float = 0.0
    brake: float = 0.0
    steer: float = 0.0
    reverse: bool = False
    hand_brake: bool = False


class Simulation:
    def __init__(self, route: Route, vehicle: VehicleParams, step_ns: int,
                 camera_period_ns: int, initial_speed: float = 0.0,
                 start_station: float = 0.0, start_lateral: float = 0.0) -> None:
        if step_ns <= 0 or camera_period_ns <= 0 or camera_period_ns % step_ns:
            raise ConfigError(f"camera period {camera_period_ns} ns must be a positive multiple "
                              f"of the step {step_ns} ns")
        self.route = route
        self.model = KinematicBicycle(vehicle)
        self.step_ns = int(step_ns)
        self.camera_period_ns = int(camera_period_ns)
        self.step_index = 0
        xy, heading = route.pose_at([start_station])
        normal = (-math.sin(heading[0]), math.cos(heading[0]))
        self.state = VehicleState(x=float(xy[0, 0] + normal[0] * start_lateral),
                                  y=float(xy[0, 1] + normal[1] * start_lateral),
                                  yaw=float(heading[0]), speed=float(initial_speed))
        self.command = HeldCommand()
        self.obstacles = ObstacleField(route, route.obstacles)
        road = route.road
        self._markings = ((road.right_edge, LANE_MARKING_SOLID),
                          (road.centre_line, LANE_MARKING_BROKEN),
                          (road.left_edge, LANE_MARKING_SOLID))
        self._corner_lateral = self._corner_laterals()
        self.touching: list = []
        self.crossed_markings: list[int] = []
        self._update_events()

    def _corner_laterals(self) -> np.ndarray:
        x, y, yaw = self.actor_pose()
        corners = vehicle_corners(x, y, yaw, VEHICLE_BOX)
        proj = self.route.project(corners)
        return np.where(proj.s > 0.0, proj.lateral, np.nan)  # nothing before the start

    def _update_events(self) -> None:
        x, y, yaw = self.actor_pose()
        self.touching = self.obstacles.touching(x, y, yaw)
        now = self._corner_laterals()
        before = self._corner_lateral
        crossed = []
        for position, kind in self._markings:
            a, b = before - position, now - position
            if np.any((a * b < 0.0) & np.isfinite(a * b)):
                crossed.append(kind)
        self.crossed_markings = crossed
        self._corner_lateral = now

    @property
    def time_ns(self) -> int:
        return self.step_index * self.step_ns

    def cameras_due(self) -> bool:
        return self.time_ns % self.camera_period_ns == 0

    def apply(self, command: HeldCommand) -> None:
        self.command = command

    def step(self) -> None:
        c = self.command
        brake = 1.0 if c.hand_brake else c.brake
        self.state = self.model.step(self.state, c.throttle, brake, c.steer,
                                     self.step_ns / 1e9, reverse=c.reverse)
        self.step_index += 1
        self._update_events()

    def actor_pose(self) -> tuple[float, float, float]:
        """(x, y, yaw) of the actor origin, the pose CARLA's odometry reports."""
        x, y = self.model.actor_origin(self.state)
        return x, y, self.state.yaw

    def yaw_rate(self) -> float:
        return self.model.yaw_rate(self.state)

    def teleport(self, x: float, y: float, yaw: float, speed: Optional[float] = None) -> None:
        """Move the actor origin to (x, y, yaw) (a CARLA set_transform / respawn)."""
        v = self.state.speed if speed is None else speed
        self.state = self.model.from_actor_origin(x, y, yaw, v)
        self._corner_lateral = self._corner_laterals()
        self._update_events()
