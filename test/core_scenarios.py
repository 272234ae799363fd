"""Helpers of the core tests (no tests here): an analytic circle drive, its odometry
samples, raw test images, camera stamp grids and a Scenario that feeds a PlannerCore in
stamp order.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.image_decode import EncodedImage
from alpamayo_ros.core.odometry import OdometrySample

NS = 1_000_000_000
# Stamps far from zero, as with real clocks (1.7e18 ns), to catch float64 precision bugs.
EPOCH_NS = 1_700_000_000 * NS


class CircleMotion:
    """Base frame driving a circle at constant speed [m/s] and radius [m], counter-clockwise,
    starting (t = 0) at `start` in the odom frame."""

    def __init__(self, speed: float = 8.0, radius: float = 50.0,
                 start: Pose = Pose.from_xyz_rpy((120.0, -40.0, 3.0), (0.0, 0.0, 0.7))):
        self.speed, self.radius, self.start = speed, radius, start

    def base_pose(self, t: float) -> Pose:
        theta = self.speed * t / self.radius
        local = Pose(np.array([self.radius * np.sin(theta),
                               self.radius * (1.0 - np.cos(theta)), 0.0]),
                     Rotation.from_euler("z", theta).as_matrix())
        return self.start.compose(local)

    def local_pose(self, t: float, t0: float) -> Pose:
        """Base pose at t in the base frame at t0 (the analytic t0-frame pose)."""
        return self.base_pose(t0).inverse().compose(self.base_pose(t))


def odometry_samples(motion: CircleMotion, start_s: float, end_s: float, rate_hz: float,
                     base_in_child: Pose = Pose.identity()):
    """[(stamp_ns, xyz, quat_xyzw)] of the odometry child frame (T_child = T_base * offset^-1)."""
    count = int(round((end_s - start_s) * rate_hz)) + 1
    out = []
    for k in range(count):
        t = start_s + k / rate_hz
        child = motion.base_pose(t).compose(base_in_child.inverse())
        out.append((EPOCH_NS + int(round(t * NS)), child.position, child.quaternion_xyzw))
    return out


def rgb_image(height: int = 8, width: int = 12, value: int = 0) -> EncodedImage:
    """A raw rgb8 image whose pixels encode `value` (first byte) and their position."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[..., 0] = value % 256
    arr[..., 1] = np.arange(width, dtype=np.uint8)[None, :]
    arr[..., 2] = np.arange(height, dtype=np.uint8)[:, None]
    return EncodedImage("rgb8", height, width, width * 3, arr.tobytes())


def camera_stamps(rate_hz: float, phase_s: float, start_s: float, end_s: float) -> list:
    """Stamps [ns] of a camera at rate_hz with a phase offset, within [start_s, end_s]."""
    period = 1.0 / rate_hz
    k0 = int(np.ceil((start_s - phase_s) / period - 1e-9))
    stamps = []
    k = k0
    while phase_s + k * period <= end_s + 1e-9:
        stamps.append(EPOCH_NS + int(round((phase_s + k * period) * NS)))
        k += 1
    return stamps


class Scenario:
    """Timed camera frames and odometry of a CircleMotion, handed to a core in stamp order.

    camera_rates / camera_phases: per slot [Hz] / [s]; odometry at odometry_rate [Hz].
    `advance(core, now_s)` adds every message with stamp <= now_s not yet added.
    """

    def __init__(self, motion=None, camera_rates=(10.0,) * 4, camera_phases=(0.0, 0.01, 0.02, 0.03),
                 odometry_rate=50.0, start_s=0.0, end_s=4.0, image_size=(8, 12),
                 base_in_child: Pose = Pose.identity()):
        self.motion = motion or CircleMotion()
        events = []
        for slot, (rate, phase) in enumerate(zip(camera_rates, camera_phases)):
            for stamp in camera_stamps(rate, phase, start_s, end_s):
                events.append((stamp, 0, slot))
        for stamp, xyz, quat in odometry_samples(self.motion, start_s, end_s, odometry_rate,
                                                 base_in_child):
            events.append((stamp, 1, (xyz, quat)))
        events.sort(key=lambda e: (e[0], e[1]))
        self.events = events
        self.image_size = image_size
        self._next = 0

    def image(self, slot: int, stamp_ns: int) -> EncodedImage:
        return rgb_image(*self.image_size, value=(stamp_ns // 1_000_000 + 17 * slot))

    def advance(self, core, now_s: float) -> None:
        limit = EPOCH_NS + int(round(now_s * NS))
        while self._next < len(self.events) and self.events[self._next][0] <= limit:
            stamp, kind, payload = self.events[self._next]
            if kind == 0:
                core.add_image(payload, stamp, self.image(payload, stamp))
            else:
                core.add_odometry(odometry(stamp, payload[0], payload[1]))
            self._next += 1


def odometry(stamp_ns: int, xyz, quat_xyzw, frame_id: str = "odom") -> OdometrySample:
    """An odometry sample of base_link in `frame_id`."""
    return OdometrySample.from_pose(stamp_ns, xyz, quat_xyzw, frame_id, "base_link")


def now_ns(t_s: float) -> int:
    return EPOCH_NS + int(round(t_s * NS))
