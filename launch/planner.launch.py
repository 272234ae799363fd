"""Launch the Alpamayo-R1 planner node (a lifecycle node that configures and activates
itself unless autostart:=false).

    ros2 launch alpamayo_ros planner.launch.py checkpoint_dir:=/models/Alpamayo-R1-10B \\
        namespace:=ego camera_0_topic:=/sensing/camera/cross_left/image_raw \\
        odometry_topic:=/localization/kinematic_state use_sim_time:=true
    # CPU-only machine, no weights: the kinematic dry run
    ros2 launch alpamayo_ros planner.launch.py backend:=constant_velocity device:=cpu
    # On an Autoware vehicle (config/autoware.yaml over planner.yaml; docs/autoware.md)
    ros2 launch alpamayo_ros planner.launch.py preset:=autoware checkpoint_dir:=...

Arguments: see alpamayo_ros/ros/launch_support.py (LAUNCH_ARGUMENTS), which also holds the
rules: an empty argument passes nothing (the params file or a parent launch file's
SetParameter decides), a preset's parameters apply over the params file, topic arguments
remap the topic the params file (or preset) configures, and values are checked like
parameters. The Node action is plain to `ros2 launch --print`; its
parameter overrides and remaps are substitutions evaluated from the arguments.

launch/launch_ros are imported inside generate_launch_description, so this file's
constants can be read (and tested) where ROS 2 launch is not installed.
"""
PACKAGE = "alpamayo_ros"
EXECUTABLE = "planner_node"
NODE_NAME = "alpamayo_planner"


def generate_launch_description():
    import tempfile

    import yaml
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument
    from launch.conditions import IfCondition, UnlessCondition
    from launch.substitution import Substitution
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node

    from alpamayo_ros.ros import launch_support as support

    def argument_values(context) -> dict:
        return {a.name: context.launch_configurations.get(a.name, a.default)
                for a in support.LAUNCH_ARGUMENTS}

    class ParamsFile(Substitution):
        """params_file, or the installed config/planner.yaml when it is empty."""

        def describe(self) -> str:
            return "params_file (default: share/alpamayo_ros/config/planner.yaml)"

        def perform(self, context) -> str:
            given = context.launch_configurations.get("params_file", "")
            if given:
                return given
            from ament_index_python.packages import get_package_share_directory
            return f"{get_package_share_directory(PACKAGE)}/config/planner.yaml"

    class Overrides(Substitution):
        """A parameter file with only the preset's parameters and those of the arguments
        the user set."""

        def describe(self) -> str:
            return ("parameters of the preset and the set launch arguments "
                    "(launch_support.parameter_overrides)")

        def perform(self, context) -> str:
            overrides = support.parameter_overrides(argument_values(context))
            with tempfile.NamedTemporaryFile("w", prefix="alpamayo_launch_", suffix=".yaml",
                                             delete=False) as f:
                yaml.safe_dump({"/**": {"ros__parameters": overrides}}, f)
            return f.name

    class RemapEnd(Substitution):
        """One end (0: configured topic, 1: target) of a topic argument's remap."""

        def __init__(self, argument: str, end: int) -> None:
            super().__init__()
            self.argument, self.end = argument, end

        def describe(self) -> str:
            return f"{'configured topic' if self.end == 0 else 'target'} of {self.argument}"

        def perform(self, context) -> str:
            params_file = ParamsFile().perform(context)
            return support.remap_pair(params_file, argument_values(context),
                                      self.argument)[self.end]

    topic_arguments = support.CAMERA_TOPIC_ARGUMENTS + (support.ODOMETRY_TOPIC_ARGUMENT,)
    node_kwargs = dict(
        package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        parameters=[ParamsFile(), Overrides()],
        remappings=[(RemapEnd(a, 0), RemapEnd(a, 1)) for a in topic_arguments],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
        # No emulate_tty: rcutils colours only a terminal, so redirected logs stay plain.
        output="screen")
    managed = LaunchConfiguration("managed")
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                               **({"choices": list(a.choices)} if a.choices else {}))
         for a in support.LAUNCH_ARGUMENTS]
        + [Node(condition=UnlessCondition(managed), **node_kwargs),
           LifecycleNode(condition=IfCondition(managed), **node_kwargs)])
