"""The shutdown pieces of ros/shutdown.py on their own: worker thread, publish gate, signal
handling, leaving a process with a thread still running."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from ros_harness import REPO_ROOT

from alpamayo_ros.ros.shutdown import (PublishGate, ShutdownSignals, StartupInterrupted,
                                       WorkerThread, stray_threads)


def test_the_worker_runs_calls_in_order_and_survives_a_failing_one(capfd):
    worker = WorkerThread("test_worker")
    done, order = threading.Event(), []

    def fail():
        raise ValueError("boom")

    worker.submit(order.append, 1)
    worker.submit(fail)
    worker.submit(order.append, 2)
    worker.submit(done.set)
    assert done.wait(5.0)
    assert order == [1, 2]
    assert "ValueError: boom" in capfd.readouterr().err
    assert worker.stop(timeout=5.0) is True
    with pytest.raises(RuntimeError):
        worker.submit(order.append, 3)


def test_stop_abandons_a_running_call_and_drops_queued_ones():
    worker = WorkerThread("test_worker")
    started, release, ran = threading.Event(), threading.Event(), []
    worker.submit(lambda: (started.set(), release.wait(10.0)))
    worker.submit(ran.append, "queued")
    assert started.wait(5.0)
    t0 = time.monotonic()
    assert worker.stop(timeout=0.2) is False  # the call still runs: abandoned
    assert time.monotonic() - t0 < 2.0
    assert worker.running and worker._thread.daemon  # never holds the interpreter's exit
    release.set()
    worker._thread.join(5.0)
    assert not worker.running and ran == []  # the queued call was dropped


def test_the_publish_gate_closes_only_between_publishes():
    gate = PublishGate()
    inside, release, closed_at = threading.Event(), threading.Event(), []

    def publisher():
        with gate.open() as allowed:
            assert allowed
            inside.set()
            release.wait(5.0)

    thread = threading.Thread(target=publisher)
    thread.start()
    assert inside.wait(5.0)
    closer = threading.Thread(target=lambda: (gate.close(), closed_at.append(time.monotonic())))
    closer.start()
    closer.join(0.2)
    assert closer.is_alive() and not closed_at  # close() waits for the publish in progress
    released_at = time.monotonic()
    release.set()
    closer.join(5.0)
    thread.join(5.0)
    assert closed_at and closed_at[0] >= released_at
    with gate.open() as allowed:
        assert allowed is False and gate.closed


@pytest.fixture
def restore_signal_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    """Poll until predicate() (a Python signal handler runs in the main thread at the next
    bytecode boundaries, so this loop is where it runs)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _deliver(signals: ShutdownSignals, sig) -> None:
    """Send `sig` to this process and wait until the handler recorded it."""
    count = len(signals.received)
    os.kill(os.getpid(), sig)
    assert _wait_for(lambda: len(signals.received) > count)


def test_signals_are_recorded_not_raised(restore_signal_handlers):
    signals = ShutdownSignals()
    assert signals.install()
    _deliver(signals, signal.SIGINT)
    _deliver(signals, signal.SIGTERM)
    _deliver(signals, signal.SIGINT)
    assert signals.received == ["SIGINT", "SIGTERM", "SIGINT"] and signals.first == "SIGINT"


def test_the_first_signal_interrupts_the_start_only(restore_signal_handlers):
    signals = ShutdownSignals()
    signals.install()
    with pytest.raises(StartupInterrupted):
        with signals.interrupting():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5.0)  # a long model load: interrupted long before this ends
    _deliver(signals, signal.SIGINT)  # outside the block: recorded only
    assert signals.received == ["SIGTERM", "SIGINT"]


def test_blocked_signals_wait_for_the_end_of_the_block(tmp_path):
    """In a fresh process, as in run_node: the main thread is the only thread, so a blocked
    signal has no other thread to go to (this test process has DDS and spin threads)."""
    script = tmp_path / "blocked.py"
    script.write_text(
        "import os, signal, time\n"
        "from alpamayo_ros.ros.shutdown import ShutdownSignals\n"
        "signals = ShutdownSignals()\n"
        "signals.install()\n"
        "with signals.blocked():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.2)\n"
        "    print('inside', signals.received)\n"
        "deadline = time.monotonic() + 5.0\n"
        "while not signals.received and time.monotonic() < deadline:\n"
        "    time.sleep(0.001)\n"
        "print('after', signals.received)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["inside []", "after ['SIGINT']"]


def test_install_outside_the_main_thread_installs_nothing():
    result = []
    thread = threading.Thread(target=lambda: result.append(ShutdownSignals().install()))
    thread.start()
    thread.join(5.0)
    assert result == [False]


def test_after_shutdown_signals_are_ignored_by_the_os(restore_signal_handlers):
    signals = ShutdownSignals()
    signals.install()
    signals.ignore_from_now()
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def test_leave_process_does_not_wait_for_a_running_thread(tmp_path):
    """A non-daemon thread in a long call would hold a normal exit; leave_process ends the
    process at once with the status, output flushed."""
    script = tmp_path / "leave.py"
    script.write_text(
        "import sys, threading, time\n"
        "from alpamayo_ros.ros.shutdown import leave_process, stray_threads\n"
        "threading.Thread(target=time.sleep, args=(60,)).start()\n"
        "sys.stdout.write('buffered line')\n"
        "assert len(stray_threads()) == 1\n"
        "leave_process(0)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "buffered line"
    assert time.monotonic() - t0 < 20.0  # not the thread's 60 s


def test_stray_threads_lists_live_threads_but_not_the_caller():
    release = threading.Event()
    thread = threading.Thread(target=release.wait, args=(10.0,))
    thread.start()
    try:
        assert thread in stray_threads() and threading.current_thread() not in stray_threads()
    finally:
        release.set()
        thread.join(5.0)
    assert thread not in stray_threads()
