"""Spinning a node until SIGINT/SIGTERM or rclpy.shutdown, with a clean exit.

rclpy's signal handler shuts the context down from the signal; an executor that is just
building its wait set then raises RCLError ("context is not valid") instead of
ExternalShutdownException. Both mean "shutting down" here, not a crash.
"""
from __future__ import annotations

import rclpy
from rclpy.executors import Executor, ExternalShutdownException


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
