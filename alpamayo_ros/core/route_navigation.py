"""Navigation instructions from a route (ROS-free): turns, phrasing, timing.

A route is a path in the odometry frame (the lane centre the vehicle is to follow, e.g. a
nav_msgs/Path or Autoware's planned Path); the ego pose comes from the odometry. Each
update says which instruction holds for the pose, in the official phrasing of Alpamayo
1.5 (NVlabs/alpamayo1.5, notebooks/nav_demo_samples.json): "Turn left in 11m",
"Turn right in 30m", maneuvers TURN_LEFT and TURN_RIGHT, the distance in whole metres
rounded to the nearest (11.2 -> 11, 3.8 -> 4, 29.8 -> 30; halves round up).

Turns. The route is resampled every RESAMPLE_M metres; its curvature, averaged over
CURVATURE_WINDOW_M (so a polyline's corners and a noisy path read as their curve), marks
the stations that bend more sharply than `max_turn_radius`. A run of such stations that
turns one way by at least `min_turn_angle_deg` in total (runs of one sign less than
MERGE_GAP_M apart count as one) is a turn; its maneuver station is where the route
starts to turn: the first station whose averaged curvature reaches half the turn's
median (an arc's start, to within a metre). Gentle bends and lane changes are no
turns.

Timing. The ego's station is its projection onto the route, searched near the previous
one first (a route that passes close to itself keeps the leg being driven), all of the
route after a jump. An instruction for the next turn ahead appears once the turn is at
most `announce_distance` ahead and expires when the ego reaches its maneuver station;
the phrased distance is the one left then. Ego more than `max_offset` from the route: no
instruction (OFF_ROUTE).

Scripted instructions (a route file's ``"instructions": [{"s": 120.0, "text": "Turn right
in 40m"}]``) replace the generated ones: the text of the last entry whose station the ego
has reached holds until the next entry's station (an empty text ends one early); before
the first entry, none.
"""
from __future__ import annotations

import enum
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from scipy.ndimage import uniform_filter1d

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.navigation import NAVIGATION_TOPIC, check_prompt_text
from alpamayo_ros.core.param_schema import BOOL, FLOAT, STRING, ParamSpec, docs_main

# Spacing the route is resampled at [m].
RESAMPLE_M = 0.5
# Curvature is averaged over this length [m] before turns are found.
CURVATURE_WINDOW_M = 2.5
# Bending runs of one sign closer than this [m] are one turn.
MERGE_GAP_M = 3.0
# The station search after the first update: this far behind / ahead of the last one [m].
SEARCH_BEHIND_M = 10.0
SEARCH_AHEAD_M = 40.0


class Maneuver(enum.Enum):
    """The maneuver names of the official navigation samples."""

    TURN_LEFT = "TURN_LEFT"
    TURN_RIGHT = "TURN_RIGHT"


_VERBS = {Maneuver.TURN_LEFT: "Turn left", Maneuver.TURN_RIGHT: "Turn right"}


class GuidanceStatus(enum.Enum):
    """What one update found."""

    INSTRUCTION = "instruction"   # an instruction holds (generated or scripted)
    NONE_AHEAD = "none_ahead"     # on the route, no turn within announce_distance
    NO_ROUTE = "no_route"         # no route yet
    OFF_ROUTE = "off_route"       # the ego is more than max_offset from the route


def rounded_metres(distance_m: float) -> int:
    """Distance in whole metres as the official samples give it: the nearest, halves up."""
    return int(math.floor(max(float(distance_m), 0.0) + 0.5))


def phrase(maneuver: Maneuver, distance_m: float) -> str:
    """The official phrasing: "Turn left in 11m" for (TURN_LEFT, 11.2)."""
    return f"{_VERBS[maneuver]} in {rounded_metres(distance_m)}m"


@dataclass(frozen=True)
class GuidanceSettings:
    """Turn detection and timing (module docstring); lengths in metres."""

    min_turn_angle_deg: float = 45.0
    max_turn_radius: float = 60.0
    announce_distance: float = 50.0
    max_offset: float = 10.0

    def __post_init__(self) -> None:
        for name in ("min_turn_angle_deg", "max_turn_radius", "announce_distance",
                     "max_offset"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"route navigation: {name} must be a finite number > 0, "
                                  f"have {value!r}")


