"""Prompt, clean shutdown of a node process: signals, the worker thread, the publish gate.

Requirement: SIGINT or SIGTERM, once or many times, even during a model call that cannot be
interrupted, ends the process within SHUTDOWN_BOUND_S with exit status 0, no traceback,
and nothing published after the shutdown began (docs/design.md, "Shutdown", has the
measured exit times). The pieces, used by
spin.run_node and by nodes that run work off the executor (planner_node):

* ShutdownSignals: Python handlers for SIGINT and SIGTERM installed *before* rclpy.init.
  rclpy installs C-level handlers at init that shut its contexts down (which ends
  executor.spin) and then call the handler they replaced (rclpy of Kilted does). With
  Python's default SIGINT handler that call raises KeyboardInterrupt wherever the main
  thread happens to be, e.g. inside close() while it waits for the model call:
  the traceback and the exit by signal seen on a second Ctrl-C. These handlers only record
  the signal, so the first one shuts down through rclpy and every further one changes
  nothing. rclpy's try_shutdown re-installs them (the handlers it had replaced); after it
  the signals are ignored outright until the process ends (ignore_from_now). Around
  rclpy.init and the executor's creation they are held back (blocked(): a context shut
  down under the executor's construction leaves a half-built executor); while the node is
  built (interrupting(): a model may load for minutes) the first one raises
  StartupInterrupted so the start is abandoned at once.
* WorkerThread: one *daemon* thread running submitted calls in order. A
  concurrent.futures pool joins its threads at interpreter exit (atexit), so a running
  model call held the exit for as long as it ran. stop(timeout) waits a
  bounded time and reports whether the thread finished; a call still running is abandoned.
* PublishGate: a lock plus a closed flag. Publishing happens inside `gate.open()` and
  only when it yields True; `close()` takes the lock, so once it returns no publish is in
  progress and none can start: nothing is published after the shutdown began, and the
  node can be destroyed under an abandoned call without a publish racing the destruction.
* GatedCallbacks: a node mixin; no timer or subscription callback runs once destroy_node()
  began, and destroy_node() waits (bounded) for the ones running (an executor in another
  thread, as in tests, would otherwise run one on destroyed handles: InvalidHandle).
* leave_process: flush Python's streams and logging handlers, then os._exit. Used only
  when a thread is still running after the node and rclpy are shut down: a normal exit
  would wait for a non-daemon thread, or finalise the interpreter under a daemon thread
  that is inside a C extension (torch) and crash there.
"""
from __future__ import annotations

import ctypes
import faulthandler
import functools
import logging
import os
import queue
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

# Bound on the shutdown work, from the end of spinning to the process exit [s].
SHUTDOWN_BOUND_S = 2.0
# Hard bound on the same work [s]: past it the process is ended from a C thread with status 1
# (hard_bound), whatever the main thread holds.
HARD_BOUND_S = SHUTDOWN_BOUND_S + 1.0
# How long a node's close() waits for a running worker call before abandoning it [s]; the
# rest of SHUTDOWN_BOUND_S is for destroying the node and shutting rclpy down.
WORKER_STOP_TIMEOUT_S = 1.5

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StartupInterrupted(BaseException):
    """Raised in the main thread by the first signal inside ShutdownSignals.interrupting(),
    and by a node's callback that abandons its work (a configure) because a signal shut
    rclpy down meanwhile; spin.run_node then ends the process cleanly.

    A BaseException, like KeyboardInterrupt, so library code that catches Exception while
    loading a model (or rclpy around a callback) does not swallow it."""


