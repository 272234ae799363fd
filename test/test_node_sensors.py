"""The synthetic_sensors executable: camera rates, phases, encodings and odometry on the wall
clock, and its parameter validation."""
import numpy as np
import pytest

pytest.importorskip("rclpy")
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from alpamayo_ros.core.image_decode import decode_image  # noqa: E402
from alpamayo_ros.ros.convert import (compressed_to_encoded, image_to_encoded,  # noqa: E402
                                      time_to_ns)

pytestmark = pytest.mark.ros
S = 1_000_000_000


def test_cameras_publish_on_their_own_grids_and_encodings(ros_process, ros_node):
    proc = ros_process("synthetic_sensors", params={
        "camera_topics": ["c0", "c1", "c2", "c3"], "camera_rates": [10.0, 15.0, 20.0, 30.0],
        "camera_phases": [0.0, 0.013, 0.027, 0.005], "width": 48, "height": 32,
        "camera_encodings": ["rgb8", "bgr8", "bgra8", "jpeg"], "scenario": "circle_8mps"})
    proc.wait_for_output("circle_8mps", timeout=20.0)
    frames = {k: ros_node.collect(f"/c{k}", CompressedImage if k == 3 else Image, 6,
                                  timeout=15.0) for k in range(4)}
    odometry = ros_node.collect("/odometry", Odometry, 20, timeout=10.0)
    for k, rate in enumerate((10.0, 15.0, 20.0, 30.0)):
        stamps = np.array([time_to_ns(m.header.stamp) for m in frames[k]])
        steps = np.diff(stamps) / S
        # Consecutive frames are whole multiples of the camera period (a slow timer tick
        # may skip one, never shift the grid).
        np.testing.assert_allclose(np.round(steps * rate), steps * rate, atol=1e-6)
        encoded = (compressed_to_encoded if k == 3 else image_to_encoded)(frames[k][-1])
        assert decode_image(encoded).shape == (32, 48, 3)
    assert [m.encoding for m in (frames[0][0], frames[1][0], frames[2][0])] == \
        ["rgb8", "bgr8", "bgra8"]
    # Phases: stamps of different cameras sit on grids offset by the configured phases.
    # Cameras 0 (10 Hz, phase 0) and 1 (15 Hz, phase 13 ms) share a 1/30 s grid, so any
    # pair of their stamps differs by 13 ms modulo 1/30 s.
    apart = (time_to_ns(frames[1][0].header.stamp) - time_to_ns(frames[0][0].header.stamp)) / S
    assert (apart * 30) % 1.0 == pytest.approx(0.013 * 30, abs=1e-5)
    odo_steps = np.diff([time_to_ns(m.header.stamp) for m in odometry]) / S
    np.testing.assert_allclose(np.round(odo_steps * 50), odo_steps * 50, atol=1e-6)
    speeds = [m.twist.twist.linear.x for m in odometry]
    assert speeds == pytest.approx([8.0] * len(speeds))


def test_invalid_sensor_parameters_exit_with_a_message(ros_process):
    proc = ros_process("synthetic_sensors", params={"camera_encodings": ["rgb8", "yuv", "rgb8", "rgb8"]})
    assert proc.wait_exit(timeout=20.0) == 2
    out = proc.output()
    assert "camera_encodings[1]: have 'yuv', need one of rgb8, bgr8, bgra8, jpeg" in out
    assert "Traceback" not in out
