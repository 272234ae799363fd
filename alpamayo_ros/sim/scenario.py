"""Scripted driving scenarios: exact planar motion plus cheap rendered camera frames.

ROS-free and torch-free (numpy only). Used by the synthetic sensor publisher node, the
scenario bag generator (tools/make_bag.py), the replay tests and the demo.

Conventions
-----------
* Scenario time ``t`` is float seconds since the scenario start; the header stamp of a
  sample at ``t`` is ``Scenario.stamp_ns(t) = start_stamp_ns + round(t * 1e9)``.
* Poses are of the vehicle base frame (rear axle, REP-103: x forward, y left, z up) in
  the world/odom frame (``Scenario.odom_frame``), metres and radians. Quaternions are
  scipy order (x, y, z, w).
* Velocities are given in the base frame (the nav_msgs/Odometry twist convention):
  linear (v, 0, 0) m/s and angular (0, 0, yaw rate) rad/s.

Motion model
------------
The ground is flat and the vehicle follows a unicycle: each ``MotionSegment`` holds a
constant longitudinal acceleration ``a`` and a constant path curvature ``kappa``. With
``s(t) = v0 t + a t^2 / 2`` the heading is ``theta0 + kappa s`` and, because
``d(sin theta)/dt = kappa v cos theta``, the position has the closed form

    p(t) = p0 + s * sinc(kappa s / 2) * (cos, sin)(theta0 + kappa s / 2)

which is exact for any ``a`` and stable for ``kappa -> 0`` (no numerical integration).
After the last segment the motion continues at constant speed on the last curvature.

Rendering
---------
Pinhole cameras (the real 120 deg cameras are f-theta fisheye; intrinsics are not model
inputs, so a pinhole is enough for a synthetic scene) at the Alpamayo rig placements.
The scene is a sky gradient, a world-fixed ground grid (3.2 m tiles and painted lines every
12.8 m, so the image moves with the pose) and a few coloured boxes placed beside the
scripted path. Everything is deterministic in (camera, pose).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.image_decode import FRAME_ENCODINGS, encode_frame  # noqa: F401 (API)
from alpamayo_ros.core.types import DEFAULT_CAMERA_INDICES, NS_PER_S
from alpamayo_ros.sim.vehicle_model import VehicleState

# --------------------------------------------------------------------------------------
# Camera rig
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraPlacement:
    """Mounting of one camera in the rig (rear-axle base) frame.

    xyz: metres; yaw: rad, + = left (CCW seen from above); fov_deg: horizontal field of view.
    """

    name: str
    xyz: tuple[float, float, float]
    yaw: float
    fov_deg: float


# Positions and FOVs from the Alpamayo rig description (docs: peers-and-conventions.md).
# The yaw of the cross cameras is not published; +/-60 deg is an assumption that makes
# their 120 deg views overlap the front camera by about 60 deg.
RIG_CAMERAS: dict[int, CameraPlacement] = {
    0: CameraPlacement("camera_cross_left_120fov", (2.473, 0.938, 0.918),
                       math.radians(60.0), 120.0),
    1: CameraPlacement("camera_front_wide_120fov", (1.697, -0.010, 1.436), 0.0, 120.0),
    2: CameraPlacement("camera_cross_right_120fov", (2.478, -0.955, 0.929),
                       math.radians(-60.0), 120.0),
    6: CameraPlacement("camera_front_tele_30fov", (1.667, 0.074, 1.444), 0.0, 30.0),
}

# Encodings a synthetic camera can publish (core.image_decode.encode_frame).
SUPPORTED_ENCODINGS = FRAME_ENCODINGS


@dataclass(frozen=True)
class CameraSpec:
    """One synthetic camera stream.

    index: Alpamayo camera index (0, 1, 2, 6; see RIG_CAMERAS).
    rate_hz: frame rate [Hz]; phase_s: stamp of the first frame after scenario start [s].
    width, height: image size [px]. encoding: "rgb8" / "bgr8" / "bgra8" (raw sensor_msgs/Image) or
    "jpeg" (sensor_msgs/CompressedImage); rendering always returns RGB, the bag writer
    converts.
    """

    index: int
    rate_hz: float = 10.0
    phase_s: float = 0.0
    width: int = 576
    height: int = 320
    encoding: str = "rgb8"

    def __post_init__(self) -> None:
        if self.index not in RIG_CAMERAS:
            raise ConfigError(f"camera index {self.index} has no rig placement; "
                              f"need one of {sorted(RIG_CAMERAS)}")
        if not self.rate_hz > 0:
            raise ConfigError(f"camera {self.index}: rate_hz must be > 0, have {self.rate_hz}")
        if self.width < 8 or self.height < 8:
            raise ConfigError(f"camera {self.index}: image must be at least 8x8 px, "
                              f"have {self.width}x{self.height}")
        if self.encoding not in SUPPORTED_ENCODINGS:
            raise ConfigError(f"camera {self.index}: encoding {self.encoding!r} unsupported; "
                              f"need one of {SUPPORTED_ENCODINGS}")
        if self.phase_s < 0:
            raise ConfigError(f"camera {self.index}: phase_s must be >= 0, have {self.phase_s}")


# --------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotionSegment:
    """duration_s [s] of constant acceleration [m/s^2] and curvature [1/m, + = left]."""

    duration_s: float
    acceleration: float = 0.0
    curvature: float = 0.0

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ConfigError(f"motion segment duration must be > 0 s, have {self.duration_s}")


@dataclass(frozen=True)
class OdometrySamples:
    """Poses and twists at times t (N,) [s since scenario start]: base pose in the odom
    frame, velocities in the base frame (the nav_msgs/Odometry twist convention)."""

    t: np.ndarray                 # (N,) s
    stamp_ns: np.ndarray          # (N,) int64 header stamps
    xyz: np.ndarray               # (N, 3)
    quat_xyzw: np.ndarray         # (N, 4)
    yaw: np.ndarray               # (N,)
    linear_velocity: np.ndarray   # (N, 3) base frame
    angular_velocity: np.ndarray  # (N, 3) base frame


@dataclass(frozen=True)
class Box:
    """A box on the ground: centre xy [m], size [m] (x, y along its own axes), RGB, and
    its heading in the world [rad] (0: axis-aligned)."""

    center_xy: tuple[float, float]
    size_xyz: tuple[float, float, float]
    color: tuple[int, int, int]
    yaw: float = 0.0


@dataclass
class Scenario:
    """A scripted drive with its camera streams.

    duration_s: length of the recording [s]. segments: motion script, applied in order.
    initial_speed: speed at t = 0 [m/s]. start_xyz / start_yaw: base pose at t = 0 in the
    odom frame [m, rad]. start_stamp_ns: header stamp of t = 0 [ns].
    boxes: scene boxes; None places a few automatically beside the path.
    """

    name: str
    duration_s: float
    segments: Sequence[MotionSegment]
    initial_speed: float = 0.0
    start_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    start_yaw: float = 0.0
    cameras: Sequence[CameraSpec] = field(default_factory=lambda: default_cameras())
    start_stamp_ns: int = 1_700_000_000_000_000_000
    odom_frame: str = "odom"
    base_frame: str = "base_link"
    boxes: Optional[Sequence[Box]] = None

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ConfigError(f"scenario {self.name!r}: duration must be > 0 s, "
                              f"have {self.duration_s}")
        if not self.segments:
            raise ConfigError(f"scenario {self.name!r}: needs at least one motion segment, have 0")
        if self.initial_speed < 0:
            raise ConfigError(f"scenario {self.name!r}: initial speed must be >= 0 m/s, "
                              f"have {self.initial_speed}")
        indices = [c.index for c in self.cameras]
        if len(set(indices)) != len(indices):
            raise ConfigError(f"scenario {self.name!r}: duplicate camera indices {indices}")
        self.segments = tuple(self.segments)
        self.cameras = tuple(self.cameras)
        self._build_knots()
        if self.boxes is None:
            self.boxes = tuple(self._auto_boxes())
        else:
            self.boxes = tuple(self.boxes)

    # ---- motion ----------------------------------------------------------------------

    def _build_knots(self) -> None:
        """State at the start of each segment (float64), plus a trailing cruise segment."""
        t, x, y = 0.0, self.start_xyz[0], self.start_xyz[1]
        th, v = self.start_yaw, self.initial_speed
        starts, accel, curv = [], [], []
        for k, seg in enumerate(self.segments):
            starts.append((t, x, y, th, v))
            accel.append(seg.acceleration)
            curv.append(seg.curvature)
            x, y, th, v = _advance(x, y, th, v, seg.acceleration, seg.curvature, seg.duration_s)
            if v < -1e-9:
                raise ConfigError(f"scenario {self.name!r}: segment {k} ends at negative speed "
                                  f"{v:.3f} m/s; need >= 0 (shorten it or reduce deceleration)")
            v = max(v, 0.0)
            t += seg.duration_s
        # After the script: constant speed on the last curvature.
        starts.append((t, x, y, th, v))
        accel.append(0.0)
        curv.append(self.segments[-1].curvature)
        knots = np.asarray(starts, dtype=np.float64)
        self._knot_t = knots[:, 0]
        self._knot_state = knots[:, 1:]
        self._accel = np.asarray(accel, dtype=np.float64)
        self._curv = np.asarray(curv, dtype=np.float64)

    def states(self, t: np.ndarray) -> tuple[np.ndarray, ...]:
        """Vectorised motion: returns (x, y, yaw, speed, acceleration, curvature), each (N,)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if np.any(t < 0) or not np.all(np.isfinite(t)):
            raise ConfigError(f"scenario {self.name!r}: times must be finite and >= 0 s, "
                              f"have min {np.min(t)}")
        k = np.searchsorted(self._knot_t, t, side="right") - 1
        tau = t - self._knot_t[k]
        x0, y0, th0, v0 = self._knot_state[k].T
        x, y, th, v = _advance(x0, y0, th0, v0, self._accel[k], self._curv[k], tau)
        return x, y, th, np.maximum(v, 0.0), self._accel[k], self._curv[k]

    def pose_at(self, t: float) -> VehicleState:
        """The vehicle state (base pose in the odom frame, speed, acceleration, curvature)
        at scenario time t [s]."""
        x, y, th, v, a, kappa = (float(a[0]) for a in self.states(np.asarray([t])))
        return VehicleState(x=x, y=y, yaw=th, speed=v, acceleration=a, curvature=kappa,
                            z=float(self.start_xyz[2]))

    def stamp_ns(self, t: np.ndarray | float) -> np.ndarray:
        """Header stamps [int64 ns] of scenario times t [s]."""
        offset = np.round(np.asarray(t, dtype=np.float64) * NS_PER_S).astype(np.int64)
        return self.start_stamp_ns + offset

    def odometry_samples(self, t_start: float = 0.0, t_end: Optional[float] = None,
                         rate_hz: float = 50.0) -> OdometrySamples:
        """Odometry at ``t_start + k / rate_hz`` for all k with t <= t_end (default duration)."""
        t = _grid(t_start, self.duration_s if t_end is None else t_end, rate_hz, 0.0)
        x, y, th, v, _, kappa = self.states(t)
        n = t.shape[0]
        zeros = np.zeros(n)
        return OdometrySamples(
            t=t, stamp_ns=self.stamp_ns(t),
            xyz=np.stack([x, y, np.full(n, self.start_xyz[2])], axis=1),
            quat_xyzw=_yaw_to_quat(th), yaw=th,
            linear_velocity=np.stack([v, zeros, zeros], axis=1),
            angular_velocity=np.stack([zeros, zeros, kappa * v], axis=1),
        )

    # ---- cameras ---------------------------------------------------------------------

    def camera(self, camera_index: int) -> CameraSpec:
        for spec in self.cameras:
            if spec.index == camera_index:
                return spec
        raise ConfigError(f"scenario {self.name!r} has no camera {camera_index}; "
                          f"have {[c.index for c in self.cameras]}")

    def camera_stamps(self, camera_index: int, t_start: float = 0.0,
                      t_end: Optional[float] = None) -> np.ndarray:
        """Frame times [s] of one camera in [t_start, t_end]: phase_s + k / rate_hz."""
        spec = self.camera(camera_index)
        end = self.duration_s if t_end is None else t_end
        return _grid(t_start, end, spec.rate_hz, spec.phase_s)

    def render_camera(self, camera_index: int, t: float) -> np.ndarray:
        """RGB uint8 (height, width, 3) image of one camera at scenario time t [s]."""
        spec = self.camera(camera_index)
        x, y, th, *_ = self.states(np.asarray([t]))
        return render_view(spec, float(x[0]), float(y[0]), float(th[0]), self.boxes)

    def _auto_boxes(self) -> list[Box]:
        """Boxes every ~15 m of path, alternating 4.5-7.5 m left / right of the path."""
        t = np.linspace(0.0, self.duration_s + 3.0, 400)
        x, y, th, *_ = self.states(t)
        seg = np.hypot(np.diff(x), np.diff(y))
        dist = np.concatenate([[0.0], np.cumsum(seg)])
        boxes = []
        palette = ((200, 40, 40), (40, 90, 200), (230, 180, 30), (60, 160, 70), (150, 60, 170))
        for k, d in enumerate(np.arange(12.0, dist[-1], 15.0)):
            i = int(np.searchsorted(dist, d))
            side = 1.0 if k % 2 == 0 else -1.0
            lateral = side * (4.5 + 1.5 * (k % 3))
            cx = x[i] - math.sin(th[i]) * lateral
            cy = y[i] + math.cos(th[i]) * lateral
            boxes.append(Box((float(cx), float(cy)), (2.0, 2.0, 1.5 + 0.5 * (k % 3)),
                             palette[k % len(palette)]))
        return boxes