@dataclass(frozen=True)
class Turn:
    """One turn of a route: maneuver, where it starts and ends [m], angle [rad, + = left]."""

    maneuver: Maneuver
    station: float
    end_station: float
    angle: float


@dataclass(frozen=True)
class ScriptedInstruction:
    """An instruction given by station along the route [m] (module docstring)."""

    s: float
    text: str


@dataclass(frozen=True)
class Guidance:
    """The result of one update: status, text ("" = no instruction), the ego's station and
    lateral distance from the route [m], and the turn it is about (generated ones)."""

    status: GuidanceStatus
    text: str = ""
    station: float = math.nan
    offset: float = math.nan
    turn: Optional[Turn] = None

    @property
    def distance(self) -> float:
        """Distance from the ego to the turn's maneuver station [m] (NaN without a turn)."""
        return self.turn.station - self.station if self.turn is not None else math.nan


def _as_points(points: Any) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or not np.all(np.isfinite(p[:, :2])):
        raise ValueError(f"route: need finite (N, 2) points, have shape {p.shape}")
    p = p[:, :2]
    if len(p):
        keep = np.concatenate([[True], np.hypot(*np.diff(p, axis=0).T) > 1e-6])
        p = p[keep]
    if len(p) < 2:
        raise ValueError("route: need at least 2 distinct points")
    return p


class RouteGeometry:
    """A route resampled every RESAMPLE_M: stations, points, heading, turns."""

    def __init__(self, points: Any, settings: GuidanceSettings = GuidanceSettings()) -> None:
        p = _as_points(points)
        cumulative = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(p, axis=0).T))])
        self.length = float(cumulative[-1])
        n = max(int(math.ceil(self.length / RESAMPLE_M)), 1)
        self.s = np.linspace(0.0, self.length, n + 1)
        self.xy = np.stack([np.interp(self.s, cumulative, p[:, 0]),
                            np.interp(self.s, cumulative, p[:, 1])], axis=1)
        d = np.diff(self.xy, axis=0)
        # Heading of each resampled piece (unwrapped), piece i from s[i] to s[i+1].
        self.heading = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
        self.turns = self._find_turns(settings)

    def _find_turns(self, settings: GuidanceSettings) -> tuple[Turn, ...]:
        if len(self.heading) < 2:
            return ()
        step = self.length / len(self.heading)
        change = np.diff(self.heading)   # at the joints s[1] .. s[n-1]
        window = max(int(round(CURVATURE_WINDOW_M / step)), 1)
        curvature = uniform_filter1d(change, window, mode="nearest") / step
        sign = np.where(np.abs(curvature) >= 1.0 / settings.max_turn_radius,
                        np.sign(curvature), 0.0)
        runs: list[list[int]] = []       # [first joint, last joint, sign]
        for i in np.flatnonzero(sign):
            if (runs and runs[-1][2] == sign[i]
                    and (i - runs[-1][1]) * step <= MERGE_GAP_M):
                runs[-1][1] = i
            else:
                runs.append([int(i), int(i), sign[i]])
        turns = []
        half = window // 2 + 1
        for first, last, _ in runs:
            lo, hi = max(first - half, 0), min(last + half, len(change) - 1)
            angle = float(np.sum(change[lo:hi + 1]))
            if abs(angle) < math.radians(settings.min_turn_angle_deg):
                continue
            # Where the averaged curvature reaches half the turn's typical (median) one: an
            # arc's start (the average of a curvature step is half the step there).
            level = 0.5 * float(np.median(np.abs(curvature[first:last + 1])))
            start = first
            while start > 0 and abs(curvature[start - 1]) >= level:
                start -= 1
            while abs(curvature[start]) < level:
                start += 1
            turns.append(Turn(Maneuver.TURN_LEFT if angle > 0 else Maneuver.TURN_RIGHT,
                              float(self.s[start + 1]), float(self.s[last + 1]), angle))
        return tuple(turns)

    def project(self, xy: Sequence[float], near: Optional[float] = None
                ) -> tuple[float, float]:
        """(station, distance) of the closest route point to xy, among the stations within
        [near - SEARCH_BEHIND_M, near + SEARCH_AHEAD_M] when `near` is given."""
        a, b = self.xy[:-1], self.xy[1:]
        if near is not None:
            lo = max(int(np.searchsorted(self.s, near - SEARCH_BEHIND_M)) - 1, 0)
            hi = min(int(np.searchsorted(self.s, near + SEARCH_AHEAD_M)) + 1, len(a))
            a, b, offset = a[lo:hi], b[lo:hi], lo
        else:
            offset = 0
        point = np.asarray(xy, dtype=np.float64)[:2]
        seg = b - a
        length2 = np.einsum("ij,ij->i", seg, seg)
        u = np.clip(np.einsum("ij,ij->i", point - a, seg) / np.maximum(length2, 1e-12), 0, 1)
        dist = np.hypot(*(a + seg * u[:, None] - point).T)
        i = int(np.argmin(dist))
        return float(self.s[offset + i] + u[i] * math.sqrt(length2[i])), float(dist[i])


