"""Publishes a Scenario's cameras, odometry and (optionally) /clock on an rclpy node.

`ScenarioPublisher.advance_to(t)` publishes every sample whose scenario time is <= t, with
header stamps = scenario.stamp_ns(sample time), so the receiver can compare against the
analytic motion. Used by the synthetic_sensors node (timer-driven; the demo runs that
node) and by the tests (stepped by hand, for deterministic stamps).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CompressedImage, Image

from alpamayo_ros.ros.convert import ns_to_time
from alpamayo_ros.ros.qos import CLOCK_QOS, SENSOR_QOS
from alpamayo_ros.core.config import DEFAULT_ODOMETRY_TOPIC
from alpamayo_ros.sim import scenario as sc


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    return sc.encode_frame(rgb, "jpeg", quality)


def rgb_to_image(rgb: np.ndarray, encoding: str) -> Image:
    """RGB uint8 (H, W, 3) -> sensor_msgs/Image in rgb8, bgr8 or bgra8 (alpha 255)."""
    if encoding not in ("rgb8", "bgr8", "bgra8"):
        raise ValueError(f"raw encoding {encoding!r} not supported here; need rgb8, bgr8, bgra8")
    pixels = sc.encode_frame(rgb, encoding)
    h, w, channels = pixels.shape
    # bytes, not the ndarray: rclpy copies an ndarray element by element (~1000x slower).
    return Image(height=h, width=w, encoding=encoding, is_bigendian=0,
                 step=w * channels, data=pixels.tobytes())


class _Stream:
    """Sample times [s] of one stream and the index of the next one to publish."""

    def __init__(self, times: np.ndarray) -> None:
        self.times = np.asarray(times, dtype=np.float64)
        self.next = 0

    def due(self, scenario_t: float) -> list[float]:
        end = int(np.searchsorted(self.times, scenario_t + 1e-12, side="right"))
        out = self.times[self.next:end].tolist()
        self.next = max(self.next, end)
        return out


class ScenarioPublisher:
    """Cameras (scenario.cameras order), odometry and /clock publishers of one scenario.

    camera_topics / encodings: one per scenario camera (encodings: rgb8, bgr8, bgra8 raw
    Images or jpeg CompressedImages). odometry_rate [Hz]. publish_clock: advance_to also
    publishes /clock = scenario.stamp_ns(t).
    """

    def __init__(self, node: Node, scenario: sc.Scenario, camera_topics: Sequence[str],
                 encodings: Sequence[str], odometry_topic: str = DEFAULT_ODOMETRY_TOPIC,
                 odometry_rate: float = 50.0, publish_clock: bool = False,
                 jpeg_quality: int = 90, newest_frame_only: bool = False) -> None:
        if len(camera_topics) != len(scenario.cameras) or len(encodings) != len(scenario.cameras):
            raise ValueError(f"need one topic and encoding per camera ({len(scenario.cameras)}), "
                             f"have {len(camera_topics)} topics, {len(encodings)} encodings")
        self.node = node
        self.scenario = scenario
        self.encodings = list(encodings)
        self.jpeg_quality = jpeg_quality
        self.newest_frame_only = newest_frame_only
        self.camera_publishers = [
            node.create_publisher(CompressedImage if enc == "jpeg" else Image, topic, SENSOR_QOS)
            for topic, enc in zip(camera_topics, encodings)]
        self.odometry_publisher = node.create_publisher(Odometry, odometry_topic, SENSOR_QOS)
        self.clock_publisher = (node.create_publisher(ClockMsg, "/clock", CLOCK_QOS)
                                if publish_clock else None)
        self._cameras = [_Stream(scenario.camera_stamps(spec.index)) for spec in scenario.cameras]
        self._odometry = _Stream(scenario.odometry_samples(rate_hz=odometry_rate).t)
        self.time = 0.0
        # Per camera: called with (slot, t, msg) before publishing; may return a replacement
        # message or None to drop the frame (tests inject bad inputs this way).
        self.frame_filter = None
        # The same for odometry: called with (t, msg).
        self.odometry_filter = None

    def rewind(self) -> None:
        """Start publishing from scenario time 0 again (after changing
        scenario.start_stamp_ns this replays the drive on another timeline, like a bag loop)."""
        for stream in self._cameras + [self._odometry]:
            stream.next = 0
        self.time = 0.0

    def publish_clock(self, t: float) -> None:
        if self.clock_publisher is not None:
            self.clock_publisher.publish(ClockMsg(clock=ns_to_time(int(self.scenario.stamp_ns(t)))))

    def advance_to(self, t: float) -> None:
        """Publish /clock at t (if enabled), then every odometry sample and frame up to t."""
        self.time = t
        self.publish_clock(t)
        for ts in self._odometry.due(t):
            msg = self.odometry_msg(ts)
            if self.odometry_filter is not None:
                msg = self.odometry_filter(ts, msg)
            if msg is not None:
                self.odometry_publisher.publish(msg)
        for slot, stream in enumerate(self._cameras):
            due = stream.due(t)
            if self.newest_frame_only:
                due = due[-1:]
            for ts in due:
                msg = self.camera_msg(slot, ts)
                if self.frame_filter is not None:
                    msg = self.frame_filter(slot, ts, msg)
                if msg is not None:
                    self.camera_publishers[slot].publish(msg)

    def odometry_msg(self, t: float) -> Odometry:
        state = self.scenario.pose_at(t)
        msg = Odometry()
        msg.header.stamp = ns_to_time(int(self.scenario.stamp_ns(t)))
        msg.header.frame_id = self.scenario.odom_frame
        msg.child_frame_id = self.scenario.base_frame
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        p.x, p.y, p.z = (float(x) for x in state.xyz)
        q.x, q.y, q.z, q.w = (float(x) for x in state.quat_xyzw)
        msg.twist.twist.linear.x = float(state.speed)
        msg.twist.twist.angular.z = float(state.yaw_rate)
        return msg

    def camera_msg(self, slot: int, t: float):
        spec = self.scenario.cameras[slot]
        rgb = self.scenario.render_camera(spec.index, t)
        encoding = self.encodings[slot]
        if encoding == "jpeg":
            msg = CompressedImage(format="jpeg", data=encode_jpeg(rgb, self.jpeg_quality))
        else:
            msg = rgb_to_image(rgb, encoding)
        msg.header.stamp = ns_to_time(int(self.scenario.stamp_ns(t)))
        msg.header.frame_id = sc.RIG_CAMERAS[spec.index].name
        return msg


def camera_grid_stamps_ns(scenario: sc.Scenario, slot: int, until_t: Optional[float] = None
                          ) -> np.ndarray:
    """Header stamps [ns] of one camera's frames up to until_t [s] (for test expectations)."""
    spec = scenario.cameras[slot]
    return scenario.stamp_ns(scenario.camera_stamps(spec.index, 0.0, until_t))
