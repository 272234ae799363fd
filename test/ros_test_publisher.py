#!/usr/bin/env python3
"""Tiny ROS 2 process for the harness tests: publishes or echoes messages on request.

    ros_test_publisher.py planner_output [--ros-args -r output:=/x -p count:=5 ...]
        publishes PlannerOutput messages built by build_planner_output(seq_offset + i)
    ros_test_publisher.py echo
        republishes every PlannerOutput received on `input` onto `output`
    ros_test_publisher.py image
        publishes raw sensor_msgs/Image frames (width x height rgb8) at rate_hz, best effort

Parameters: count (messages, 0 = until stopped), rate_hz, seq_offset, width, height.
Prints "ready" once its publisher has a matched subscriber, so tests wait on that line.
"""
from __future__ import annotations

import math
import sys

import numpy as np

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from alpamayo_ros.msg import (
    InputManifest,
    ModelInfo,
    PlannerOutput,
    PlannerTiming,
    TrajectoryCandidate,
)

NUM_WAYPOINTS = 64
NUM_CANDIDATES = 3


def f32(x: float) -> float:
    """``x`` rounded to float32: scalar float32 fields keep a Python double until they are
    serialised, so a message built locally only equals a received one with such values."""
    return float(np.float32(x))


def build_planner_output(seq: int) -> PlannerOutput:
    """A PlannerOutput with every nested field set to values that depend on ``seq``.

    Both the publishing process and the test build messages with this function, so a
    field lost or corrupted on the way shows up as a mismatch.
    """
    from builtin_interfaces.msg import Duration, Time
    from geometry_msgs.msg import Pose

    msg = PlannerOutput()
    msg.header.stamp = Time(sec=1_700_000_000 + seq, nanosec=123_456_789)
    msg.header.frame_id = "base_link"
    msg.status = PlannerOutput.STATUS_INVALID_OUTPUT if seq % 2 else PlannerOutput.STATUS_OK
    msg.status_reason = f"tick {seq}: first waypoint 0.4 m from v0*0.1 s" if seq % 2 else ""
    msg.odom_frame_id = "odom"
    msg.t0_pose_odom.position.x = 100.0 + seq
    msg.t0_pose_odom.orientation.z = math.sin(0.25)
    msg.t0_pose_odom.orientation.w = math.cos(0.25)
    msg.v0 = f32(8.5 + 0.01 * seq)
    for k in range(NUM_CANDIDATES):
        cand = TrajectoryCandidate()
        for i in range(NUM_WAYPOINTS):
            t = 0.1 * (i + 1)
            pose = Pose()
            pose.position.x = msg.v0 * t
            pose.position.y = 0.01 * k * t * t
            yaw = 0.002 * k * i
            pose.orientation.z = math.sin(yaw / 2)
            pose.orientation.w = math.cos(yaw / 2)
            cand.poses.append(pose)
            cand.time_from_t0.append(Duration(sec=int(t + 1e-9), nanosec=round((t % 1.0) * 1e9) % 1_000_000_000))
        cand.yaw = [0.002 * k * i for i in range(NUM_WAYPOINTS)]
        cand.speed = [msg.v0 + 0.05 * i for i in range(NUM_WAYPOINTS)]
        cand.acceleration = [0.5 - 0.01 * i for i in range(NUM_WAYPOINTS)]
        cand.curvature = [0.001 * k] * NUM_WAYPOINTS
        cand.coc = f"Sample {k} of tick {seq}: keep lane, yield to the cyclist → slow to 6 m/s."
        cand.coc_token_count = 17 + k
        cand.coc_truncated = k == NUM_CANDIDATES - 1
        cand.valid = k != 1
        cand.invalid_reason = "large backwards motion (-2.1 m)" if k == 1 else ""
        msg.candidates.append(cand)
    msg.selected_index = seq % NUM_CANDIDATES

    manifest = InputManifest()
    manifest.camera_indices = [0, 1, 2, 6]
    manifest.camera_topics = [f"/cam{i}/image/compressed" for i in (0, 1, 2, 6)]
    manifest.frame_stamps = [Time(sec=1_700_000_000 + seq, nanosec=i * 1000) for i in range(16)]
    manifest.frame_skew = [-0.001 * i for i in range(16)]
    manifest.max_frame_skew = f32(0.015)
    manifest.camera_skew = f32(0.004)
    manifest.history_start = Time(sec=1_699_999_998 + seq, nanosec=623_456_789)
    manifest.history_end = msg.header.stamp
    manifest.odometry_samples = 76
    manifest.odometry_newest = msg.header.stamp
    manifest.history_poses = [Pose() for _ in range(16)]
    manifest.history_poses[0].position.x = -12.75
    msg.inputs = manifest

    msg.timing = PlannerTiming(
        preprocess=f32(0.011), vision_prefill=f32(0.2), coc_decode=f32(0.3), diffusion=f32(0.05),
        postprocess=f32(0.002), model_total=f32(0.563), input_preparation=f32(0.004),
        latency=f32(0.6 + seq),
    )
    msg.model = ModelInfo(
        checkpoint="/models/tiny", model_id="a1b2c3d4", device="cpu", dtype="float32",
        num_samples=NUM_CANDIDATES, diffusion_steps=10, max_coc_tokens=32,
        sample_coc=True, seed=-(2**40) - seq,
    )
    return msg


