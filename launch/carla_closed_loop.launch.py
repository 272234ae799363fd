"""Closed loop in CARLA through carla-ros-bridge: bridge + ego spawn + planner + controller.

    # CARLA server running (./CarlaUE4.sh -RenderOffScreen), carla-ros-bridge installed
    ros2 launch alpamayo_ros carla_closed_loop.launch.py \
        checkpoint_dir:=/models/Alpamayo-R1-10B processor_dir:=/models/Qwen3-VL-8B-Instruct

Starts carla_ros_bridge's carla_ros_bridge.launch.py in synchronous mode with
fixed_delta_seconds and synchronous_mode_wait_for_vehicle_control_command, then
carla_spawn_objects with config/carla_objects.json (vehicle.lincoln.mkz_2017 as ego_vehicle
with the 4 Alpamayo cameras at 1920x1080 at the rig's poses and FOVs, and the odometry
pseudo sensor, the collision and lane invasion sensors and the actor list for the scores),
the planner on the bridge's topics with the blueprint's rear-axle offset
(config/planner.yaml + config/carla_planner.yaml) and the controller
(config/controller.yaml). Planner and controller are closed_loop_stack.carla_stack(), the
same specs the CI closed loop runs (docs/closed_loop.md). Not tested here: no CARLA server
is available on the development machines; see docs/closed_loop.md.
"""
PACKAGE = "alpamayo_ros"
BRIDGE_PACKAGE = "carla_ros_bridge"
SPAWN_PACKAGE = "carla_spawn_objects"

LAUNCH_ARGUMENTS = {
    "host": ("localhost", "CARLA server host"),
    "port": ("2000", "CARLA server port"),
    "town": ("Town04", "CARLA town (or an .xodr file)"),
    "timeout": ("10", "Seconds to wait for the CARLA server"),
    "fixed_delta_seconds": ("0.05", "Simulation step [s] of synchronous mode"),
    "spawn_point": ("", "Ego spawn point 'x,y,z,roll,pitch,yaw' (ROS convention); empty = "
                        "the objects file's or a random one"),
    "objects_file": ("", "objects.json; empty = share/alpamayo_ros/config/carla_objects.json"),
    "checkpoint_dir": ("", "Alpamayo-R1 checkpoint directory"),
    "processor_dir": ("", "Local Qwen3-VL processor directory (empty = from the checkpoint)"),
    "device": ("cuda", "Torch device of the planner"),
    "plan_rate": ("2.0", "Planning rate [Hz] (the controller's lockstep period follows)"),
}

# The bridge's launch arguments this file sets (synchronous mode, waiting for the command).
BRIDGE_ARGUMENTS = {
    "synchronous_mode": "True",
    "synchronous_mode_wait_for_vehicle_control_command": "True",
    "passive": "False",
    "register_all_sensors": "False",
    "ego_vehicle_role_name": "ego_vehicle",
}


def _actions(context):
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    from alpamayo_ros.testbed.closed_loop_stack import carla_stack

    def arg(name):
        return context.perform_substitution(LaunchConfiguration(name))

    share = FindPackageShare(PACKAGE).perform(context) + "/config/"
    bridge = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(FindPackageShare(BRIDGE_PACKAGE).perform(context)
                                      + "/carla_ros_bridge.launch.py"),
        launch_arguments={**BRIDGE_ARGUMENTS, "host": arg("host"), "port": arg("port"),
                          "town": arg("town"), "timeout": arg("timeout"),
                          "fixed_delta_seconds": arg("fixed_delta_seconds")}.items())
    spawn = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(FindPackageShare(SPAWN_PACKAGE).perform(context)
                                      + "/carla_spawn_objects.launch.py"),
        launch_arguments={"objects_definition_file": arg("objects_file")
                          or share + "carla_objects.json",
                          "spawn_point_ego_vehicle": arg("spawn_point")}.items())
    nodes = [Node(package=PACKAGE, executable=spec.executable, name=spec.node_name,
                  parameters=[share + f for f in spec.params_files] + [dict(spec.overrides)],
                  output="screen", emulate_tty=True)
             for spec in carla_stack(rate_hz=float(arg("plan_rate")),
                                     checkpoint=arg("checkpoint_dir"), device=arg("device"),
                                     processor=arg("processor_dir"))]
    return [bridge, spawn, *nodes]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_actions)])