def _advance(x0, y0, th0, v0, a, kappa, tau):
    """Closed-form unicycle step (see module docstring); works on floats or arrays."""
    s = v0 * tau + 0.5 * a * tau * tau
    half = 0.5 * kappa * s
    chord = s * np.sinc(half / np.pi)  # np.sinc(x) = sin(pi x) / (pi x)
    mid = th0 + half
    return x0 + chord * np.cos(mid), y0 + chord * np.sin(mid), th0 + kappa * s, v0 + a * tau


def _yaw_to_quat(yaw: np.ndarray) -> np.ndarray:
    # A rotation about z only; scipy's Rotation.from_euler gives the same numbers but
    # this keeps the hot path (50 Hz odometry for long scenarios) allocation-light.
    half = 0.5 * np.asarray(yaw, dtype=np.float64)
    zeros = np.zeros_like(half)
    return np.stack([zeros, zeros, np.sin(half), np.cos(half)], axis=-1)


def _grid(t_start: float, t_end: float, rate_hz: float, phase_s: float) -> np.ndarray:
    """Times phase_s + k / rate_hz (k integer >= 0) inside [t_start, t_end]."""
    if not rate_hz > 0:
        raise ConfigError(f"rate must be > 0 Hz, have {rate_hz}")
    k0 = max(0, math.ceil((t_start - phase_s) * rate_hz - 1e-9))
    k1 = math.floor((t_end - phase_s) * rate_hz + 1e-9)
    if k1 < k0:
        return np.zeros(0, dtype=np.float64)
    return phase_s + np.arange(k0, k1 + 1, dtype=np.float64) / rate_hz


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------