class ShutdownSignals:
    """Records SIGINT/SIGTERM instead of raising (see the module docstring).

    install() must run in the main thread before rclpy.init; `received` lists the names of
    the signals in arrival order. Inside `interrupting()` (building the node: loading a
    model may take minutes and publishes nothing) the first signal raises
    StartupInterrupted instead, so the start is abandoned at once.
    """

    def __init__(self) -> None:
        self.received: list[str] = []
        self.installed = False
        self._raise = False

    def install(self) -> bool:
        """Install the handlers; False (nothing installed) outside the main thread, where
        Python cannot set signal handlers."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in SHUTDOWN_SIGNALS:
            signal.signal(sig, self._handle)
        self.installed = True
        return True

    @contextmanager
    def blocked(self) -> Iterator[None]:
        """A block during which SIGINT/SIGTERM stay pending (delivered when it ends).

        Blocks them in the calling thread and in the threads started inside the block
        (DDS's, which keep them blocked), so it holds them back only where no other thread
        could take them: in run_node around rclpy.init, when the main thread is the only
        one."""
        if not self.installed:
            yield
            return
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    @contextmanager
    def interrupting(self) -> Iterator[None]:
        """A block that the first signal aborts with StartupInterrupted."""
        self._raise = True
        try:
            yield
        finally:
            self._raise = False

    def _handle(self, signum: int, frame: Any) -> None:
        # Runs in the main thread between bytecodes: no printing here (a write to a stream
        # the main thread is writing to raises "reentrant call").
        self.received.append(signal.Signals(signum).name)
        if self._raise:
            self._raise = False
            raise StartupInterrupted(self.received[-1])

    def ignore_from_now(self) -> None:
        """Ignore SIGINT/SIGTERM at the OS level for the rest of the process (after
        rclpy.try_shutdown, which puts back the handlers it replaced). Python's own
        finalisation resets Python-function handlers to the default, under which a signal
        in the last milliseconds of the exit would kill the process (status -2); ignored
        signals it leaves alone."""
        if self.installed:
            for sig in SHUTDOWN_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    @property
    def first(self) -> Optional[str]:
        """Name of the first signal received, or None."""
        return self.received[0] if self.received else None


class WorkerThread:
    """One daemon thread that runs submitted calls one after another.

    A call that raises is reported on stderr with its traceback and the thread goes on.
    After stop(), submit() raises RuntimeError and calls still queued are dropped.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, *args: Any) -> None:
        """Queue fn(*args); RuntimeError once the worker is stopped."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("worker thread stopped")
            self._queue.put((fn, args))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stopped:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # the worker outlives a failing call
                traceback.print_exc()

    def stop(self, timeout: float) -> bool:
        """Stop taking calls, drop queued ones, wait up to `timeout` s for the running one;
        True if the thread has ended (False: a call is still running and is abandoned)."""
        with self._lock:
            self._stopped = True
            self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


class PublishGate:
    """Lets publishing happen only before close(), never concurrently with it.

        with gate.open() as allowed:
            if allowed:
                publisher.publish(msg)
    """

    def __init__(self, closed: bool = False) -> None:
        self._lock = threading.Lock()
        self._closed = closed

    @contextmanager
    def open(self) -> Iterator[bool]:
        with self._lock:
            yield not self._closed

    def close(self) -> None:
        """After this returns no `open()` block is running and every later one yields False."""
        with self._lock:
            self._closed = True

    def reopen(self) -> None:
        """Let publishing happen again (a lifecycle node activated after a deactivate)."""
        with self._lock:
            self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed


class GatedCallbacks:
    """Mixin for rclpy nodes (put it before Node or LifecycleNode): no callback of the node's
    timers and subscriptions (rclpy's /clock subscription of sim time included) runs once
    destroy_node() began, and destroy_node() first waits, at most SHUTDOWN_BOUND_S, for the
    ones running. Without it, a callback that an executor in another thread picks up while
    the node is destroyed fails with InvalidHandle. Callbacks run concurrently as before;
    other callables the node hands out (clock jump callbacks) are wrapped with
    gated_callback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._callback_lock = threading.Condition()
        self._callbacks_running = 0
        self._callbacks_closed = False
        super().__init__(*args, **kwargs)

    def gated_callback(self, fn: Callable) -> Callable:
        """fn as a callback that does nothing once destroy_node() began (with fn's
        signature, which rclpy inspects to decide what to pass)."""
        @functools.wraps(fn)
        def gated(*args: Any, **kwargs: Any) -> Any:
            with self._callback_lock:
                if self._callbacks_closed:
                    return None
                self._callbacks_running += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._callback_lock:
                    self._callbacks_running -= 1
                    self._callback_lock.notify_all()
        return gated

    def create_timer(self, timer_period_sec, callback, *args: Any, **kwargs: Any):
        return super().create_timer(timer_period_sec, self.gated_callback(callback), *args,
                                    **kwargs)

    def create_subscription(self, msg_type, topic, callback, *args: Any, **kwargs: Any):
        return super().create_subscription(msg_type, topic, self.gated_callback(callback),
                                           *args, **kwargs)

    def destroy_node(self) -> None:
        with self._callback_lock:
            self._callbacks_closed = True
            self._callback_lock.wait_for(lambda: self._callbacks_running == 0,
                                         SHUTDOWN_BOUND_S)
        super().destroy_node()


def shutdown_logger(node: Any):
    """The rclpy logger "<node logger>.shutdown". Once a signal has shut the context down,
    the node's own logger still tries /rosout and rcl prints "Failed to publish log message
    to rosout" under every line; this child logger is not attached to /rosout."""
    import rclpy.logging
    return rclpy.logging.get_logger(f"{node.get_logger().name}.shutdown")


def stray_threads() -> list[threading.Thread]:
    """Threads other than the calling one that are still alive (Python-created ones, not
    the placeholders for foreign threads that called into Python)."""
    current = threading.current_thread()
    return [t for t in threading.enumerate()
            if t is not current and t.is_alive() and not isinstance(t, threading._DummyThread)]


def arm_hard_bound(seconds: float = HARD_BOUND_S) -> None:
    """The shutdown work from now on must end within `seconds`, even when it is stuck in a C
    call that holds the GIL (rclpy's bindings hold it through node destruction,
    rclpy.shutdown and the join of its signal thread: no Python thread, spin's watchdog
    included, runs then).

    faulthandler's watchdog is a C thread: at the bound it writes "Timeout (0:00:0N)!" and
    every thread's Python stack to stderr (the process log) and ends the process with
    status 1 (os._exit). Not clean, and said so: the process is ended this way only when
    its own watchdog (SHUTDOWN_BOUND_S, status 0) could not run or could not finish.
    cancel_hard_bound() disarms it; a process that leaves first (leave_process) never
    reaches it."""
    try:
        faulthandler.dump_traceback_later(seconds, exit=True, file=2)  # fd 2: the log
    except (OSError, ValueError, RuntimeError):  # no fd 2: no bound rather than no shutdown
        pass


def cancel_hard_bound() -> None:
    faulthandler.cancel_dump_traceback_later()


@contextmanager
def hard_bound(seconds: float = HARD_BOUND_S) -> Iterator[None]:
    """arm_hard_bound for the block."""
    arm_hard_bound(seconds)
    try:
        yield
    finally:
        cancel_hard_bound()


def dump_stacks() -> None:
    """Every thread's Python stack on stderr (faulthandler: no lock, no GIL wait)."""
    try:
        faulthandler.dump_traceback(file=2, all_threads=True)
    except Exception:  # no usable stderr: nothing to report to
        pass


def leave_process(code: int) -> None:
    """Flush stdout, stderr, Python's logging handlers and C stdio, then end the process with `code`
    at once (os._exit: no atexit handlers, no thread joins, no interpreter finalisation)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing left to save
            pass
    try:  # C stdio buffers too (rcutils console output, the ROS log file's writes)
        ctypes.CDLL(None).fflush(None)
    except Exception:
        pass
    os._exit(code)
