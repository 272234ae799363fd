"""Command-line tools: bag replay, regression checks, synthetic scenarios, bag writing, demo.

Import-light on purpose: importing this package imports neither torch nor rclpy.
"""