_SKY_TOP = np.array([70, 120, 200], dtype=np.float32)
_SKY_HORIZON = np.array([190, 210, 235], dtype=np.float32)
HAZE = np.array([175, 180, 185], dtype=np.float32)
# Ground colours by kind: 0 / 1 = checker tiles, 2 = painted line.
_GROUND_COLORS = np.array([[95, 95, 100], [120, 118, 112], [235, 235, 225]], dtype=np.float32)
_MAX_GROUND_RANGE_M = 120.0
FOG_LEVELS = 16
# Ground texture on an integer grid of 5 cm cells: tiles are 64 cells (3.2 m), lines
# 3 cells (15 cm) wide every 256 cells (12.8 m). Powers of two keep it to shifts and
# masks; the offset (a multiple of 256) keeps cell numbers positive so truncation floors.
CELL_PER_M = 20.0
_CELL_OFFSET = float(1 << 22)


@dataclass(frozen=True)
class CameraGeometry:
    focal_px: float
    first_ground_row: int     # rows >= this see the ground (pinhole with zero pitch)
    sky: np.ndarray           # (first_ground_row, W, 3) uint8 sky gradient
    ground_x: np.ndarray      # (H - first_ground_row, W) float32 ground x, base frame [cells]
    ground_y: np.ndarray      # (H - first_ground_row, W) float32 ground y, base frame [cells]
    fog_row: np.ndarray       # (H - first_ground_row, W) int32 3 * fog level (_ground_lut row)


