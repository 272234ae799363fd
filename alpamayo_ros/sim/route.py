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
      "obstacles": [{"s": 150.0, "lateral": 0.0, "length": 4.6, "width": 1.9}],
      "instructions": [{"s": 120.0, "text": "Turn right in 40m"}]
    }

Units: metres, m/s, degrees for the start yaw; "direction" is "left" or "right". Instead
of start and segments, a route may be a lane centre given as points in map coordinates
(e.g. exported from CARLA): {"name": ..., "points": [[x, y], ...], "speed_limit": 10.0}. The route
is the centre line of the ego lane in the simulator's world frame (`map`, REP-103). The
road: the ego lane, an oncoming lane on its left, a dashed centre line between them, solid
edge lines, asphalt half a metre beyond the edge lines, grass outside. "obstacles" is
optional (sim/obstacles.py). "instructions" is optional: navigation instructions by
station (core.route_navigation; without them the route navigation node generates
instructions from the route's turns).
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
from alpamayo_ros.sim.obstacles import DEFAULT_HEIGHT_M, OBSTACLE_ID_BASE, Obstacle
from alpamayo_ros.core.param_schema import closest_name
from alpamayo_ros.core.route_navigation import parse_route_instructions

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


@dataclass(frozen=True)
class RouteLimits:
    """Bounds of a route file's values (docs/closed_loop.md): lengths [m], speeds [m/s]."""

    max_segments: int = 1000
    max_length: float = 50_000.0        # one segment and the whole route
    max_speed_limit: float = 60.0
    min_radius: float = 5.0
    max_radius: float = 100_000.0
    min_lane_width: float = 2.0
    max_lane_width: float = 8.0
    max_abs_start: float = 1.0e6
    max_points: int = 1_000_000         # a route of map points
    max_obstacles: int = 1000
    max_obstacle_size: float = 100.0    # length, width, height


ROUTE_LIMITS = RouteLimits()


def _have(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


class _RouteReader:
    """Checks of the values of one route file; every problem is a one-line ConfigError
    that names the file, where in it, what it has and what it needs."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, text: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {text}")

    def mapping(self, value: Any, where: str, known: Sequence[str],
                required: Sequence[str] = ()) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"have {_have(value)}, need a JSON object")
        for key in value:
            if key not in known:
                raise self.fail(where, f"unknown key {key!r}{closest_name(str(key), known)}; "
                                       f"known: {', '.join(known)}")
        for key in required:
            if key not in value:
                raise self.fail(where, f"needs {key!r}")
        return value

    def number(self, value: Any, where: str, lo: float, hi: float,
               lo_open: bool = False) -> float:
        """A finite number in [lo, hi] (lo excluded with lo_open); no bools or strings."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"have {_have(value)}, need a number")
        value = float(value)
        low_ok = value > lo if lo_open else value >= lo
        if not (math.isfinite(value) and low_ok and value <= hi):
            raise self.fail(where, f"have {value!r}, need a number in "
                                   f"{'(' if lo_open else '['}{lo:g}, {hi:g}]")
        return value

    def segment(self, index: int, raw: Any) -> Segment:
        lim = ROUTE_LIMITS
        where = f"segment {index}"
        raw = self.mapping(raw, where, ("type", "length", "speed_limit", "radius", "direction"),
                           required=("type", "length", "speed_limit"))
        kind = raw["type"]
        if kind not in ("straight", "arc"):
            raise self.fail(where, f"type: have {_have(kind)}, need \"straight\" or \"arc\"")
        length = self.number(raw["length"], f"{where}: length", 0.0, lim.max_length,
                             lo_open=True)
        limit = self.number(raw["speed_limit"], f"{where}: speed_limit", 0.0,
                            lim.max_speed_limit, lo_open=True)
        if kind == "straight":
            extra = sorted({"radius", "direction"} & set(raw))
            if extra:
                raise self.fail(where, f"a straight segment has no {', '.join(extra)}")
            return Segment("straight", length, limit)
        for key in ("radius", "direction"):
            if key not in raw:
                raise self.fail(where, f"needs {key!r}")
        radius = self.number(raw["radius"], f"{where}: radius", lim.min_radius, lim.max_radius)
        direction = raw["direction"]
        if direction not in ("left", "right"):
            raise self.fail(where, f"direction: have {_have(direction)}, need \"left\" or "
                                   "\"right\"")
        return Segment("arc", length, limit, (1.0 if direction == "left" else -1.0) / radius)

    def obstacles(self, raw: Any) -> tuple[Obstacle, ...]:
        """The "obstacles" list (sim/obstacles.py); actor ids in file order."""
        lim = ROUTE_LIMITS
        if raw is None:
            return ()
        if not isinstance(raw, list) or len(raw) > lim.max_obstacles:
            raise self.fail("obstacles", f"have {_have(raw)}, need a list of at most "
                                         f"{lim.max_obstacles} obstacles")
        out = []
        for i, item in enumerate(raw):
            where = f"obstacle {i}"
            item = self.mapping(item, where, ("s", "lateral", "length", "width", "height"),
                                required=("s", "length", "width"))
            size = {key: self.number(item.get(key, DEFAULT_HEIGHT_M), f"{where}: {key}", 0.0,
                                     lim.max_obstacle_size, lo_open=True)
                    for key in ("length", "width", "height")}
            out.append(Obstacle(
                s=self.number(item["s"], f"{where}: s", -lim.max_length, 2 * lim.max_length),
                lateral=self.number(item.get("lateral", 0.0), f"{where}: lateral",
                                    -lim.max_obstacle_size, lim.max_obstacle_size),
                **size, actor_id=OBSTACLE_ID_BASE + i))
        return tuple(out)

    def points(self, raw: Any) -> np.ndarray:
        """The "points" of a route of map points: (N, 2), N >= 2."""
        lim = ROUTE_LIMITS
        if not isinstance(raw, list) or not 2 <= len(raw) <= lim.max_points:
            have = _have(raw) if not isinstance(raw, list) else f"{len(raw)} points"
            raise self.fail("points", f"have {have}, need a list of 2 to {lim.max_points} "
                                      "[x, y] points")
        out = np.empty((len(raw), 2))
        for i, point in enumerate(raw):
            if not isinstance(point, list) or len(point) != 2:
                raise self.fail(f"points[{i}]", f"have {_have(point)}, need [x, y]")
            out[i] = [self.number(v, f"points[{i}]", -lim.max_abs_start, lim.max_abs_start)
                      for v in point]
        return out


class Route:
    """Dense centre-line samples of the segments (see module docstring)."""

    def __init__(self, segments: Sequence[Segment], start_xy=(0.0, 0.0), start_yaw=0.0,
                 name: str = "route", road: RoadLayout = RoadLayout(),
                 obstacles: Sequence[Obstacle] = (), instructions: Sequence = ()) -> None:
        if not segments:
            raise ConfigError("route: need at least one segment, have 0")
        self.name = name
        self.segments = tuple(segments)
        self.road = road
        self.obstacles = tuple(obstacles)
        self.instructions = tuple(instructions)  # core.route_navigation.ScriptedInstruction
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
        """The route of a parsed route file; ConfigError naming the first problem (a
        missing or unknown key, a wrong type, a value out of ROUTE_LIMITS)."""
        reader = _RouteReader(source)
        if isinstance(doc, Mapping) and "points" in doc:
            return cls._from_points_doc(reader, doc)
        doc = reader.mapping(doc, "the route", ("name", "start", "lane_width", "segments",
                                                "obstacles", "instructions"),
                             required=("segments",))
        start = reader.mapping(doc.get("start", {}), "start", ("x", "y", "yaw_deg"))
        raw_segments = doc["segments"]
        if not isinstance(raw_segments, list) or not raw_segments:
            raise ConfigError(f"{source}: segments: have {_have(raw_segments)}, need a list "
                              "of at least one segment")
        if len(raw_segments) > ROUTE_LIMITS.max_segments:
            raise ConfigError(f"{source}: segments: have {len(raw_segments)}, need at most "
                              f"{ROUTE_LIMITS.max_segments}")
        segments = [reader.segment(i, raw) for i, raw in enumerate(raw_segments)]
        total = sum(seg.length for seg in segments)
        if total > ROUTE_LIMITS.max_length:
            raise ConfigError(f"{source}: the segments add up to {total:g} m, need at most "
                              f"{ROUTE_LIMITS.max_length:g} m")
        lim = ROUTE_LIMITS
        lane_width = reader.number(doc.get("lane_width", RoadLayout.lane_width), "lane_width",
                                   lim.min_lane_width, lim.max_lane_width)
        xy = tuple(reader.number(start.get(key, 0.0), f"start.{key}", -lim.max_abs_start,
                                 lim.max_abs_start) for key in ("x", "y"))
        yaw_deg = reader.number(start.get("yaw_deg", 0.0), "start.yaw_deg", -360.0, 360.0)
        name = doc.get("name", source)
        if not isinstance(name, str):
            raise ConfigError(f"{source}: name: have {_have(name)}, need a string")
        return cls(segments, xy, math.radians(yaw_deg), name=name,
                   road=RoadLayout(lane_width=lane_width),
                   obstacles=reader.obstacles(doc.get("obstacles")),
                   instructions=parse_route_instructions(doc.get("instructions"), source))

    @classmethod
    def _from_points_doc(cls, reader: "_RouteReader", doc: Mapping[str, Any]) -> "Route":
        lim = ROUTE_LIMITS
        doc = reader.mapping(doc, "the route", ("name", "points", "speed_limit", "lane_width",
                                                "obstacles"), required=("points", "speed_limit"))
        name = doc.get("name", reader.source)
        if not isinstance(name, str):
            raise ConfigError(f"{reader.source}: name: have {_have(name)}, need a string")
        points = reader.points(doc["points"])
        length = float(np.sum(np.hypot(*np.diff(points, axis=0).T)))
        if length > lim.max_length:
            raise ConfigError(f"{reader.source}: the points span {length:g} m, need at most "
                              f"{lim.max_length:g} m")
        return cls.from_points(
            points, reader.number(doc["speed_limit"], "speed_limit", 0.0, lim.max_speed_limit,
                                  lo_open=True), name=name,
            road=RoadLayout(lane_width=reader.number(doc.get("lane_width", RoadLayout.lane_width),
                                                     "lane_width", lim.min_lane_width,
                                                     lim.max_lane_width)),
            obstacles=reader.obstacles(doc.get("obstacles")), source=reader.source)

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
        route.instructions = ()
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
