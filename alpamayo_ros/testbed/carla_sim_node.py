"""The `carla_sim` node: a CI stand-in for CARLA + carla-ros-bridge on the bridge's topics.

Topics for role name R (default ego_vehicle), as the bridge publishes them:
  /carla/R/<id>/image        sensor_msgs/Image, bgra8, frame_id R/<id>, one per camera id
  /carla/R/<id>/camera_info  sensor_msgs/CameraInfo (pinhole of the camera's FOV)
  /carla/R/odometry          nav_msgs/Odometry in `map`, pose of the actor origin (not the
                             rear axle), child_frame_id R, twist in the vehicle frame
  /carla/R/collision        carla_msgs/CarlaCollisionEvent, one per obstacle touched per
                             step (other_actor_id: the obstacle's actor id)
  /carla/R/lane_invasion    carla_msgs/CarlaLaneInvasionEvent, a step whose vehicle box
                             crossed lane markings (their types)
  /carla/actor_list          carla_msgs/CarlaActorList: the ego and the obstacles (ids and
                             CARLA type ids), every step as the bridge's pseudo sensor
  /carla/R/waypoints         nav_msgs/Path in `map`: the route (lane centre, 1 m apart), once
                             and latched, as carla_waypoint_publisher publishes a route
  /clock                     rosgraph_msgs/Clock, the sim time
  in: /carla/R/vehicle_control_cmd (carla_msgs/CarlaEgoVehicleControl), /carla/control
      (carla_msgs/CarlaControl: PLAY, PAUSE, STEP_ONCE, as the bridge's run state)

Stepping (the bridge's synchronous mode): step k publishes the state at k * step, then the
simulator waits for a vehicle control command (synchronous_mode_wait_for_vehicle_control_
command; at most vehicle_control_timeout wall seconds, like the bridge's 1 s), applies the
run state (a PAUSE holds until PLAY or STEP_ONCE) and steps. One deliberate difference from
the bridge: each step publishes the sensor data first and /clock last (the bridge publishes
/clock first), so a node whose timer fires on that /clock has the step's data already; this
is what makes lockstep runs repeat exactly (docs/closed_loop.md). Before its first step it
publishes /clock at the start time while it waits for its subscribers (a planner kept
across the runs of a suite sees sim time restart before the first step). With synchronous_mode
false it steps on wall time without waiting (real-time mode).

The world, vehicle and cameras are alpamayo_ros.sim (route, kinematic bicycle, road
renderer). `duration` ends the run; record_path records a bag of the run.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
from carla_msgs.msg import (CarlaActorInfo, CarlaActorList, CarlaCollisionEvent, CarlaControl,
                            CarlaEgoVehicleControl, CarlaLaneInvasionEvent)
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path as PathMsg
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.types import NS_PER_S
from alpamayo_ros.ros import closed_loop_params as CP
from alpamayo_ros.ros.convert import ns_to_time, poses_to_msgs, time_to_ns
from alpamayo_ros.ros.qos import BRIDGE_QOS, CLOCK_QOS, route_qos
from alpamayo_ros.ros.spin import run_node
from alpamayo_ros.testbed.topic_recorder import TopicRecorder
from alpamayo_ros.sim.road_renderer import RoadRenderer
from alpamayo_ros.sim.route import SAMPLE_SPACING_M, Route
from alpamayo_ros.sim.simulation import HeldCommand, Simulation
from alpamayo_ros.sim.vehicle_model import VehicleParams
from alpamayo_ros.sim import scenario as sc
from alpamayo_ros.ros.shutdown import GatedCallbacks, shutdown_logger

NODE_NAME = "carla_sim"
# CARLA actor id of the ego vehicle in /carla/actor_list (obstacles: sim/obstacles.py).
EGO_ACTOR_ID = 1
# Nominal mass [kg] for the collision events' normal impulse (mass x speed; the kinematic
# model has no contact forces).
_EGO_MASS_KG = 1800.0
_POLL_S = 0.002


def camera_info(width: int, height: int, fov_deg: float) -> CameraInfo:
    """Pinhole intrinsics of a camera with horizontal FOV fov_deg (principal point centred)."""
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    cx, cy = width / 2.0, height / 2.0
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.d = [0.0] * 5
    info.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class CarlaSimNode(GatedCallbacks, Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        v = self._values = CP.declare_and_read(self, CP.SIM_PARAMETERS, CP.sim_cross_checks)
        role = v["role_name"]
        route = Route.load(v["route_file"] or None)
        offset = v["vehicle.rear_axle_offset_xyz"]
        vehicle = VehicleParams(
            wheelbase=v["vehicle.wheelbase"], rear_axle_offset_x=offset[0],
            max_wheel_angle=math.radians(v["vehicle.max_wheel_angle_deg"]),
            steer_rate_max=math.radians(v["vehicle.steer_rate_max_deg"]),
            steer_lag=v["vehicle.steer_lag"], accel_lag=v["vehicle.accel_lag"],
            full_throttle_accel=v["vehicle.full_throttle_accel"],
            full_brake_decel=v["vehicle.full_brake_decel"])
        self._step_ns = int(round(v["fixed_delta_seconds"] * NS_PER_S))
        self.sim = Simulation(route, vehicle, self._step_ns,
                              int(round(NS_PER_S / v["camera_rate"])), v["initial_speed"],
                              v["start_station"], v["start_lateral"])
        self._renderer = RoadRenderer(route)
        self._cameras = list(zip(v["camera_ids"], v["camera_indices"]))
        for _, index in self._cameras:
            if index not in sc.RIG_CAMERAS:
                raise ConfigError(f"camera_indices: have {index}, need one of "
                                  f"{sorted(sc.RIG_CAMERAS)} (rig placements)")
        prefix = f"/carla/{role}"
        self._frame_prefix = role
        self._pub_images = [self.create_publisher(Image, f"{prefix}/{cid}/image", BRIDGE_QOS)
                            for cid, _ in self._cameras]
        self._pub_infos = [self.create_publisher(CameraInfo, f"{prefix}/{cid}/camera_info",
                                                 BRIDGE_QOS) for cid, _ in self._cameras]
        self._infos = [camera_info(v["camera_width"], v["camera_height"],
                                   sc.RIG_CAMERAS[index].fov_deg) for _, index in self._cameras]
        self._odometry_topic = f"{prefix}/odometry"
        self._control_topic = f"{prefix}/vehicle_control_cmd"
        self._pub_odom = self.create_publisher(Odometry, self._odometry_topic, BRIDGE_QOS)
        self._pub_clock = self.create_publisher(ClockMsg, "/clock", CLOCK_QOS)
        self._collision_topic = f"{prefix}/collision"
        self._invasion_topic = f"{prefix}/lane_invasion"
        self._pub_collision = self.create_publisher(CarlaCollisionEvent, self._collision_topic,
                                                    BRIDGE_QOS)
        self._pub_invasion = self.create_publisher(CarlaLaneInvasionEvent,
                                                   self._invasion_topic, BRIDGE_QOS)
        self._pub_actors = self.create_publisher(CarlaActorList, "/carla/actor_list",
                                                 BRIDGE_QOS)
        self._actor_list = self._make_actor_list(role, route)
        self._actor_list_recorded = False
        self._pub_route = self.create_publisher(PathMsg, f"{prefix}/waypoints", route_qos())
        self._pub_route.publish(self._route_path(route))
        self.create_subscription(CarlaEgoVehicleControl, self._control_topic, self._on_command,
                                 BRIDGE_QOS)
        self.create_subscription(CarlaControl, "/carla/control", self._on_run_state, BRIDGE_QOS)
        self._recorder: Optional[TopicRecorder] = None
        if v["record_path"]:
            self._recorder = TopicRecorder(self, Path(v["record_path"]), v["record_storage"],
                                           v["record_topics"], lambda: self.sim.time_ns)
        self._settle_period_ns = int(round(v["tick_settle.period"] * NS_PER_S))
        self._clock_due: Optional[tuple] = None
        self._run_states: list[int] = []
        self._paused = False
        self._command_received = False
        self._first_command_received = False
        self._waiting_since = 0.0
        self._started = False
        self._start_wall = time.monotonic()
        self._start_clock_wall = -math.inf
        self.finished = False
        self.timeouts = 0
        self.ack_timeouts = 0
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        period = v["fixed_delta_seconds"] if not v["synchronous_mode"] else _POLL_S
        self.create_timer(period, self._on_timer, clock=steady)
        self.get_logger().info(
            f"route {route.name} ({route.length:.1f} m), step {v['fixed_delta_seconds']:g} s, "
            f"{'synchronous' if v['synchronous_mode'] else 'real-time'} mode, cameras "
            f"{[f'{prefix}/{cid}/image' for cid, _ in self._cameras]}, odometry "
            f"{self._odometry_topic}")

    def _route_path(self, route: Route) -> PathMsg:
        """The route's centre line every metre (and its end) as a nav_msgs/Path in map."""
        every = max(int(round(1.0 / SAMPLE_SPACING_M)), 1)
        index = np.unique(np.append(np.arange(0, len(route.s), every), len(route.s) - 1))
        xyz = np.column_stack([route.xy[index], np.zeros(len(index))])
        yaw = route.heading[index]
        rot = np.zeros((len(index), 3, 3))
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = (np.cos(yaw), -np.sin(yaw),
                                                                  np.sin(yaw), np.cos(yaw))
        rot[:, 2, 2] = 1.0
        msg = PathMsg()
        msg.header.stamp, msg.header.frame_id = ns_to_time(self.sim.time_ns), "map"
        for pose in poses_to_msgs(xyz, rot):
            msg.poses.append(PoseStamped(header=msg.header, pose=pose))
        return msg

    # ------------------------------------------------------------------ inputs
    def _on_command(self, msg: CarlaEgoVehicleControl) -> None:
        if not self._started:
            return
        if self._recorder is not None:
            self._recorder.write(self._control_topic, msg, self.sim.time_ns)
        if time_to_ns(msg.header.stamp) < self.sim.time_ns and msg.header.stamp.sec > 0:
            return  # answers an older step (arrived late); the newest command is applied
        self.sim.apply(HeldCommand(throttle=msg.throttle, brake=msg.brake, steer=msg.steer,
                                   reverse=msg.reverse, hand_brake=msg.hand_brake))
        self._command_received = True
        self._first_command_received = True
        if self._values["synchronous_mode"]:
            self._advance()

    def _on_run_state(self, msg: CarlaControl) -> None:
        self._run_states.append(int(msg.command))
        if self._values["synchronous_mode"]:
            self._advance()

    # ------------------------------------------------------------------ stepping
    def _on_timer(self) -> None:
        if self._clock_due is not None and self._settled(time.monotonic()):
            self._pub_clock.publish(ClockMsg(clock=self._clock_due[1]))
            self._clock_due = None
            self._waiting_since = time.monotonic()
        if self.finished:
            return
        if not self._started:
            self._announce_start_time()
            if not self._ready_to_start():
                return
            self._started = True
            self._publish_step()
            return
        if self._values["synchronous_mode"]:
            self._advance()
        else:
            self._step_and_publish()

    def _settled(self, now: float) -> bool:
        """The settled step's /clock may go out (tick_settle.*): its wall time passed and,
        with await_acks, every reliable subscriber of the odometry and the cameras has
        all their data (or the ack timeout passed: logged)."""
        due, stamp, ack_deadline = self._clock_due
        if now < due:
            return False
        if ack_deadline is None:
            return True
        zero = Duration(nanoseconds=0)
        if all(p.wait_for_all_acked(zero) for p in (self._pub_odom, *self._pub_images)):
            return True
        if now < ack_deadline:
            return False
        self.ack_timeouts += 1
        self.get_logger().warning(
            f"tick_settle: data of {time_to_ns(stamp) / NS_PER_S:.3f} s not acknowledged by "
            f"every reliable subscriber after {self._values['tick_settle.ack_timeout']:g} s "
            f"(wall); publishing /clock anyway ({self.ack_timeouts} so far)")
        return True

    def _announce_start_time(self) -> None:
        """Before the first step, /clock at the start time every 0.1 s (wall): a node that
        outlives a previous run (a suite worker's planner) sees sim time restart while the
        simulator waits for its subscribers, not with the first steps (its timer then
        re-anchors at 0 and ticks on the multiples of its period)."""
        now = time.monotonic()
        if now - self._start_clock_wall >= 0.1:
            self._pub_clock.publish(ClockMsg(clock=ns_to_time(self.sim.time_ns)))
            self._start_clock_wall = now

    def _ready_to_start(self) -> bool:
        v = self._values
        if self._recorder is not None and not self._recorder.all_matched():
            ready = False
        else:
            ready = (self._pub_odom.get_subscription_count() >= v["start.min_odometry_subscribers"]
                     and all(p.get_subscription_count() >= v["start.min_camera_subscribers"]
                             for p in self._pub_images))
        waited = time.monotonic() - self._start_wall
        if not ready and waited > v["start.timeout"]:
            self.get_logger().warning(f"starting without all subscribers after {waited:.1f} s")
            return True
        return ready

    def _advance(self) -> None:
        """Synchronous mode: step once the command arrived (or timed out), honouring the
        run state of /carla/control."""
        if not self._started or self.finished or self._clock_due is not None:
            return
        v = self._values
        # The bridge's run state: the newest queued command decides. A paused simulator
        # waits for PLAY / STEP_ONCE whatever else happens; the command timeout restarts
        # when it resumes (the command may arrive just after PLAY).
        if self._run_states:
            state = self._run_states[-1]
            self._run_states.clear()
            was_paused = self._paused
            self._paused = state == CarlaControl.PAUSE
            if state == CarlaControl.STEP_ONCE:
                self._paused = False
                self._run_states.append(CarlaControl.PAUSE)
            if was_paused and not self._paused:
                self._waiting_since = time.monotonic()
        if self._paused:
            return
        if v["synchronous_mode_wait_for_vehicle_control_command"] and not self._command_received:
            timeout = v["vehicle_control_timeout"]
            if v["start.await_first_command"] and not self._first_command_received:
                timeout = v["start.timeout"]
            if timeout <= 0 or time.monotonic() - self._waiting_since < timeout:
                return
            self.timeouts += 1
            self.get_logger().warning(
                f"Timeout ({timeout:g} s) while waiting for a vehicle control command at "
                f"{self.sim.time_ns / NS_PER_S:.3f} s")
        self._step_and_publish()

    def _step_and_publish(self) -> None:
        self.sim.step()
        self._publish_step()

    def _publish_step(self) -> None:
        t_ns = self.sim.time_ns
        stamp = ns_to_time(t_ns)
        odom = self._odometry(stamp)
        self._pub_odom.publish(odom)
        if self._recorder is not None:
            # A publisher announced just after the start (the graph reports a node's
            # subscriptions and publishers separately) is still recorded from then on.
            self._recorder.discover_missing()
            self._recorder.write(self._odometry_topic, odom, t_ns)
        self._publish_events(stamp, t_ns)
        if self.sim.cameras_due():
            self._publish_cameras(stamp)
        # Data first, /clock last (module docstring); at a settled tick the /clock waits.
        settle_ns = self._settle_period_ns
        if settle_ns and t_ns % settle_ns == 0 and self._values["synchronous_mode"]:
            now = time.monotonic()
            self._clock_due = (now + self._values["tick_settle.wall_time"], stamp,
                               now + self._values["tick_settle.ack_timeout"]
                               if self._values["tick_settle.await_acks"] else None)
        else:
            self._pub_clock.publish(ClockMsg(clock=stamp))
        self._command_received = False
        self._waiting_since = time.monotonic()
        duration = self._values["duration"]
        if duration > 0 and t_ns >= int(round(duration * NS_PER_S)):
            self.finished = True
            self.get_logger().info(f"finished at {t_ns / NS_PER_S:.3f} s sim time "
                                   f"({self.timeouts} control timeouts, {self.ack_timeouts} "
                                   f"acknowledgement timeouts)")
            if self._values["exit_when_done"]:
                self.context.try_shutdown()  # ends spinning; run_node closes the bag

    @staticmethod
    def _make_actor_list(role: str, route: Route) -> CarlaActorList:
        from alpamayo_ros.testbed.closed_loop_stack import BLUEPRINT
        actors = [CarlaActorInfo(id=EGO_ACTOR_ID, type=BLUEPRINT, rolename=role)]
        actors += [CarlaActorInfo(id=ob.actor_id, type=ob.type_id) for ob in route.obstacles]
        return CarlaActorList(actors=actors)

    def _publish_events(self, stamp, t_ns: int) -> None:
        """Collision and lane invasion events of the step, and the actor list (module
        docstring); the bag keeps the events and the first actor list."""
        self._pub_actors.publish(self._actor_list)
        if self._recorder is not None and not self._actor_list_recorded:
            self._recorder.write("/carla/actor_list", self._actor_list, t_ns)
            self._actor_list_recorded = True
        sim = self.sim
        for ob in sim.touching:
            msg = CarlaCollisionEvent(other_actor_id=ob.actor_id)
            msg.header.stamp, msg.header.frame_id = stamp, f"{self._frame_prefix}/collision"
            impulse = _EGO_MASS_KG * sim.state.speed
            msg.normal_impulse.x = float(-impulse * math.cos(sim.state.yaw))
            msg.normal_impulse.y = float(-impulse * math.sin(sim.state.yaw))
            self._pub_collision.publish(msg)
            if self._recorder is not None:
                self._recorder.write(self._collision_topic, msg, t_ns)
        if sim.crossed_markings:
            msg = CarlaLaneInvasionEvent(crossed_lane_markings=list(sim.crossed_markings))
            msg.header.stamp = stamp
            msg.header.frame_id = f"{self._frame_prefix}/lane_invasion"
            self._pub_invasion.publish(msg)
            if self._recorder is not None:
                self._recorder.write(self._invasion_topic, msg, t_ns)

    def _odometry(self, stamp) -> Odometry:
        x, y, yaw = self.sim.actor_pose()
        msg = Odometry()
        msg.header.stamp = stamp
        msg.header.frame_id = "map"
        msg.child_frame_id = self._frame_prefix
        msg.pose.pose.position.x, msg.pose.pose.position.y = float(x), float(y)
        msg.pose.pose.orientation.z = math.sin(yaw / 2.0)
        msg.pose.pose.orientation.w = math.cos(yaw / 2.0)
        msg.twist.twist.linear.x = float(self.sim.state.speed)
        msg.twist.twist.angular.z = float(self.sim.yaw_rate())
        return msg

    def _publish_cameras(self, stamp) -> None:
        v = self._values
        st = self.sim.state
        for (cid, index), pub_image, pub_info, info in zip(self._cameras, self._pub_images,
                                                          self._pub_infos, self._infos):
            rgb = self._renderer.render(index, v["camera_width"], v["camera_height"],
                                        st.x, st.y, st.yaw)
            pixels = sc.encode_frame(rgb, "bgra8")
            frame = f"{self._frame_prefix}/{cid}"
            image = Image(height=pixels.shape[0], width=pixels.shape[1], encoding="bgra8",
                          is_bigendian=0, step=pixels.shape[1] * 4, data=pixels.tobytes())
            image.header.stamp, image.header.frame_id = stamp, frame
            info.header.stamp, info.header.frame_id = stamp, frame
            pub_image.publish(image)
            pub_info.publish(info)

    def close(self) -> None:
        """Close the bag (after spinning ended: the context may be shut down already)."""
        if self._recorder is not None:
            self._recorder.close()
            counts = ", ".join(f"{t}: {n}" for t, n in sorted(self._recorder.counts.items()))
            shutdown_logger(self).info(f"recorded {counts or 'nothing'}")
            self._recorder = None


def main(args: Optional[list] = None) -> int:
    """Entry point of the carla_sim executable: runs until `duration` (exit_when_done; exit
    0) or a signal; 2 for invalid parameters. The shutdown is spin.run_node's (prompt, exit
    status 0, no traceback, whichever signal and whenever)."""
    return run_node(NODE_NAME, CarlaSimNode, SingleThreadedExecutor, args,
                    parameter_specs=CP.SIM_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
