"""The `synthetic_sensors` node: 4 cameras and odometry of a scripted scenario.

Motion and images come from alpamayo_ros.sim.scenario (exact unicycle motion, rendered
pinhole views). Each camera publishes on its own grid phase + k / rate (e.g. 10, 15, 20,
30 Hz with different phases), odometry at odometry_rate; every header stamp is the exact
scenario time of the sample, so a subscriber can compare against the analytic poses.

Clock modes:
* publish_clock false (default): scenario time follows the node clock (wall time, or sim
  time driven by someone else); stamps = clock at start + scenario time.
* publish_clock true: this node owns time. A steady-clock timer advances scenario time by
  time_scale / clock_rate per step and publishes /clock; stamps = scenario.start_stamp_ns +
  scenario time. Run the planner with use_sim_time:=true.
"""
from __future__ import annotations

import sys
from typing import Any, Mapping, Optional

from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from alpamayo_ros.core.types import DEFAULT_CAMERA_INDICES, MAX_CAMERAS, NS_PER_S
from alpamayo_ros.core import param_schema as P
from alpamayo_ros.core.planner_params import PARAMETERS_BY_NAME
from alpamayo_ros.ros.params import declare_and_read
from alpamayo_ros.testbed.scenario_publisher import ScenarioPublisher
from alpamayo_ros.ros.spin import run_node
from alpamayo_ros.sim import scenario as sc
from alpamayo_ros.ros.shutdown import GatedCallbacks

NODE_NAME = "synthetic_sensors"

SENSOR_PARAMETERS: tuple[P.ParamSpec, ...] = (
    P.ParamSpec("scenario", P.STRING, "curved_drive", "Scripted motion preset.",
                choices=tuple(sc.PRESETS)),
    P.ParamSpec("duration", P.FLOAT, 120.0,
                "Scenario length [s]; publishing stops at the end.", minimum=2.0,
                maximum=86400.0),
    P.ParamSpec("camera_indices", P.INT_ARRAY, list(DEFAULT_CAMERA_INDICES),
                "Alpamayo camera index per topic (rig placement of the rendered view).",
                minimum=0, maximum=6, length_range=(1, MAX_CAMERAS)),
    P.ParamSpec("camera_topics", P.STRING_ARRAY,
                list(PARAMETERS_BY_NAME["camera_topics"].default),
                "Topic per camera (the planner's defaults).", length_range=(1, MAX_CAMERAS)),
    P.ParamSpec("camera_rates", P.FLOAT_ARRAY, [10.0, 15.0, 20.0, 30.0],
                "Frame rate per camera [Hz].", minimum=0.5, maximum=120.0,
                length_range=(1, MAX_CAMERAS)),
    P.ParamSpec("camera_phases", P.FLOAT_ARRAY, [0.0, 0.013, 0.027, 0.005],
                "Time of each camera's first frame after the scenario start [s].",
                minimum=0.0, maximum=10.0, length_range=(1, MAX_CAMERAS)),
    P.ParamSpec("camera_encodings", P.STRING_ARRAY, ["rgb8", "bgr8", "bgra8", "rgb8"],
                "Per camera: rgb8 / bgr8 / bgra8 (sensor_msgs/Image) or jpeg "
                "(sensor_msgs/CompressedImage).", choices=sc.SUPPORTED_ENCODINGS,
                length_range=(1, MAX_CAMERAS)),
    P.ParamSpec("width", P.INT, 384, "Image width [px].", minimum=32, maximum=4096),
    P.ParamSpec("height", P.INT, 216, "Image height [px].", minimum=32, maximum=4096),
    P.ParamSpec("jpeg_quality", P.INT, 90, "JPEG quality.", minimum=1, maximum=100),
    P.ParamSpec("odometry_topic", P.STRING, "odometry", "nav_msgs/Odometry topic."),
    P.ParamSpec("odometry_rate", P.FLOAT, 50.0, "Odometry rate [Hz].", minimum=1.0,
                maximum=1000.0),
    P.ParamSpec("odom_frame_id", P.STRING, "odom", "Odometry header frame_id."),
    P.ParamSpec("base_frame_id", P.STRING, "base_link", "Odometry child_frame_id."),
    P.ParamSpec("publish_clock", P.BOOL, False,
                "true: publish /clock and own the time (see module docstring)."),
    P.ParamSpec("clock_rate", P.FLOAT, 100.0, "Steps per wall second when publish_clock "
                "[Hz].", minimum=1.0, maximum=2000.0),
    P.ParamSpec("time_scale", P.FLOAT, 1.0, "Scenario seconds per wall second when "
                "publish_clock.", minimum=0.01, maximum=100.0),
)