def check_scripted(items: Sequence[tuple[float, str]], where: str = "instructions"
                   ) -> tuple[ScriptedInstruction, ...]:
    """Scripted instructions, checked: stations finite, >= 0 and non-decreasing, texts
    accepted by core.navigation.check_prompt_text; ConfigError naming the first problem."""
    out = []
    for i, (s, text) in enumerate(items):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) \
                or s < 0:
            raise ConfigError(f"{where}[{i}].s: have {s!r}, need a finite number >= 0")
        if out and s < out[-1].s:
            raise ConfigError(f"{where}[{i}].s: have {s!r} after {out[-1].s!r}, need "
                              "stations in increasing order")
        try:
            text = check_prompt_text(text, f"{where}[{i}].text")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        out.append(ScriptedInstruction(float(s), text))
    return tuple(out)


def parse_route_instructions(raw: Any, source: str) -> tuple[ScriptedInstruction, ...]:
    """The optional "instructions" list of a route file ([{"s": .., "text": ..}, ...]);
    ConfigError naming the file and the first problem."""
    if raw is None:
        return ()
    where = f"{source}: instructions"
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: have {type(raw).__name__}, need a list of "
                          "{\"s\": station, \"text\": instruction}")
    items = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != {"s", "text"}:
            raise ConfigError(f"{where}[{i}]: have {item!r}, need {{\"s\": station [m], "
                              "\"text\": instruction}")
        items.append((item["s"], item["text"]))
    return check_scripted(items, where)


class RouteGuide:
    """Instructions for successive ego positions along one route at a time (module
    docstring). Not thread-safe: the owner locks."""

    def __init__(self, settings: GuidanceSettings = GuidanceSettings(),
                 scripted: Sequence[ScriptedInstruction] = ()) -> None:
        self.settings = settings
        self.scripted = tuple(scripted)
        self.route: Optional[RouteGeometry] = None
        self._station: Optional[float] = None

    def set_route(self, points: Any) -> RouteGeometry:
        """A new route (points (N, 2) in the odometry frame); ValueError when unusable."""
        self.route = RouteGeometry(points, self.settings)
        self._station = None
        return self.route

    def update(self, x: float, y: float) -> Guidance:
        route = self.route
        if route is None:
            return Guidance(GuidanceStatus.NO_ROUTE)
        station, offset = (route.project((x, y), self._station)
                           if self._station is not None else (math.nan, math.inf))
        if offset > self.settings.max_offset:
            station, offset = route.project((x, y))
        if offset > self.settings.max_offset:
            self._station = None
            return Guidance(GuidanceStatus.OFF_ROUTE, station=station, offset=offset)
        self._station = station
        if self.scripted:
            reached = [item for item in self.scripted if item.s <= station]
            if reached and reached[-1].text:
                return Guidance(GuidanceStatus.INSTRUCTION, reached[-1].text, station, offset)
            return Guidance(GuidanceStatus.NONE_AHEAD, station=station, offset=offset)
        for turn in route.turns:
            distance = turn.station - station
            if 0.0 < distance <= self.settings.announce_distance:
                return Guidance(GuidanceStatus.INSTRUCTION, phrase(turn.maneuver, distance),
                                station, offset, turn)
            if distance > 0.0:
                break
        return Guidance(GuidanceStatus.NONE_AHEAD, station=station, offset=offset)


