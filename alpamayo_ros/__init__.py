"""alpamayo_ros: run NVIDIA Alpamayo-R1 as a ROS 2 planner.

Layers (see docs/design.md):
  core/   ROS-free and torch-free: buffers, time alignment, geometry, metrics.
  model/  the model runtime (torch + transformers); sees only plain numpy structs.
  ros/    thin rclpy adapters: message conversion, parameters, nodes.
  tools/  replay, synthetic scenarios, demo, CARLA glue.
"""
# The generated interfaces (alpamayo_ros.msg) are installed by rosidl into the install
# space, while a developer may import the hand-written modules from the source tree.
# extend_path lets both halves of the package be found wherever they live on sys.path.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