def fog_lut(colors: np.ndarray) -> np.ndarray:
    """(FOG_LEVELS * K, 3) uint8: each of K ground colours blended into the haze per fog
    level; row 3 * level + kind when K = 3 (CameraGeometry.fog_row assumes 3 kinds)."""
    w = (np.arange(FOG_LEVELS, dtype=np.float32) / (FOG_LEVELS - 1))[:, None, None]
    lut = np.asarray(colors, np.float32)[None] * (1.0 - w) + HAZE[None, None] * w
    return lut.reshape(-1, 3).round().astype(np.uint8)


@lru_cache(maxsize=1)
def _ground_lut() -> np.ndarray:
    """(FOG_LEVELS * 3, 3) uint8: ground colour of each (fog level, kind)."""
    return fog_lut(_GROUND_COLORS)


@lru_cache(maxsize=32)
def camera_geometry(index: int, width: int, height: int) -> CameraGeometry:
    """Per-pixel ground intersections in the base frame (fixed per camera and size)."""
    place = RIG_CAMERAS[index]
    focal = (width / 2.0) / math.tan(math.radians(place.fov_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    row0 = int(math.floor(cy)) + 1
    u = np.arange(width, dtype=np.float64)
    v = np.arange(row0, height, dtype=np.float64)
    # Camera ray (x forward, y left, z up) per pixel: (1, -(u - cx)/f, -(v - cy)/f);
    # every row below the centre row points down and meets the ground at `dist`.
    ray_y = (-(u - cx) / focal)[None, :]
    ray_z = (-(v - cy) / focal)[:, None]
    dist = place.xyz[2] / -ray_z
    fwd = np.broadcast_to(dist, (v.size, width))
    left = dist * ray_y
    cyaw, syaw = math.cos(place.yaw), math.sin(place.yaw)
    gx = place.xyz[0] + cyaw * fwd - syaw * left
    gy = place.xyz[1] + syaw * fwd + cyaw * left
    rng = np.hypot(fwd, left)
    fog = np.clip((rng - 30.0) / (_MAX_GROUND_RANGE_M - 30.0), 0.0, 1.0) ** 1.5
    fog_level = np.round(fog * (FOG_LEVELS - 1)).astype(np.int32)
    v_sky = np.arange(row0, dtype=np.float64)
    w_sky = np.clip((cy - v_sky) / max(cy, 1.0), 0.0, 1.0)[:, None]
    sky_rows = _SKY_HORIZON * (1.0 - w_sky) + _SKY_TOP * w_sky
    sky = np.ascontiguousarray(
        np.broadcast_to(sky_rows[:, None, :], (row0, width, 3)).astype(np.uint8))
    return CameraGeometry(
        focal_px=focal, first_ground_row=row0, sky=sky,
        ground_x=(gx * CELL_PER_M).astype(np.float32),
        ground_y=(gy * CELL_PER_M).astype(np.float32),
        fog_row=3 * fog_level)


def render_view(spec: CameraSpec, x: float, y: float, yaw: float,
                boxes: Sequence[Box] = ()) -> np.ndarray:
    """Render camera ``spec`` for the base pose (x, y [m], yaw [rad]) in the odom frame."""
    geo = camera_geometry(spec.index, spec.width, spec.height)
    image = np.empty((spec.height, spec.width, 3), dtype=np.uint8)
    image[:geo.first_ground_row] = geo.sky
    c, s = np.float32(math.cos(yaw)), np.float32(math.sin(yaw))
    ox = np.float32(x * CELL_PER_M + _CELL_OFFSET)
    oy = np.float32(y * CELL_PER_M + _CELL_OFFSET)
    # World ground cell of each pixel (float32 keeps 5 cm cells exact within ~40 km).
    qx = (c * geo.ground_x - s * geo.ground_y + ox).astype(np.int32)
    qy = (s * geo.ground_x + c * geo.ground_y + oy).astype(np.int32)
    kind = ((qx >> 6) + (qy >> 6)) & 1
    kind[((qx & 255) < 3) | ((qy & 255) < 3)] = 2
    kind += geo.fog_row
    # Gather colours straight into the (contiguous) ground rows of the image.
    np.take(_ground_lut(), kind, axis=0, out=image[geo.first_ground_row:], mode="clip")
    if boxes:
        draw_boxes(image, spec.index, geo.focal_px, x, y, yaw, boxes)
    return image


def draw_boxes(image: np.ndarray, camera_index: int, focal: float, x: float, y: float,
               yaw: float, boxes: Sequence[Box]) -> None:
    """Paint each box into the image of rig camera `camera_index` (base pose x, y, yaw) as
    the bounding rectangle of its projected corners, far to near."""
    place = RIG_CAMERAS[camera_index]
    height, width = image.shape[:2]
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cam_yaw = yaw + place.yaw
    c, s = math.cos(yaw), math.sin(yaw)
    cam_x = x + c * place.xyz[0] - s * place.xyz[1]
    cam_y = y + s * place.xyz[0] + c * place.xyz[1]
    cc, sc = math.cos(cam_yaw), math.sin(cam_yaw)
    drawn = []
    for box in boxes:
        hx, hy, hz = box.size_xyz[0] / 2, box.size_xyz[1] / 2, box.size_xyz[2]
        bc, bs = math.cos(box.yaw), math.sin(box.yaw)
        corners = np.array([[box.center_xy[0] + bc * dx - bs * dy,
                             box.center_xy[1] + bs * dx + bc * dy, z]
                            for dx in (-hx, hx) for dy in (-hy, hy) for z in (0.0, hz)])
        rel_x, rel_y = corners[:, 0] - cam_x, corners[:, 1] - cam_y
        fwd = cc * rel_x + sc * rel_y
        left = -sc * rel_x + cc * rel_y
        up = corners[:, 2] - place.xyz[2]
        if np.any(fwd < 0.5) or np.min(fwd) > _MAX_GROUND_RANGE_M:
            continue  # partly behind the camera or beyond the haze: skip (synthetic scene)
        u = cx - focal * left / fwd
        v = cy - focal * up / fwd
        u0, u1 = int(max(0, math.floor(u.min()))), int(min(width, math.ceil(u.max())))
        v0, v1 = int(max(0, math.floor(v.min()))), int(min(height, math.ceil(v.max())))
        if u0 < u1 and v0 < v1:
            drawn.append((float(np.min(fwd)), (u0, u1, v0, v1), box.color))
    for _, (u0, u1, v0, v1), color in sorted(drawn, key=lambda d: -d[0]):
        image[v0:v1, u0:u1] = color
        image[v0:v1, u0:min(u0 + 1, u1)] = (30, 30, 30)  # dark edge so boxes stay readable
        image[v0:v1, max(u1 - 1, u0):u1] = (30, 30, 30)


# --------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------


def default_cameras(rate_hz: float = 10.0, width: int = 576, height: int = 320,
                    encoding: str = "rgb8", phases_s: Sequence[float] = (0.0, 0.0, 0.0, 0.0)
                    ) -> tuple[CameraSpec, ...]:
    """The four Alpamayo-R1 cameras (0, 1, 2, 6) with one rate, size and encoding."""
    return tuple(CameraSpec(index=i, rate_hz=rate_hz, phase_s=p, width=width, height=height,
                            encoding=encoding)
                 for i, p in zip(DEFAULT_CAMERA_INDICES, phases_s))


def curved_drive(duration_s: float = 20.0, **kwargs) -> Scenario:
    """Start at 8 m/s, curve left, speed up to 12 m/s, curve right, slow down a bit."""
    segments = (
        MotionSegment(3.0),                                  # straight, 8 m/s
        MotionSegment(4.0, curvature=1.0 / 60.0),            # left curve, R = 60 m
        MotionSegment(2.0, acceleration=2.0),                # speed up to 12 m/s
        MotionSegment(4.0, curvature=-1.0 / 80.0),           # right curve, R = 80 m
        MotionSegment(3.0, acceleration=-1.0),               # slow to 9 m/s
        MotionSegment(4.0, curvature=1.0 / 100.0),
    )
    return Scenario("curved_drive", duration_s, segments, initial_speed=8.0, **kwargs)


def circle_8mps(duration_s: float = 20.0, radius_m: float = 40.0, **kwargs) -> Scenario:
    """Constant 8 m/s on a left circle of radius_m [m] (yaw rate 8 / radius rad/s)."""
    return Scenario("circle_8mps", duration_s,
                    (MotionSegment(duration_s, curvature=1.0 / radius_m),),
                    initial_speed=8.0, **kwargs)


def standing_start(duration_s: float = 12.0, wait_s: float = 2.0, acceleration: float = 2.0,
                   accel_s: float = 5.0, **kwargs) -> Scenario:
    """Stand still wait_s [s], accelerate straight at acceleration [m/s^2], then cruise."""
    segments = (MotionSegment(wait_s), MotionSegment(accel_s, acceleration=acceleration),
                MotionSegment(max(duration_s - wait_s - accel_s, 0.1)))
    return Scenario("standing_start", duration_s, segments, initial_speed=0.0, **kwargs)


def straight_constant(duration_s: float = 12.0, speed: float = 10.0, **kwargs) -> Scenario:
    """Straight line at a constant speed [m/s] (ground truth for constant-velocity models)."""
    return Scenario("straight_constant", duration_s, (MotionSegment(duration_s),),
                    initial_speed=speed, **kwargs)


PRESETS = {
    "curved_drive": curved_drive,
    "circle_8mps": circle_8mps,
    "standing_start": standing_start,
    "straight_constant": straight_constant,
}


def make_preset(name: str, **kwargs) -> Scenario:
    """Build a named preset (see PRESETS); kwargs go to the preset function."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown scenario preset {name!r}; have {sorted(PRESETS)}") from None
    return factory(**kwargs)
