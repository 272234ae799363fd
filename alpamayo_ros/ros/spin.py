"""Spinning a node until SIGINT/SIGTERM or rclpy.shutdown, with a clean exit.

rclpy's signal handler shuts the context down from the signal; an executor that is just
building its wait set then raises RCLError ("context is not valid") instead of
ExternalShutdownException. Both mean "shutting down" here, not a crash.

run_node owns the process's SIGINT and SIGTERM from its start to the process exit
(ros/shutdown.py; they stay ignored after it returns): the first signal shuts down through
rclpy, every further one is ignored, and the shutdown work after spinning (the node's
close(), destroying the node, rclpy.try_shutdown) is bounded by shutdown.SHUTDOWN_BOUND_S:
a node whose close() reports a call still running (False) is left behind with os._exit(0)
once the node and rclpy are shut down. Exit status 0 and no traceback, however many
signals arrive.
"""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import rclpy
from rclpy.executors import Executor, ExternalShutdownException

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.ros.shutdown import (ShutdownSignals, StartupInterrupted, leave_process,
                                       shutdown_logger, stray_threads)


def spin_until_shutdown(executor: Executor, context=None) -> None:
    """executor.spin() that returns normally on Ctrl-C, SIGTERM or rclpy.shutdown() (also
    when a callback gave up its work for the shutdown with StartupInterrupted)."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException, StartupInterrupted):
        pass
    except Exception as exc:
        from rclpy._rclpy_pybind11 import RCLError
        if isinstance(exc, RCLError) and not rclpy.ok(context=context):
            return  # shutdown raced with the wait set creation
        raise


def run_node(name: str, make_node: Callable[[], Any], make_executor: Callable[[], Executor],
             args: Optional[list] = None, parameter_specs: Optional[Sequence] = None) -> int:
    """Whole life of a node executable; returns the process exit status (or leaves the
    process with status 0 when a thread is still running after the shutdown).

    2: malformed --ros-args, a parameter file or ``-p`` with unknown names, or a ConfigError while
    building the node (one readable line on stderr, no traceback); 0: clean shutdown, also
    after a signal during start-up. parameter_specs: the node's schema table; its
    --params-file files and -p names are then checked (and the files normalised) first
    (checked_arguments). The node's optional close() runs before it is
    destroyed; it returns False when it had to abandon work still running (see the module
    docstring).
    """
    signals = ShutdownSignals()
    signals.install()  # before rclpy.init, so rclpy's handlers chain to these
    argv = list(sys.argv if args is None else args)
    if parameter_specs is not None:
        argv = checked_arguments(name, argv, parameter_specs)
        if argv is None:
            return 2
    # Signals wait until rclpy and the executor are whole: a context shut down under the
    # executor's construction leaves a half-built executor behind (RCLError, then errors
    # from its __del__).
    with signals.blocked():
        try:
            rclpy.init(args=argv)
        except Exception as exc:  # rcl rejects malformed --ros-args (remaps, params files)
            print(f"{name}: invalid ROS arguments: {exc}", file=sys.stderr)
            return 2
        finally:
            remove_normalised_files(args if args is not None else sys.argv, argv)
        executor = make_executor()
    if signals.received:  # a signal before rclpy's handlers were in place, or just now
        executor.shutdown()
        rclpy.try_shutdown()
        signals.ignore_from_now()
        return 0
    node, status = _start(name, make_node, executor, signals)
    if node is None:
        executor.shutdown()
        rclpy.try_shutdown()
        signals.ignore_from_now()
        return status
    logger = shutdown_logger(node)
    finished = True
    try:
        if not signals.received:
            spin_until_shutdown(executor)
    finally:
        started = time.monotonic()
        logger.info(f"shutting down ({signals.first or 'rclpy shutdown'})")
        close = getattr(node, "close", None)
        if close is not None:
            finished = close() is not False
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        signals.ignore_from_now()
    ignored = len(signals.received) - 1
    logger.info(f"shut down in {time.monotonic() - started:.2f} s"
                + (f"; {ignored} further signal(s) ignored" if ignored > 0 else ""))
    if not finished or stray_threads():
        leave_process(0)  # an abandoned call (or a stray thread) must not hold the exit
    return 0


def _start(name: str, make_node: Callable[[], Any], executor: Executor,
           signals: ShutdownSignals) -> tuple[Any, int]:
    """(node added to the executor, 0), or (None, exit status) after printing one line: 2
    for a ConfigError or an invalid ROS name, 0 when a signal interrupted the start (e.g. a
    model loading for minutes). Other exceptions are bugs and propagate with their
    traceback."""
    from rclpy.exceptions import NameValidationException

    node = None
    try:
        with signals.interrupting():
            node = make_node()
            executor.add_node(node)
        return node, 0
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return None, 2
    except NameValidationException as exc:  # a name the node did not check itself
        print(f"{name}: configuration error: {' '.join(str(exc).split())}", file=sys.stderr)
        return None, 2
    except StartupInterrupted:
        pass
    except Exception:
        if not signals.received:
            raise
        # rclpy shut the context down under the node's construction.
    finally:
        if node is None and signals.received:
            # The start is abandoned: rclpy objects left half-built by the interruption
            # must not print errors from their __del__ on the way out.
            sys.unraisablehook = lambda unraisable: None
    print(f"{name}: {signals.first} during start-up: exiting", file=sys.stderr)
    if node is not None:
        with contextlib.suppress(Exception):  # leaving anyway
            node.destroy_node()
    return None, 0


def checked_arguments(name: str, argv: Sequence[str], specs: Sequence
                      ) -> Optional[list]:
    """argv with its parameter files checked and normalised and its ``-p`` names checked
    against the node's schema table `specs` (ros.params); None after printing the problem
    on one line (exit status 2)."""
    from alpamayo_ros.ros.params import check_parameter_overrides, normalise_parameter_files
    try:
        check_parameter_overrides(argv, name, specs)
        return normalise_parameter_files(argv, name, specs)
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return None


def remove_normalised_files(original: Sequence[str], used: Sequence[str]) -> None:
    """Delete the normalised copies of parameter files once rcl has read them."""
    for before, after in zip(original, used):
        if before != after and Path(after).name.endswith(".yaml"):
            Path(after).unlink(missing_ok=True)