class TestPublisher(Node):
    def __init__(self, mode: str):
        super().__init__("ros_test_publisher")
        self.mode = mode
        self.count = self.declare_parameter("count", 0).value
        self.rate_hz = self.declare_parameter("rate_hz", 20.0).value
        self.seq_offset = self.declare_parameter("seq_offset", 0).value
        self.width = self.declare_parameter("width", 1920).value
        self.height = self.declare_parameter("height", 1080).value
        self.sent = 0
        self.done = False
        self.announced = False
        if mode == "image":
            from sensor_msgs.msg import Image

            self.pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
            # One frame of bytes per parity; converting an ndarray per message is slow
            # (hundreds of ms for 1080p), bytes are cheap.
            size = self.width * self.height * 3
            self.frames = [bytes([v]) * size for v in (40, 200)]
        else:
            self.pub = self.create_publisher(PlannerOutput, "output", QoSProfile(depth=10))
        if mode == "echo":
            self.sub = self.create_subscription(PlannerOutput, "input", self.pub.publish, QoSProfile(depth=10))
        else:
            self.timer = self.create_timer(1.0 / self.rate_hz, self.tick)
        self.ready_timer = self.create_timer(0.02, self.announce_ready)

    def announce_ready(self) -> None:
        matched = self.pub.get_subscription_count() > 0
        if self.mode == "echo":
            matched = matched and self.sub.get_publisher_count() > 0
        if matched and not self.announced:
            self.announced = True
            print("ready", flush=True)
            self.ready_timer.cancel()

    def tick(self) -> None:
        if not self.announced:
            return  # publish only once someone listens: no message is lost to discovery
        if self.count and self.sent >= self.count:
            if not self.done:
                print(f"done {self.sent}", flush=True)
            self.done = True
            return
        if self.mode == "image":
            from sensor_msgs.msg import Image

            msg = Image(height=self.height, width=self.width, encoding="rgb8", step=self.width * 3)
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = f"frame_{self.sent}"
            msg.data = self.frames[self.sent % 2]
        else:
            msg = build_planner_output(self.seq_offset + self.sent)
        self.pub.publish(msg)
        self.sent += 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    args = rclpy.utilities.remove_ros_args(argv)
    mode = args[1] if len(args) > 1 else "planner_output"
    if mode not in ("planner_output", "echo", "image"):
        print(f"unknown mode {mode!r}: need planner_output, echo or image", file=sys.stderr)
        return 2
    try:
        with rclpy.init(args=argv):
            node = TestPublisher(mode)
            try:
                while rclpy.ok(context=node.context) and not node.done:
                    rclpy.spin_once(node, timeout_sec=0.1)
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
