"""Spinning a node until SIGINT/SIGTERM or rclpy.shutdown, with a clean exit.

rclpy's signal handler shuts the context down from the signal; an executor that is just
building its wait set then raises RCLError ("context is not valid") instead of
ExternalShutdownException. Both mean "shutting down" here, not a crash.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Optional

import rclpy
from rclpy.executors import Executor, ExternalShutdownException

from alpamayo_ros.core.errors import ConfigError


def spin_until_shutdown(executor: Executor, context=None) -> None:
    """executor.spin() that returns normally on Ctrl-C, SIGTERM or rclpy.shutdown()."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:
        from rclpy._rclpy_pybind11 import RCLError
        if isinstance(exc, RCLError) and not rclpy.ok(context=context):
            return  # shutdown raced with the wait set creation
        raise


def run_node(name: str, make_node: Callable[[], Any], make_executor: Callable[[], Executor],
             args: Optional[list] = None) -> int:
    """Whole life of a node executable; returns the process exit status.

    2: malformed --ros-args or a ConfigError while building the node (one readable line on
    stderr, no traceback); 0: clean shutdown. The node's optional close() runs before it
    is destroyed.
    """
    try:
        rclpy.init(args=args)
    except Exception as exc:  # rcl rejects malformed --ros-args (remaps, params files)
        print(f"{name}: invalid ROS arguments: {exc}", file=sys.stderr)
        return 2
    try:
        node = make_node()
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = make_executor()
    executor.add_node(node)
    try:
        spin_until_shutdown(executor)
    finally:
        close = getattr(node, "close", None)
        if close is not None:
            close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
