"""Spinning a node until SIGINT/SIGTERM or rclpy.shutdown, with a clean exit.

rclpy's signal handler shuts the context down from the signal; an executor that is just
building its wait set then raises RCLError ("context is not valid") instead of
ExternalShutdownException. Both mean "shutting down" here, not a crash.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

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
             args: Optional[list] = None, parameter_specs: Optional[Sequence] = None) -> int:
    """Whole life of a node executable; returns the process exit status.

    2: malformed --ros-args, a parameter file with unknown names, or a ConfigError while
    building the node (one readable line on stderr, no traceback); 0: clean shutdown.
    parameter_specs: the node's schema table; its --params-file files are then checked and
    normalised first (ros.params.normalise_parameter_files). The node's optional close()
    runs before it is destroyed.
    """
    argv = list(sys.argv if args is None else args)
    if parameter_specs is not None:
        from alpamayo_ros.ros.params import normalise_parameter_files
        try:
            argv = normalise_parameter_files(argv, name, parameter_specs)
        except ConfigError as exc:
            print(f"{name}: configuration error: {exc}", file=sys.stderr)
            return 2
    try:
        rclpy.init(args=argv)
    except Exception as exc:  # rcl rejects malformed --ros-args (remaps, params files)
        print(f"{name}: invalid ROS arguments: {exc}", file=sys.stderr)
        return 2
    finally:
        _remove_normalised_files(args if args is not None else sys.argv, argv)
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


def _remove_normalised_files(original: Sequence[str], used: Sequence[str]) -> None:
    """Delete the normalised copies of parameter files once rcl has read them."""
    for before, after in zip(original, used):
        if before != after and Path(after).name.endswith(".yaml"):
            Path(after).unlink(missing_ok=True)
