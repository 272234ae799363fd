"""Closed loop against the CI simulator: carla_sim + planner (or route oracle) + controller.

    ros2 launch alpamayo_ros sim_closed_loop.launch.py planner:=constant_velocity
    ros2 launch alpamayo_ros sim_closed_loop.launch.py planner:=alpamayo \
        checkpoint_dir:=/models/Alpamayo-R1-10B device:=cuda

The processes, parameter files and overrides are alpamayo_ros.testbed.closed_loop_stack's
sim_stack(), which the closed-loop tool (alpamayo-closed-loop) and the tests run as
processes without ros2 launch. launch/launch_ros are imported inside
generate_launch_description, so the constants can be read where they are not installed.
"""
PACKAGE = "alpamayo_ros"

# name -> (default, description)
LAUNCH_ARGUMENTS = {
    "planner": ("constant_velocity", "route_oracle | constant_velocity | alpamayo"),
    "checkpoint_dir": ("", "Alpamayo-R1 checkpoint (planner:=alpamayo)"),
    "device": ("cpu", "Torch device of planner:=alpamayo"),
    "plan_rate": ("2.0", "Planning rate [Hz] (the controller's lockstep period follows)"),
    "mode": ("lockstep", "lockstep | realtime"),
    "duration": ("0.0", "Sim seconds to run (0 = until stopped)"),
    "route_file": ("", "Route JSON; empty = the default route"),
    "initial_speed": ("0.0", "Start speed [m/s]"),
}


def _nodes(context):
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    from alpamayo_ros.testbed.closed_loop_stack import sim_stack

    def arg(name):
        return context.perform_substitution(LaunchConfiguration(name))

    share = FindPackageShare(PACKAGE).perform(context) + "/config/"
    specs = sim_stack(arg("planner"), rate_hz=float(arg("plan_rate")),
                      lockstep=arg("mode") == "lockstep", checkpoint=arg("checkpoint_dir"),
                      device=arg("device"),
                      sim={"duration": float(arg("duration")), "route_file": arg("route_file"),
                           "initial_speed": float(arg("initial_speed")),
                           "exit_when_done": False})
    return [Node(package=PACKAGE, executable=spec.executable, name=spec.node_name,
                 parameters=[share + f for f in spec.params_files] + [dict(spec.overrides)],
                 output="screen", emulate_tty=True) for spec in specs]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)])
