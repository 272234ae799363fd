"""Command-line tools only: bag replay (and on Ray), regression checks, scenario bags,
closed-loop runs. The libraries they use live in bag/, replay/, sim/ and testbed/.

Import-light on purpose: importing this package imports neither torch nor rclpy.
"""
