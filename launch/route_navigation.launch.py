"""Launch the route navigation node: navigation instructions for an Alpamayo 1.5 planner.

    ros2 launch alpamayo_ros route_navigation.launch.py route_topic:=/my/route
    # On an Autoware vehicle: from the behaviour planner's path (docs/autoware.md)
    ros2 launch alpamayo_ros route_navigation.launch.py preset:=autoware

Parameters: config/route_navigation.yaml, then config/<preset>_route_navigation.yaml,
then the topic arguments that are set (docs/navigation.md). launch/launch_ros are
imported inside generate_launch_description, so the constants can be read where they are
not installed.
"""
PACKAGE = "alpamayo_ros"
EXECUTABLE = "route_navigation"
NODE_NAME = "alpamayo_route_navigation"
PRESETS = ("", "autoware")

# name -> (default, description)
LAUNCH_ARGUMENTS = {
    "preset": ("", "Parameters applied over route_navigation.yaml: autoware = "
                   "config/autoware_route_navigation.yaml"),
    "namespace": ("", "Node namespace (the planner's, so alpamayo/navigation meets it)"),
    "use_sim_time": ("false", "Use /clock"),
    "route_topic": ("", "Route topic; empty = as the parameter files"),
    "odometry_topic": ("", "Odometry topic; empty = as the parameter files"),
    "log_level": ("info", "Log level"),
}


def _node(context):
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    def arg(name):
        return context.perform_substitution(LaunchConfiguration(name))

    preset = arg("preset")
    if preset not in PRESETS:
        raise ValueError(f"preset: have {preset!r}, need one of {', '.join(PRESETS[1:])} "
                         "or empty")
    if arg("use_sim_time") not in ("true", "false"):
        raise ValueError(f"use_sim_time: have {arg('use_sim_time')!r}, need true or false")
    share = FindPackageShare(PACKAGE).perform(context) + "/config/"
    files = [share + "route_navigation.yaml"]
    if preset:
        files.append(share + f"{preset}_route_navigation.yaml")
    overrides = {"use_sim_time": arg("use_sim_time") == "true"}
    overrides.update({name: arg(name) for name in ("route_topic", "odometry_topic")
                      if arg(name)})
    return [Node(package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME,
                 namespace=arg("namespace"), parameters=files + [overrides],
                 ros_arguments=["--log-level", arg("log_level")], output="screen")]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_node)])
