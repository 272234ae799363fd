"""A route of straight and arc segments (JSON), its geometry, speed profile and road.

Route file format (docs/closed_loop.md)::

    {
      "name": "default",
      "start": {"x": 0.0, "y": 0.0, "yaw_deg": 0.0},
      "lane_width": 3.5,
      "segments": [
        {"type": "straight", "length": 60.0, "speed_limit": 10.0},
        {"type": "arc", "length": 78.5, "radius": 50.0, "direction": "left",
         "speed_limit": 10.0}
      ],
      "obstacles": [{"s": 150.0, "lateral": 0.0, "length": 4.6, "width": 1.9}]
    }

Units: metres, m/s, degrees for the start yaw; "direction" is "left" or "right". Instead
of start and segments, a route may be a lane centre given as points in map coordinates
(e.g. exported from CARLA): {"name": ..., "points": [[x, y], ...], "speed_limit": 10.0}. The route
is the centre line of the ego lane in the simulator's world frame (`map`, REP-103). The
road: the ego lane, an oncoming lane on its left, a dashed centre line between them, solid
edge lines, asphalt half a metre beyond the edge lines, grass outside. "obstacles" is
optional (sim/obstacles.py).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy.spatial import cKDTree

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.sim.obstacles import Obstacle, parse_obstacles

DEFAULT_ROUTE_FILE = Path(__file__).resolve().parent / "data" / "default_route.json"
# Spacing of the dense centre-line samples [m].
SAMPLE_SPACING_M = 0.25


@dataclass(frozen=True)
class Segment:
    kind: str            # "straight" | "arc"
    length: float        # [m]
    speed_limit: float   # [m/s]
    curvature: float = 0.0  # [1/m], + = left

    @property
    def radius(self) -> float:
        return math.inf if self.curvature == 0 else 1.0 / abs(self.curvature)


@dataclass(frozen=True)
class RoadLayout:
    """Lateral positions relative to the route (ego lane centre) [m], + = left."""

    lane_width: float = 3.5
    line_width: float = 0.15
    shoulder: float = 0.5
    dash_length: float = 3.0
    dash_gap: float = 6.0

    @property
    def right_edge(self) -> float:
        return -self.lane_width / 2

    @property
    def centre_line(self) -> float:
        return self.lane_width / 2

    @property
    def left_edge(self) -> float:
        return 1.5 * self.lane_width

    @property
    def asphalt(self) -> tuple[float, float]:
        return self.right_edge - self.shoulder, self.left_edge + self.shoulder


@dataclass(frozen=True)
class Projection:
    """Where points are relative to the route: station s [m], lateral offset [m, + = left],
    route heading there [rad]; all (N,)."""

    s: np.ndarray
    lateral: np.ndarray
    heading: np.ndarray


class Route:
    """Dense centre-line samples of the segments (see module docstring)."""

    def __init__(self, segments: Sequence[Segment], start_xy=(0.0, 0.0), start_yaw=0.0,
                 name: str = "route", road: RoadLayout = RoadLayout(),
                 obstacles: Sequence[Obstacle] = ()) -> None:
        if not segments:
            raise ConfigError("route: need at least one segment, have 0")
        self.name = name
        self.segments = tuple(segments)
        self.road = road
        self.obstacles = tuple(obstacles)
        self.start_xy = (float(start_xy[0]), float(start_xy[1]))
        self.start_yaw = float(start_yaw)
        xs, ys, yaws, ss, kappas, limits = [], [], [], [], [], []
        x, y, yaw, s0 = self.start_xy[0], self.start_xy[1], self.start_yaw, 0.0
        for k, seg in enumerate(self.segments):
            n = max(int(math.ceil(seg.length / SAMPLE_SPACING_M)), 1)
            ds = np.arange(n) * (seg.length / n)
            half = 0.5 * seg.curvature * ds
            chord = ds * np.sinc(half / math.pi)
            xs.append(x + chord * np.cos(yaw + half))
            ys.append(y + chord * np.sin(yaw + half))
            yaws.append(yaw + seg.curvature * ds)
            ss.append(s0 + ds)
            kappas.append(np.full(n, seg.curvature))
            limits.append(np.full(n, seg.speed_limit))
            half_l = 0.5 * seg.curvature * seg.length
            chord_l = seg.length * float(np.sinc(half_l / math.pi))
            x, y = x + chord_l * math.cos(yaw + half_l), y + chord_l * math.sin(yaw + half_l)
            yaw += seg.curvature * seg.length
            s0 += seg.length
        xs.append(np.array([x]))
        ys.append(np.array([y]))
        yaws.append(np.array([yaw]))
        ss.append(np.array([s0]))
        kappas.append(np.array([self.segments[-1].curvature]))
        limits.append(np.array([self.segments[-1].speed_limit]))
        self.s = np.concatenate(ss)
        self.xy = np.stack([np.concatenate(xs), np.concatenate(ys)], axis=1)
        self.heading = np.concatenate(yaws)
        self.curvature = np.concatenate(kappas)
        self.speed_limit = np.concatenate(limits)
        self.length = float(s0)
        self._tree = cKDTree(self.xy)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = "route") -> "Route":
        def need(mapping, key, where):
            if key not in mapping:
                raise ConfigError(f"{source}: {where} needs {key!r}")
            return mapping[key]

        if not isinstance(doc, Mapping):
            raise ConfigError(f"{source}: need a JSON object, have {type(doc).__name__}")
        if "points" in doc:
            return cls._from_points_doc(doc, source)
        start = doc.get("start", {})
        segments = []
        for i, raw in enumerate(need(doc, "segments", "the route")):
            where = f"segment {i}"
            kind = need(raw, "type", where)
            length = float(need(raw, "length", where))
            limit = float(need(raw, "speed_limit", where))
            if not (math.isfinite(length) and length > 0):
                raise ConfigError(f"{source}: {where}: length must be > 0 m, have {length}")
            if not (math.isfinite(limit) and limit > 0):
                raise ConfigError(f"{source}: {where}: speed_limit must be > 0 m/s, "
                                  f"have {limit}")
            if kind == "straight":
                segments.append(Segment("straight", length, limit))
            elif kind == "arc":
                radius = float(need(raw, "radius", where))
                direction = need(raw, "direction", where)
                if not (math.isfinite(radius) and radius >= 5.0):
                    raise ConfigError(f"{source}: {where}: radius must be >= 5 m, have {radius}")
                if direction not in ("left", "right"):
                    raise ConfigError(f"{source}: {where}: direction must be \"left\" or "
                                      f"\"right\", have {direction!r}")
                sign = 1.0 if direction == "left" else -1.0
                segments.append(Segment("arc", length, limit, sign / radius))
            else:
                raise ConfigError(f"{source}: {where}: type must be \"straight\" or \"arc\", "
                                  f"have {kind!r}")
        road = RoadLayout(lane_width=float(doc.get("lane_width", RoadLayout.lane_width)))
        return cls(segments, (float(start.get("x", 0.0)), float(start.get("y", 0.0))),
                   math.radians(float(start.get("yaw_deg", 0.0))),
                   name=str(doc.get("name", source)), road=road,
                   obstacles=parse_obstacles(doc.get("obstacles"), source))

    @classmethod
    def _from_points_doc(cls, doc: Mapping[str, Any], source: str) -> "Route":
        try:
            points = np.asarray(doc["points"], dtype=np.float64)
            limit = float(doc["speed_limit"])
        except KeyError as exc:
            raise ConfigError(f"{source}: a route of points needs {exc.args[0]!r}") from None
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: points must be [[x, y], ...] in metres and "
                              "speed_limit a number") from None
        return cls.from_points(points, limit, name=str(doc.get("name", source)),
                               road=RoadLayout(lane_width=float(doc.get(
                                   "lane_width", RoadLayout.lane_width))),
                               obstacles=parse_obstacles(doc.get("obstacles"), source),
                               source=source)

    @classmethod
    def from_points(cls, points, speed_limit: float, name: str = "route",
                    road: RoadLayout = RoadLayout(), obstacles: Sequence[Obstacle] = (),
                    source: str = "route") -> "Route":
        """A route through points (N, 2) of a lane centre in map coordinates (e.g. exported
        from CARLA's waypoints): the polyline resampled every SAMPLE_SPACING_M, heading
        along it, one speed limit. One pseudo segment ("polyline") describes it."""
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) < 2 or not np.all(np.isfinite(p)):
            raise ConfigError(f"{source}: points must be >= 2 finite [x, y] pairs, have "
                              f"shape {p.shape}")
        if not (math.isfinite(speed_limit) and speed_limit > 0):
            raise ConfigError(f"{source}: speed_limit must be > 0 m/s, have {speed_limit}")
        step = np.hypot(*np.diff(p, axis=0).T)
        p = p[np.concatenate([[True], step > 1e-6])]
        if len(p) < 2:
            raise ConfigError(f"{source}: points must span more than one position")
        cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(p, axis=0).T))])
        length = float(cum[-1])
        s = np.linspace(0.0, length, max(int(math.ceil(length / SAMPLE_SPACING_M)), 1) + 1)
        xy = np.column_stack([np.interp(s, cum, p[:, 0]), np.interp(s, cum, p[:, 1])])
        # Heading of the chord over +-1 m (the polyline's own heading steps at its points).
        k = max(int(round(1.0 / SAMPLE_SPACING_M)), 1)
        index = np.arange(len(s))
        d = xy[np.minimum(index + k, len(s) - 1)] - xy[np.maximum(index - k, 0)]
        heading = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
        route = cls.__new__(cls)
        route.name, route.road, route.obstacles = name, road, tuple(obstacles)
        route.segments = (Segment("polyline", length, float(speed_limit)),)
        route.start_xy = (float(xy[0, 0]), float(xy[0, 1]))
        route.start_yaw = float(heading[0])
        route.s, route.xy, route.heading = s, xy, heading
        route.curvature = np.gradient(heading, s)
        route.speed_limit = np.full(len(s), float(speed_limit))
        route.length = length
        route._tree = cKDTree(xy)
        return route

    @classmethod
    def load(cls, path: Optional[str | Path] = None) -> "Route":
        """The route in `path` (JSON); None or "" = the default route of the package."""
        path = Path(path) if path else DEFAULT_ROUTE_FILE
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read route: {exc}") from exc
        return cls.from_dict(doc, source=str(path))

    # ------------------------------------------------------------------ geometry
    def pose_at(self, s) -> tuple[np.ndarray, np.ndarray]:
        """Centre-line positions (N, 2) and headings (N,) at stations s (clamped)."""
        s = np.clip(np.atleast_1d(np.asarray(s, dtype=np.float64)), 0.0, self.length)
        xy = np.stack([np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1])],
                      axis=1)
        return xy, np.interp(s, self.s, self.heading)

    def project(self, points) -> Projection:
        """Projection of points (N, 2) onto the centre line (nearest dense sample, refined
        on the adjacent sample segments)."""
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))[:, :2]
        _, idx = self._tree.query(p)
        best_s = np.empty(len(p))
        best_d = np.full(len(p), np.inf)
        for shift in (-1, 0):
            i0 = np.clip(idx + shift, 0, len(self.s) - 2)
            a, b = self.xy[i0], self.xy[i0 + 1]
            seg = b - a
            length2 = np.einsum("ij,ij->i", seg, seg)
            u = np.clip(np.einsum("ij,ij->i", p - a, seg) / np.maximum(length2, 1e-12), 0, 1)
            closest = a + seg * u[:, None]
            d = np.hypot(*(p - closest).T)
            better = d < best_d
            best_d[better] = d[better]
            best_s[better] = (self.s[i0] + u * np.sqrt(length2))[better]
        xy, heading = self.pose_at(best_s)
        offset = p - xy
        lateral = -np.sin(heading) * offset[:, 0] + np.cos(heading) * offset[:, 1]
        return Projection(s=best_s, lateral=lateral, heading=heading)

    def limit_at(self, s) -> np.ndarray:
        """Speed limit [m/s] at stations s."""
        s = np.clip(np.atleast_1d(np.asarray(s, dtype=np.float64)), 0.0, self.length)
        i = np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self.s) - 1)
        return self.speed_limit[i]

    def target_speed(self, s, deceleration: float, stop_at_end: bool = True,
                     stop_station: Optional[float] = None) -> np.ndarray:
        """Speed a driver aims for at stations s: the limit, lowered ahead of lower limits
        (and of the route's end, or of `stop_station` and beyond it) so that
        `deceleration` [m/s^2] is enough to meet them."""
        key = (deceleration, stop_at_end, stop_station)
        if not hasattr(self, "_profile") or self._profile[0] != key:
            v = self.speed_limit.astype(np.float64).copy()
            if stop_at_end:
                v[-1] = 0.0
            if stop_station is not None:  # standing from the last sample at or before it
                v[max(int(np.searchsorted(self.s, stop_station, side="right")) - 1, 0):] = 0.0
            ds = np.diff(self.s)
            for i in range(len(v) - 2, -1, -1):
                v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2.0 * deceleration * ds[i]))
            self._profile = (key, v)
        s = np.clip(np.atleast_1d(np.asarray(s, dtype=np.float64)), 0.0, self.length)
        return np.interp(s, self.s, self._profile[1])

    def bounds(self, margin: float) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) of the centre line plus margin [m]."""
        lo, hi = self.xy.min(axis=0) - margin, self.xy.max(axis=0) + margin
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def on_asphalt(self, lateral) -> np.ndarray:
        lo, hi = self.road.asphalt
        lateral = np.asarray(lateral)
        return (lateral >= lo) & (lateral <= hi)

    def describe(self) -> dict:
        return {"name": self.name, "length_m": round(self.length, 3),
                "segments": [{"type": s.kind, "length": s.length, "speed_limit": s.speed_limit,
                              **({"radius": s.radius,
                                  "direction": "left" if s.curvature > 0 else "right"}
                                 if s.kind == "arc" else {})} for s in self.segments],
                **({"obstacles": [{"s": o.s, "lateral": o.lateral, "length": o.length,
                                   "width": o.width} for o in self.obstacles]}
                   if self.obstacles else {})}
