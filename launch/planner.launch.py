"""Launch the Alpamayo-R1 planner node.

    ros2 launch alpamayo_ros planner.launch.py checkpoint_dir:=/models/Alpamayo-R1-10B \
        namespace:=ego camera_0_topic:=/sensing/camera/cross_left/image_raw \
        odometry_topic:=/localization/kinematic_state use_sim_time:=true

Arguments (defaults in LAUNCH_ARGUMENTS below):
  params_file      parameters (default: share/alpamayo_ros/config/planner.yaml)
  namespace        namespace of the node and its relative topics
  use_sim_time     follow /clock
  checkpoint_dir   overrides model.checkpoint_dir of the params file when not empty
  processor_dir    overrides model.processor_dir of the params file when not empty
  camera_<k>_topic the topic camera slot k (0..3) is remapped to (its message type
                   follows camera_transports of the params file)
  odometry_topic   the topic the odometry input is remapped to

launch/launch_ros are imported inside generate_launch_description, so the constants can be
read (and tested) where ROS 2 launch is not installed.
"""
PACKAGE = "alpamayo_ros"
EXECUTABLE = "planner_node"
NODE_NAME = "alpamayo_planner"

# The planner's own (relative) input topic names, as in config/planner.yaml.
CAMERA_TOPICS = (
    "cameras/cross_left_120fov/image",
    "cameras/front_wide_120fov/image",
    "cameras/cross_right_120fov/image",
    "cameras/front_tele_30fov/image",
)
ODOMETRY_TOPIC = "odometry"

# name -> (default, description); params_file's default is resolved at launch time.
LAUNCH_ARGUMENTS = {
    "params_file": ("", "Parameter file; empty = share/alpamayo_ros/config/planner.yaml"),
    "namespace": ("", "Namespace of the planner node and its relative topics"),
    "use_sim_time": ("false", "Use /clock (bag replay, simulators)"),
    "checkpoint_dir": ("", "Alpamayo-R1 checkpoint; empty = model.checkpoint_dir of the "
                           "params file"),
    "processor_dir": ("", "Local Qwen3-VL base-VLM/processor directory; empty = "
                          "model.processor_dir of the params file"),
    **{f"camera_{k}_topic": (topic, f"Topic of camera slot {k} (remap of {topic})")
       for k, topic in enumerate(CAMERA_TOPICS)},
    "odometry_topic": (ODOMETRY_TOPIC, f"nav_msgs/Odometry topic (remap of {ODOMETRY_TOPIC})"),
}

# (planner topic, launch argument naming its target)
REMAPPINGS = tuple((topic, f"camera_{k}_topic") for k, topic in enumerate(CAMERA_TOPICS)) + (
    (ODOMETRY_TOPIC, "odometry_topic"),)


def _planner_node(context):
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    def arg(name):
        return context.perform_substitution(_config(name))

    params_file = arg("params_file") or str(
        FindPackageShare(PACKAGE).perform(context) + "/config/planner.yaml")
    overrides = {"use_sim_time": arg("use_sim_time").lower() in ("true", "1", "yes")}
    for launch_arg, parameter in (("checkpoint_dir", "model.checkpoint_dir"),
                                  ("processor_dir", "model.processor_dir")):
        if arg(launch_arg):
            overrides[parameter] = arg(launch_arg)
    return [Node(
        package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME, namespace=arg("namespace"),
        parameters=[params_file, overrides],
        remappings=[(src, arg(target)) for src, target in REMAPPINGS],
        output="screen", emulate_tty=True)]


def _config(name):
    from launch.substitutions import LaunchConfiguration
    return LaunchConfiguration(name)


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_planner_node)])