# ------------------------------------------------------------------ the node's parameters
NODE_NAME = "alpamayo_route_navigation"
ROUTE_TYPES = ("nav_msgs/msg/Path", "autoware_planning_msgs/msg/Path")
_DEFAULTS = GuidanceSettings()

ROUTE_NAVIGATION_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("route_topic", STRING, "alpamayo/route",
              "The route: a path in the odometry frame (the lane centre to follow)."),
    ParamSpec("route_type", STRING, ROUTE_TYPES[0],
              "Its message type: nav_msgs/msg/Path or Autoware's "
              "autoware_planning_msgs/msg/Path (e.g. the behaviour planner's path).",
              choices=ROUTE_TYPES),
    ParamSpec("route_transient_local", BOOL, True,
              "Subscribe to the route with transient-local durability (a latched route, as "
              "carla_waypoint_publisher's); false for a volatile publisher (Autoware's "
              "planners), which a transient-local subscription does not match."),
    ParamSpec("odometry_topic", STRING, "odometry",
              "nav_msgs/Odometry of the vehicle in the route's frame."),
    ParamSpec("navigation_topic", STRING, NAVIGATION_TOPIC,
              "alpamayo_ros/NavigationInstruction output (the planner's input)."),
    ParamSpec("rate_hz", FLOAT, 10.0,
              "Instructions per second of odometry time (one per odometry message at "
              "most).", minimum=0.1, maximum=100.0),
    ParamSpec("valid_for", FLOAT, 1.0,
              "valid_for of each instruction [s]: longer than 1/rate_hz, so they expire "
              "soon after updates stop.", minimum=0.01, maximum=60.0),
    ParamSpec("announce_distance", FLOAT, _DEFAULTS.announce_distance,
              "A turn is announced once it is this close ahead [m].", minimum=1.0,
              maximum=2000.0),
    ParamSpec("min_turn_angle_deg", FLOAT, _DEFAULTS.min_turn_angle_deg,
              "Smallest heading change of a turn [deg].", minimum=1.0, maximum=360.0),
    ParamSpec("max_turn_radius", FLOAT, _DEFAULTS.max_turn_radius,
              "Parts of the route bending more gently than this radius are no turn [m].",
              minimum=1.0, maximum=10000.0),
    ParamSpec("max_offset", FLOAT, _DEFAULTS.max_offset,
              "Farther than this from the route the ego is off it: no instruction [m].",
              minimum=0.1, maximum=1000.0),
    ParamSpec("instructions_file", STRING, "",
              "JSON file whose \"instructions\" ([{\"s\": station, \"text\": ...}], "
              "stations along the route from its first point) replace the generated "
              "ones, e.g. a route file of the CI simulator; \"\" = generate."),
    ParamSpec("source", STRING, "route", "The instructions' source field."),
)


def guidance_settings(values: dict) -> GuidanceSettings:
    """GuidanceSettings of validated node parameters."""
    return GuidanceSettings(**{name: values[name] for name in
                               ("min_turn_angle_deg", "max_turn_radius",
                                "announce_distance", "max_offset")})


def load_instructions_file(path: str) -> tuple[ScriptedInstruction, ...]:
    """The "instructions" of a JSON file (a route file); () for "" or a file without
    them; ConfigError naming the file and the problem."""
    if not path:
        return ()
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"instructions_file: cannot read {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: have {type(doc).__name__}, need a JSON object")
    return parse_route_instructions(doc.get("instructions"), path)


DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "navigation.md"
DOCS_GENERATOR = "python -m alpamayo_ros.core.route_navigation --write-docs"


def main(argv: Optional[Sequence[str]] = None) -> int:
    return docs_main(argv, ROUTE_NAVIGATION_PARAMETERS, DOCS_PATH, DOCS_GENERATOR,
                     "The route navigation node's parameters.")

if __name__ == "__main__":
    sys.exit(main())
