"""The `alpamayo_route_navigation` node: navigation instructions for Alpamayo 1.5 from a route.

Subscribes to a route (`route_topic`: nav_msgs/Path, or Autoware's
autoware_planning_msgs/Path with `route_type`) and the odometry; publishes
alpamayo_ros/NavigationInstruction on `navigation_topic` (the planner's
alpamayo/navigation) at up to `rate_hz` of odometry time: header stamp = the odometry
stamp, frame = its frame, the text of core.route_navigation.RouteGuide for the odometry
position ("Turn left in 11m", or "" = no instruction: none ahead, off the route, no
route yet, or a route in another frame than the odometry), valid for `valid_for` s,
source = `source`. Each new route replaces the previous one (Autoware's path is re-planned
at 10 Hz). Changes of what is announced are logged.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.route_navigation import (NODE_NAME, ROUTE_NAVIGATION_PARAMETERS,
                                                GuidanceStatus, RouteGuide, guidance_settings,
                                                load_instructions_file)
from alpamayo_ros.core.param_schema import validate
from alpamayo_ros.core.types import NS_PER_S
from alpamayo_ros.msg import NavigationInstruction
from alpamayo_ros.ros import convert
from alpamayo_ros.ros import params as ros_params
from alpamayo_ros.ros.qos import NAVIGATION_QOS, ODOMETRY_SUBSCRIPTION_QOS, route_qos
from alpamayo_ros.ros.shutdown import GatedCallbacks
from alpamayo_ros.ros.spin import run_node

_LOG_THROTTLE_S = 5.0


def route_points(msg: Any) -> np.ndarray:
    """(N, 2) x, y of a nav_msgs/Path (poses) or an Autoware Path (points)."""
    items = msg.poses if hasattr(msg, "poses") else msg.points
    return np.array([(i.pose.position.x, i.pose.position.y) for i in items],
                    dtype=np.float64).reshape(-1, 2)


class RouteNavigationNode(GatedCallbacks, Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        v = self._values = ros_params.declare_and_read(
            self, ROUTE_NAVIGATION_PARAMETERS,
            lambda values: validate(values, ROUTE_NAVIGATION_PARAMETERS))
        ros_params.check_topic_names(self, {name: v[name] for name in (
            "route_topic", "odometry_topic", "navigation_topic")})
        try:
            route_class = convert.message_class(v["route_type"])
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"route_type is {v['route_type']} but its package is not "
                              f"installed ({type(exc).__name__}: {exc}); source the "
                              "workspace that has it") from None
        self._guide = RouteGuide(guidance_settings(v),
                                 load_instructions_file(v["instructions_file"]))
        self._route_frame: Optional[str] = None
        self._period_ns = int(round(NS_PER_S / v["rate_hz"]))
        self._valid_for = convert.ns_to_duration(int(round(v["valid_for"] * NS_PER_S)))
        self._last_ns: Optional[int] = None
        self._announced: Optional[tuple] = None
        self.published = 0
        self._pub = self.create_publisher(NavigationInstruction, v["navigation_topic"],
                                          NAVIGATION_QOS)
        self.create_subscription(route_class, v["route_topic"], self._on_route,
                                 route_qos(v["route_transient_local"]))
        self.create_subscription(Odometry, v["odometry_topic"], self._on_odometry,
                                 ODOMETRY_SUBSCRIPTION_QOS)
        scripted = len(self._guide.scripted)
        self.get_logger().info(
            f"route navigation: route {v['route_topic']} ({v['route_type']}), odometry "
            f"{v['odometry_topic']} -> {v['navigation_topic']} at {v['rate_hz']:g} Hz; "
            + (f"{scripted} scripted instructions from {v['instructions_file']}" if scripted
               else f"turns of at least {v['min_turn_angle_deg']:g} deg announced "
                    f"{v['announce_distance']:g} m ahead"))

    def _on_route(self, msg: Any) -> None:
        try:
            route = self._guide.set_route(route_points(msg))
        except ValueError as exc:
            self._guide.route = None
            self.get_logger().warning(f"route refused: {exc}",
                                      throttle_duration_sec=_LOG_THROTTLE_S)
            return
        first = self._route_frame is None
        self._route_frame = msg.header.frame_id
        if first:
            self.get_logger().info(
                f"route of {route.length:.1f} m in {msg.header.frame_id!r}: "
                + (", ".join(f"{t.maneuver.value} at {t.station:.1f} m" for t in route.turns)
                   or "no turns"))

    def _on_odometry(self, msg: Odometry) -> None:
        stamp = convert.time_to_ns(msg.header.stamp)
        if self._last_ns is not None and self._last_ns <= stamp < self._last_ns + self._period_ns:
            return
        self._last_ns = stamp
        frame = msg.header.frame_id
        if self._route_frame is not None and self._route_frame and frame \
                and frame != self._route_frame:
            self.get_logger().warning(
                f"route in {self._route_frame!r} but odometry in {frame!r}: no instruction",
                throttle_duration_sec=_LOG_THROTTLE_S)
            text, key = "", ("frame",)
        else:
            p = msg.pose.pose.position
            guidance = self._guide.update(p.x, p.y)
            text = guidance.text
            key = (guidance.status, guidance.turn.station if guidance.turn else None,
                   text if self._guide.scripted else None)
            if key != self._announced:
                self._log_change(guidance)
        self._announced = key
        out = NavigationInstruction(text=text, valid_for=self._valid_for,
                                    source=self._values["source"])
        out.header.stamp, out.header.frame_id = msg.header.stamp, frame
        self._pub.publish(out)
        self.published += 1

    def _log_change(self, guidance) -> None:
        where = (f"at {guidance.station:.1f} m of the route" if guidance.status
                 is not GuidanceStatus.NO_ROUTE else "no route yet")
        if guidance.status is GuidanceStatus.INSTRUCTION:
            self.get_logger().info(f"instruction {guidance.text!r} ({where})")
        elif guidance.status is GuidanceStatus.OFF_ROUTE:
            self.get_logger().warning(f"{guidance.offset:.1f} m off the route: no "
                                      "instruction")
        else:
            self.get_logger().info(f"no instruction ({guidance.status.value}, {where})")


def main(args: Optional[list] = None) -> int:
    return run_node(NODE_NAME, RouteNavigationNode, SingleThreadedExecutor, args,
                    parameter_specs=ROUTE_NAVIGATION_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
