"""rclpy adapters (parameters, message conversion, diagnostics, process lifecycle) and the
product nodes: the planner and the controller (the stand-ins are in testbed/).

Import-light on purpose: importing this package pulls in neither rclpy nor torch; each
node module imports what it needs. The ROS layer never imports torch directly; it gets a
PlannerModel from alpamayo_ros.model.backends (model_loader.py).
"""
