"""The `alpamayo_route_navigation` node: navigation instructions from a route.

Subscribes to a route (nav_msgs/Path in the odometry frame, `route_topic`) and to the
odometry; at rate_hz it publishes a NavigationInstruction on alpamayo/navigation made by
core.route_navigation ("Turn left in 40m" while a turn is within announce_distance, else
an empty text, which clears the planner's instruction), stamped with the newest odometry
stamp and valid for valid_for seconds. Nothing is published before a route and an
odometry sample arrived.
"""
from __future__ import annotations

import sys
from typing import Optional

import numpy as np
from nav_msgs.msg import Odometry, Path
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.param_schema import FLOAT, STRING, ParamSpec
from alpamayo_ros.core.route_navigation import RouteNavigationConfig, RouteNavigator
from alpamayo_ros.msg import NavigationInstruction
from alpamayo_ros.ros import closed_loop_params as CP
from alpamayo_ros.ros.convert import ns_to_duration, ns_to_time, time_to_ns
from alpamayo_ros.ros.planner_node import NAVIGATION_TOPIC
from alpamayo_ros.ros.qos import CONTROL_ODOMETRY_QOS, NAVIGATION_QOS, PLAN_QOS
from alpamayo_ros.ros.shutdown import GatedCallbacks
from alpamayo_ros.ros.spin import run_node

NODE_NAME = "alpamayo_route_navigation"
_DEFAULTS = RouteNavigationConfig()
PARAMETERS = (
    ParamSpec("route_topic", STRING, "route", "nav_msgs/Path of the route (odometry frame)."),
    ParamSpec("odometry_topic", STRING, "odometry", "nav_msgs/Odometry of the ego."),
    ParamSpec("rate_hz", FLOAT, 2.0, "Instructions per second.", minimum=0.1, maximum=50.0),
    ParamSpec("valid_for", FLOAT, 1.0, "Validity of each instruction [s].", minimum=0.01,
              maximum=600.0),
    ParamSpec("announce_distance", FLOAT, _DEFAULTS.announce_distance,
              "A turn is announced from this distance ahead on [m].", minimum=1.0,
              maximum=5000.0),
    ParamSpec("min_turn_angle_deg", FLOAT, _DEFAULTS.min_turn_angle_deg,
              "Heading change that makes a turn [deg].", minimum=1.0, maximum=180.0),
)


class RouteNavigationNode(GatedCallbacks, Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        v = self._values = CP.declare_and_read(self, PARAMETERS)
        self._config = RouteNavigationConfig(announce_distance=v["announce_distance"],
                                             min_turn_angle_deg=v["min_turn_angle_deg"])
        self._navigator: Optional[RouteNavigator] = None
        self._odometry: Optional[tuple[int, np.ndarray]] = None
        self._pub = self.create_publisher(NavigationInstruction, NAVIGATION_TOPIC,
                                          NAVIGATION_QOS)
        self.create_subscription(Path, v["route_topic"], self._on_route, PLAN_QOS)
        self.create_subscription(Odometry, v["odometry_topic"], self._on_odometry,
                                 CONTROL_ODOMETRY_QOS)
        self.create_timer(1.0 / v["rate_hz"], self._on_tick)
        self.get_logger().info(f"route navigation at {v['rate_hz']:g} Hz from "
                               f"{v['route_topic']} and {v['odometry_topic']}")

    def _on_route(self, msg: Path) -> None:
        xy = [(p.pose.position.x, p.pose.position.y) for p in msg.poses]
        try:
            self._navigator = RouteNavigator(xy, self._config)
        except ConfigError as exc:
            self.get_logger().warning(f"route refused: {exc}")
            return
        self.get_logger().info(f"route with {len(xy)} points, turns at "
                               + ", ".join(f"{m.station:.0f} m {m.direction}"
                                           for m in self._navigator.maneuvers))

    def _on_odometry(self, msg: Odometry) -> None:
        p = msg.pose.pose.position
        self._odometry = (time_to_ns(msg.header.stamp), np.array([p.x, p.y]))

    def _on_tick(self) -> None:
        if self._navigator is None or self._odometry is None:
            return
        stamp_ns, xy = self._odometry
        msg = NavigationInstruction(text=self._navigator.instruction(xy) or "",
                                    source="route")
        msg.header.stamp = ns_to_time(stamp_ns)
        msg.valid_for = ns_to_duration(int(round(self._values["valid_for"] * 1e9)))
        self._pub.publish(msg)


def main(args: Optional[list] = None) -> int:
    return run_node(NODE_NAME, RouteNavigationNode, SingleThreadedExecutor, args,
                    parameter_specs=PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
