"""Camera images of the route's road: a top-down raster of the road, looked up per pixel.

The pinhole ground geometry of each camera (pixel -> ground point in the base frame, sky
rows, haze by range) is the scenario renderer's (sim/scenario.py `camera_geometry`, rig
placements and FOVs of RIG_CAMERAS). Instead of its checker ground, the ground colour
comes from a raster of the world, built once from the route: grass, asphalt, and white
lines (edge lines, dashed centre line). The route's obstacles are drawn over the ground
as the scenario renderer draws its boxes (orange). Everything is deterministic in
(camera, pose).
"""
from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.sim.obstacles import ObstacleField
from alpamayo_ros.sim.route import Route
from alpamayo_ros.sim import scenario as sc

GRASS, ASPHALT, LINE = 0, 1, 2
_COLORS = np.array([[70, 120, 55], [90, 90, 95], [235, 235, 225]], dtype=np.float32)
OBSTACLE_COLOR = (230, 120, 30)
# Raster resolution [m per cell] and extent beyond the road [m].
CELL_M = 0.1
_MARGIN_M = 40.0
# Largest raster built (one byte a cell, 512 MiB): the bounding box of a route plus the
# margin must fit, e.g. a 50 km straight route, or a loop of about 2.2 km x 2.2 km.
MAX_RASTER_CELLS = 2 ** 29


def raster_shape(route: Route, cell_m: float = CELL_M) -> tuple[int, int]:
    """(rows, columns) of the raster of `route`; ConfigError when it has more than
    MAX_RASTER_CELLS cells (checked before anything is allocated)."""
    x0, y0, x1, y1 = route.bounds(_MARGIN_M)
    shape = (int(math.ceil((y1 - y0) / cell_m)) + 1, int(math.ceil((x1 - x0) / cell_m)) + 1)
    cells = shape[0] * shape[1]
    if cells > MAX_RASTER_CELLS:
        raise ConfigError(
            f"route {route.name}: its road raster would have {cells / 2 ** 20:.0f} Mi cells "
            f"({(x1 - x0) / 1000:.2f} km x {(y1 - y0) / 1000:.2f} km at {cell_m:g} m), need at "
            f"most {MAX_RASTER_CELLS / 2 ** 20:.0f} Mi: use a shorter or more compact route")
    return shape


class RoadRaster:
    """Top-down uint8 raster of ground kinds (GRASS, ASPHALT, LINE) around the route."""

    def __init__(self, route: Route, cell_m: float = CELL_M) -> None:
        self.route = route
        self.cell_m = cell_m
        self.shape = raster_shape(route, cell_m)
        self.origin = np.array(route.bounds(_MARGIN_M)[:2])
        self.kinds = np.full(self.shape, GRASS, dtype=np.uint8)
        road = route.road
        # Paint by sampling the road in (station, lateral) at half the cell size.
        step = cell_m / 2
        s = np.arange(0.0, route.length + step, step)
        xy, heading = route.pose_at(s)
        normal = np.stack([-np.sin(heading), np.cos(heading)], axis=1)
        lo, hi = road.asphalt
        lateral = np.arange(lo, hi + step, step)
        half_line = road.line_width / 2
        dash_on = (s % (road.dash_length + road.dash_gap)) < road.dash_length
        for e in lateral:
            near = lambda c: abs(e - c) <= half_line  # noqa: E731
            if near(road.right_edge) or near(road.left_edge):
                kind = np.full(len(s), LINE, np.uint8)
            elif near(road.centre_line):
                kind = np.where(dash_on, LINE, ASPHALT).astype(np.uint8)
            else:
                kind = np.full(len(s), ASPHALT, np.uint8)
            pts = xy + normal * e
            rows, cols = self.cells(pts)
            ok = (rows >= 0) & (rows < self.shape[0]) & (cols >= 0) & (cols < self.shape[1])
            # Lines win over asphalt where samples of both fall in one cell.
            np.maximum.at(self.kinds, (rows[ok], cols[ok]), kind[ok])

    def cells(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raster (row, col) of world points (N, 2)."""
        idx = np.floor((np.asarray(xy) - self.origin) / self.cell_m).astype(np.int64)
        return idx[..., 1], idx[..., 0]

    def kind_at(self, xy: np.ndarray) -> np.ndarray:
        rows, cols = self.cells(xy)
        inside = (rows >= 0) & (rows < self.shape[0]) & (cols >= 0) & (cols < self.shape[1])
        out = np.full(rows.shape, GRASS, np.uint8)
        out[inside] = self.kinds[rows[inside], cols[inside]]
        return out


class RoadRenderer:
    """Renders the rig cameras (Alpamayo camera index 0, 1, 2, 6) over a RoadRaster."""

    def __init__(self, route: Route) -> None:
        self.raster = RoadRaster(route)
        field = ObstacleField(route, route.obstacles)
        self.boxes = [sc.Box((cx, cy), (ob.length, ob.width, ob.height), OBSTACLE_COLOR, yaw)
                      for ob, (cx, cy, yaw) in zip(field.obstacles, field.poses)]

    @cached_property
    def _lut(self) -> np.ndarray:
        return sc.fog_lut(_COLORS)

    def render(self, camera_index: int, width: int, height: int, x: float, y: float,
               yaw: float) -> np.ndarray:
        """RGB uint8 (height, width, 3) of one camera for the rear-axle pose (x, y, yaw)."""
        geo = sc.camera_geometry(camera_index, width, height)
        image = np.empty((height, width, 3), dtype=np.uint8)
        image[:geo.first_ground_row] = geo.sky
        # Ground points of the pixels in the base frame [m] -> world -> raster cells.
        gx = geo.ground_x / sc.CELL_PER_M
        gy = geo.ground_y / sc.CELL_PER_M
        c, s = math.cos(yaw), math.sin(yaw)
        wx = x + c * gx - s * gy
        wy = y + s * gx + c * gy
        raster = self.raster
        cols = np.floor((wx - raster.origin[0]) / raster.cell_m).astype(np.int64)
        rows = np.floor((wy - raster.origin[1]) / raster.cell_m).astype(np.int64)
        inside = (rows >= 0) & (rows < raster.shape[0]) & (cols >= 0) & (cols < raster.shape[1])
        kind = np.zeros(rows.shape, np.int32)
        kind[inside] = raster.kinds[rows[inside], cols[inside]]
        kind += geo.fog_row
        np.take(self._lut, kind, axis=0, out=image[geo.first_ground_row:], mode="clip")
        if self.boxes:
            sc.draw_boxes(image, camera_index, geo.focal_px, x, y, yaw, self.boxes)
        return image
