"""The `alpamayo_route_oracle` node: PlannerOutput plans made from the route (controller tests).

A stand-in for the planner with the planner's interface: a timer at rate_hz on the node
clock (sim time), one alpamayo/plan per tick with tick_stamp = the tick time, t0 = the
newest odometry stamp, the rear-axle pose at t0 and one candidate from
alpamayo_ros.sim.route_oracle. With plan_delay d, the tick at T plans from the newest
odometry at or before T - d (t0 = its stamp, anchored where the car was then): a planner
whose input is d old when the tick runs, so every plan reaches the controller d old, in
lockstep too (plan-age tests). Before any odometry a tick is answered SKIPPED.
"""
from __future__ import annotations

import sys
from collections import deque
from typing import Optional

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from scipy.spatial.transform import Rotation

from alpamayo_ros.core.outputs import PLAN_TOPIC
from alpamayo_ros.core.types import NS_PER_S
from alpamayo_ros.msg import PlannerOutput, TrajectoryCandidate
from alpamayo_ros.ros import closed_loop_params as CP
from alpamayo_ros.ros.convert import (core_pose_to_msg, ns_to_duration, ns_to_time,
                                      poses_to_msgs, time_to_ns)
from alpamayo_ros.ros.qos import CONTROL_ODOMETRY_QOS, LATCHED_PLAN_QOS
from alpamayo_ros.ros.spin import run_node, take_pending
from alpamayo_ros.sim.route import Route
from alpamayo_ros.sim.route_oracle import RouteOracle
from alpamayo_ros.ros.shutdown import GatedCallbacks

NODE_NAME = "alpamayo_route_oracle"


class RouteOracleNode(GatedCallbacks, Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        v = self._values = CP.declare_and_read(self, CP.ORACLE_PARAMETERS)
        self._oracle = RouteOracle(Route.load(v["route_file"] or None),
                                   acceleration=v["acceleration"],
                                   deceleration=v["deceleration"], blend_time=v["blend_time"],
                                   rear_axle_offset_x=v["rear_axle_offset_xyz"][0])
        self._offset = np.asarray(v["rear_axle_offset_xyz"], dtype=np.float64)
        self._delay_ns = int(round(v["plan_delay"] * NS_PER_S))
        # Odometry of the last plan_delay + 1 s (stamp ns, message), oldest first.
        self._history: deque = deque()
        self._pub = self.create_publisher(PlannerOutput, PLAN_TOPIC, LATCHED_PLAN_QOS)
        self._odometry_sub = self.create_subscription(Odometry, v["odometry_topic"],
                                                      self._on_odometry, CONTROL_ODOMETRY_QOS)
        self.create_timer(1.0 / v["rate_hz"], self._on_tick)
        self.get_logger().info(f"route oracle at {v['rate_hz']:g} Hz, delay "
                               f"{v['plan_delay']:g} s, odometry {v['odometry_topic']}")

    def _on_odometry(self, msg: Odometry) -> None:
        stamp = time_to_ns(msg.header.stamp)
        if self._history and stamp < self._history[-1][0]:
            self._history.clear()  # sim time went back
        self._history.append((stamp, msg))
        while self._history and stamp - self._history[0][0] > self._delay_ns + NS_PER_S:
            self._history.popleft()

    def _odometry_at(self, stamp_ns: int) -> Optional[Odometry]:
        """Newest odometry at or before stamp_ns."""
        for stamp, msg in reversed(self._history):
            if stamp <= stamp_ns:
                return msg
        return None

    def _on_tick(self) -> None:
        take_pending([self._odometry_sub])  # every odometry delivered before the tick
        tick_ns = self.get_clock().now().nanoseconds
        self._pub.publish(self._plan(tick_ns, self._odometry_at(tick_ns - self._delay_ns)))

    def _plan(self, tick_ns: int, odom: Optional[Odometry]) -> PlannerOutput:
        out = PlannerOutput()
        out.tick_stamp = ns_to_time(tick_ns)
        out.header.frame_id = self._values["base_frame_id"]
        out.model.model_id = "route_oracle"
        if self._history:  # what the tick had taken (the controller counts lagging ticks)
            out.inputs.odometry_newest = ns_to_time(self._history[-1][0])
        if odom is None:
            out.header.stamp = out.tick_stamp
            out.status = PlannerOutput.STATUS_SKIPPED
            out.status_reason = "route oracle: no odometry yet"
            return out
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        rot = Rotation.from_quat([q.x, q.y, q.z, q.w])
        axle = np.array([p.x, p.y, p.z]) + rot.apply(self._offset)
        forward = rot.apply([1.0, 0.0, 0.0])
        plan = self._oracle.plan(float(axle[0]), float(axle[1]),
                                 float(np.arctan2(forward[1], forward[0])),
                                 float(odom.twist.twist.linear.x))
        out.header.stamp = odom.header.stamp
        out.status = PlannerOutput.STATUS_OK
        out.odom_frame_id = odom.header.frame_id
        out.t0_pose_odom = core_pose_to_msg(plan.t0_pose)
        out.v0 = float(plan.v0)
        cand = TrajectoryCandidate()
        rot_t0 = Rotation.from_euler("z", np.asarray(plan.yaw)[:, None]).as_matrix()
        cand.poses = poses_to_msgs(plan.xyz, rot_t0)
        cand.time_from_t0 = [ns_to_duration(int(round(o * NS_PER_S))) for o in plan.offsets]
        cand.yaw = [float(x) for x in plan.yaw]
        cand.speed = [float(x) for x in plan.speed]
        cand.acceleration = [float(x) for x in plan.acceleration]
        cand.curvature = [float(x) for x in plan.curvature]
        cand.valid = True
        out.candidates = [cand]
        out.selected_index = 0
        return out


def main(args: Optional[list] = None) -> int:
    return run_node(NODE_NAME, RouteOracleNode, SingleThreadedExecutor, args,
                    parameter_specs=CP.ORACLE_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
