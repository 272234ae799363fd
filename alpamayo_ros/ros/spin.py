"""Spinning a node until SIGINT/SIGTERM or rclpy.shutdown, with a clean exit.

rclpy's signal handler shuts the context down from the signal; an executor that is just
building its wait set then raises RCLError ("context is not valid") instead of
ExternalShutdownException. Both mean "shutting down" here, not a crash. The executor waits
at most _WAIT_S per cycle, so a shutdown that lands after its wake-up is seen too.

run_node owns the process's SIGINT and SIGTERM from its start to the process exit
(ros/shutdown.py; they stay ignored after it returns): the first signal shuts down through
rclpy, every further one is ignored, and the shutdown work after spinning (the node's
close(), destroying the node, rclpy.try_shutdown) is bounded by shutdown.SHUTDOWN_BOUND_S:
once the node, rclpy and DDS are shut down the process is left with os._exit(0) (a call
still running, which close() reports with False, is abandoned; the interpreter's
finalization is skipped), and a watchdog leaves the process (status 0, one line and every
thread's stack on stderr) when that work is still running at the bound. Exit status 0 and
no traceback, however many signals arrive.

That watchdog is a Python thread: it cannot run while the main thread is stuck in a C call
that holds the GIL, and rclpy's bindings hold it through destroying the node, shutting the
context down and joining rclpy's signal thread (a carla_sim stopped just as the loop began
stepping stayed after its "shutting down" line for 30 s, until killed: issue 20 item 10).
Behind it, shutdown.arm_hard_bound: faulthandler's C thread ends the process at
HARD_BOUND_S (1 s after the bound) with status 1, "Timeout (0:00:03)!" and every thread's
stack in the log. Not a clean shutdown, and reported as one that was not.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.signals import uninstall_signal_handlers

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.ros.shutdown import (SHUTDOWN_BOUND_S, ShutdownSignals, StartupInterrupted,
                                       arm_hard_bound, dump_stacks, hard_bound, leave_process,
                                       shutdown_logger)


# Longest wait of one executor cycle [s]. rclpy's signal thread first wakes the executors
# and only then shuts the context down; an executor that handled the wake-up and went back
# to waiting in between (the context still valid) waits for its next event: forever for a
# node with no wall-clock timer and no traffic, e.g. the route oracle once the simulator
# has ended (its only timer runs on the stopped sim clock). Waking up this often bounds
# the exit after such a signal.
_WAIT_S = 0.1


def spin_until_shutdown(executor: Executor, context=None) -> None:
    """Spin until the executor's context or the executor is shut down (Ctrl-C, SIGTERM,
    rclpy.shutdown(), executor.shutdown()), then return normally (also when a callback gave
    up its work for the shutdown with StartupInterrupted)."""
    try:
        # (the executor's own flag, as Executor.spin checks it)
        while executor.context.ok() and not executor._is_shutdown:
            executor.spin_once(timeout_sec=_WAIT_S)
    except (KeyboardInterrupt, ExternalShutdownException, StartupInterrupted):
        pass
    except Exception as exc:
        from rclpy._rclpy_pybind11 import RCLError
        if isinstance(exc, RCLError) and not rclpy.ok(context=context):
            return  # shutdown raced with the wait set creation
        raise


def take_pending(subscriptions: Sequence[Any]) -> int:
    """Run the callbacks of every message already delivered to these subscriptions, in the
    calling thread (a timer callback of the same single-threaded executor); returns how
    many. rclpy's executor takes one message per subscription per cycle and runs a timer
    that became ready before the messages still queued, so a tick whose executor lags
    behind the stream would see older inputs than the ones already delivered (in lockstep:
    a plan that differs from run to run). The executor later finds these messages taken
    and skips them."""
    from rclpy.exceptions import InvalidHandle

    count = 0
    for sub in subscriptions:
        while True:
            try:
                with sub.handle:
                    taken = sub.handle.take_message(sub.msg_type, sub.raw)
            except InvalidHandle:  # destroyed meanwhile (deactivate, shutdown)
                break
            if taken is None:
                break
            sub.callback(taken[0])
            count += 1
    return count


def run_node(name: str, make_node: Callable[[], Any], make_executor: Callable[[], Executor],
             args: Optional[list] = None, parameter_specs: Optional[Sequence] = None) -> int:
    """Whole life of a node executable: returns the exit status of a start that failed or
    was interrupted; after spinning it leaves the process with status 0 (module docstring).

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
        with hard_bound():
            executor.shutdown()
            rclpy.try_shutdown()
        signals.ignore_from_now()
        return 0
    node, status = _start(name, make_node, executor, signals)
    if node is None:
        with hard_bound():
            executor.shutdown()
            rclpy.try_shutdown()
        signals.ignore_from_now()
        return status
    logger = shutdown_logger(node)
    try:
        if not signals.received:
            spin_until_shutdown(executor)
    finally:
        # Armed first: any call below (the log line included) may be the one that hangs.
        # Not disarmed: the process leaves inside (leave_process), or the bound ends it.
        arm_hard_bound()
        started = time.monotonic()
        watchdog = _ShutdownWatchdog(name, started + SHUTDOWN_BOUND_S)
        logger.info(f"shutting down ({signals.first or 'rclpy shutdown'})")
        close = getattr(node, "close", None)
        if close is not None:
            close()  # False: a call was abandoned; the exit below does not wait for it
        executor.shutdown()
        # rclpy's signal thread may still be shutting the middleware down (rcl marks the
        # context invalid before rmw_shutdown runs); destroying the node meanwhile raced
        # with it: a shutdown stuck for more than 20 s, 2 s stalls, a SIGSEGV. Uninstalling
        # rclpy's handlers joins that thread (our handlers take the signals again).
        uninstall_signal_handlers()
        node.destroy_node()
        rclpy.try_shutdown()
        signals.ignore_from_now()
        watchdog.stop()
    ignored = len(signals.received) - 1
    logger.info(f"shut down in {time.monotonic() - started:.2f} s"
                + (f"; {ignored} further signal(s) ignored" if ignored > 0 else ""))
    # Everything of the node, rclpy and DDS (its shared-memory files included) is shut down:
    # the interpreter's own finalization would only cost time (0.5-1 s on the loaded 2-core
    # machine, more under more load) and would wait for an abandoned call or a stray thread.
    leave_process(0)
    return 0  # not reached


class _ShutdownWatchdog:
    """Leaves the process with status 0 (saying so on stderr, with every thread's stack)
    unless stop() is called by `deadline` (time.monotonic()). The shutdown work is rclpy's
    and DDS's (destroying entities, shutting the context down) and has no timeout of its
    own; whatever holds it (seen: a race with rclpy's signal thread, now avoided) must not
    hold the exit of a process asked to stop. Needs the GIL: the module docstring has the
    bound behind it."""

    def __init__(self, name: str, deadline: float) -> None:
        self._name = name
        self._deadline = deadline
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="shutdown_watchdog",
                                        daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        if not self._done.wait(max(self._deadline - time.monotonic(), 0.0)):
            # os.write: no lock that a stuck main thread could hold.
            os.write(2, f"{self._name}: shutdown still running after {SHUTDOWN_BOUND_S:g} s: "
                        f"leaving the process\n".encode())
            dump_stacks()  # where it is stuck
            leave_process(0)

    def stop(self) -> None:
        """The shutdown work is done: the watchdog ends (and is no stray thread)."""
        self._done.set()
        self._thread.join()


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
