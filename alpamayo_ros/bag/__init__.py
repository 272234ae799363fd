"""Reading and writing ROS 2 bags without ROS (rosbags): this package's message types
registered, messages <-> core types, damaged mcap files read front to back.

Import-light on purpose: importing this package imports neither rosbags nor rclpy.
"""
