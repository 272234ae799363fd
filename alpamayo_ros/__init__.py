"""alpamayo_ros: run NVIDIA Alpamayo-R1 as a ROS 2 planner.

Layers, lowest first (see docs/design.md; test/test_layers.py checks the imports):
  core/     ROS-free and torch-free: inputs, time alignment, geometry, planning, outputs.
  control/  plan tracking (numpy/scipy).
  bag/      ROS 2 bags without ROS (rosbags).
  model/    the model runtime (torch + transformers); sees only plain numpy structs.
  sim/      scripted scenarios, the route world, the vehicle model (numpy/scipy).
  replay/   the stepped-time replay of bags through the planner core.
  ros/      thin rclpy adapters and the product nodes (planner, controller).
  testbed/  the stand-in nodes for demo, CI and closed-loop runs.
  tools/    the command-line tools.
"""
# The generated interfaces (alpamayo_ros.msg) are installed by rosidl into the install
# space, while a developer may import the hand-written modules from the source tree.
# extend_path lets both halves of the package be found wherever they live on sys.path.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
