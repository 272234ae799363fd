#!/usr/bin/env python3
"""Raw 1080p rgb8 images between two processes: Fast DDS defaults vs. the shipped profile.

Side by side in one run, for each configuration a publisher process
(test/ros_test_publisher.py image, best effort, 30 Hz) and a subscriber process (this
script, --subscribe) run for --seconds; the subscriber reports the frames received, the
rate [Hz] and the latency from header stamp to callback [ms].

    .venv/bin/python bench/bench_image_transport.py [--seconds 5] [--rate 30]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROFILE = REPO / "config" / "fastdds_large_messages.xml"
PUBLISHER = REPO / "test" / "ros_test_publisher.py"


def subscribe(seconds: float) -> None:
    """Subscriber process: count frames on /bench/image for ``seconds`` after the first."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    stamps: list[tuple[float, float]] = []  # (receive time, latency) [s]

    def on_image(msg: Image) -> None:
        now = time.time()
        sent = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        stamps.append((now, now - sent))

    with rclpy.init():
        node = rclpy.create_node("bench_image_subscriber")
        node.create_subscription(Image, "/bench/image", on_image, qos_profile_sensor_data)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        node.destroy_node()
    n = len(stamps)
    span = stamps[-1][0] - stamps[0][0] if n > 1 else 0.0
    lat = sorted(s[1] for s in stamps)
    print(json.dumps({
        "frames": n,
        "rate_hz": (n - 1) / span if span > 0 else 0.0,
        "latency_ms_p50": 1e3 * lat[n // 2] if n else None,
        "latency_ms_max": 1e3 * lat[-1] if n else None,
    }))


def run_pair(profile: Path | None, seconds: float, rate: float, domain: int) -> dict:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONPATH=str(REPO), ROS_LOG_DIR=tempfile.mkdtemp(prefix="bench_ros_log_"))
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    pub = subprocess.Popen(
        [sys.executable, str(PUBLISHER), "image", "--ros-args", "-r", "image:=/bench/image",
         "-p", f"rate_hz:={rate}"], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = subprocess.run([sys.executable, __file__, "--subscribe", "--seconds", str(seconds)],
                             env=env, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.killpg(pub.pid, signal.SIGINT)
        try:
            pub.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(pub.pid, signal.SIGKILL)
            pub.wait()
    if out.returncode != 0:
        raise RuntimeError(f"subscriber failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=30.0, help="publish rate [Hz]")
    parser.add_argument("--domain", type=int, default=97, help="ROS_DOMAIN_ID for the run")
    parser.add_argument("--subscribe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscribe:
        subscribe(args.seconds)
        return 0
    print(f"raw 1920x1080 rgb8 (6.2 MB), best effort, published at {args.rate:.0f} Hz, "
          f"{args.seconds:.0f} s per configuration")
    for label, profile in (("fast dds defaults", None), ("fastdds_large_messages.xml", PROFILE)):
        r = run_pair(profile, args.seconds, args.rate, args.domain)
        lat = "-" if r["latency_ms_p50"] is None else \
            f"{r['latency_ms_p50']:.1f} ms p50, {r['latency_ms_max']:.1f} ms max"
        print(f"  {label:28s} {r['frames']:4d} frames  {r['rate_hz']:5.1f} Hz  latency {lat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