class SyntheticSensorsNode(GatedCallbacks, Node):
    """Publishes the scenario's cameras and odometry (see module docstring)."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        v = self._values = declare_and_read(
            self, SENSOR_PARAMETERS,
            lambda values: P.validate(values, SENSOR_PARAMETERS, _cross_checks))
        self._clock_mode = v["publish_clock"]
        # Rendering is always RGB; ScenarioPublisher converts to each camera's encoding.
        cameras = tuple(sc.CameraSpec(index=i, rate_hz=r, phase_s=ph, width=v["width"],
                                      height=v["height"])
                        for i, r, ph in zip(v["camera_indices"], v["camera_rates"],
                                            v["camera_phases"]))
        kwargs: dict[str, Any] = {"cameras": cameras, "odom_frame": v["odom_frame_id"],
                                  "base_frame": v["base_frame_id"]}
        if not self._clock_mode:
            kwargs["start_stamp_ns"] = self.get_clock().now().nanoseconds
        self.scenario = sc.make_preset(v["scenario"], duration_s=v["duration"], **kwargs)
        # A late timer publishes only the newest due frame of each camera (no bursts).
        self.publisher = ScenarioPublisher(
            self, self.scenario, v["camera_topics"], v["camera_encodings"],
            odometry_topic=v["odometry_topic"], odometry_rate=v["odometry_rate"],
            publish_clock=self._clock_mode, jpeg_quality=v["jpeg_quality"],
            newest_frame_only=True)
        self._sim_t = 0.0
        self._finished = False
        if self._clock_mode:
            # Own time: step on the steady clock (the node clock may be the sim clock).
            self._steady = Clock(clock_type=ClockType.STEADY_TIME)
            self.create_timer(1.0 / v["clock_rate"], self._on_step, clock=self._steady)
        else:
            self.create_timer(0.002, self._on_step)
        self.get_logger().info(
            f"scenario {self.scenario.name} ({v['duration']:g} s): cameras "
            f"{list(zip(v['camera_topics'], v['camera_rates'], v['camera_encodings']))}, "
            f"odometry {v['odometry_topic']} at {v['odometry_rate']:g} Hz, "
            f"{'publishing /clock' if self._clock_mode else 'node clock'}")

    def scenario_time(self) -> float:
        """Current scenario time [s]."""
        if self._clock_mode:
            return self._sim_t
        return (self.get_clock().now().nanoseconds - self.scenario.start_stamp_ns) / NS_PER_S

    def _on_step(self) -> None:
        if self._finished:
            return
        if self._clock_mode:
            self._sim_t += self._values["time_scale"] / self._values["clock_rate"]
        t = min(self.scenario_time(), self.scenario.duration_s)
        self.publisher.advance_to(t)
        if t >= self.scenario.duration_s:
            self._finished = True
            self.get_logger().info(f"scenario {self.scenario.name} finished at {t:.2f} s")


def _cross_checks(values: Mapping[str, Any]) -> list[str]:
    indices = values["camera_indices"]
    errors = []
    if any(b <= a for a, b in zip(indices, indices[1:])):
        errors.append(f"camera_indices: have {indices}, need strictly ascending")
    for name in ("camera_topics", "camera_rates", "camera_phases", "camera_encodings"):
        if len(values[name]) != len(indices):
            errors.append(f"{name}: have {len(values[name])} entries, need one per "
                          f"camera_indices entry ({len(indices)})")
    missing = [i for i in indices if i not in sc.RIG_CAMERAS]
    if missing:
        errors.append(f"camera_indices: have {missing} without a rig placement, need "
                      f"{sorted(sc.RIG_CAMERAS)}")
    return errors


def main(args: Optional[list] = None) -> int:
    return run_node(NODE_NAME, SyntheticSensorsNode, SingleThreadedExecutor, args,
                    parameter_specs=SENSOR_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
