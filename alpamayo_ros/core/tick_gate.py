"""TickGate: lets one inference run at a time; ticks arriving meanwhile are dropped and counted.

Ticks are never queued: a queued tick would plan on inputs that are old by the time it runs.
Usage (node timer callback, worker thread):

    if gate.try_enter():
        executor.submit(work)      # work() calls gate.leave() in a finally block
    # else: the tick was dropped; gate.dropped counts it

QuestionSlot: the questions of alpamayo/ask share that worker with the ticks; at most one
question is queued or running at a time (the next is refused as busy), and a question
never enters the TickGate. On the one FIFO worker this bounds what a tick waits for: no
other tick (the gate), at most the one question queued before it, so a question delays a
tick by at most one model call (test_core_tick_gate.py measures it with slow calls).
"""
from __future__ import annotations

import threading
from typing import Any, Callable


class TickGate:
    """Thread-safe busy flag with accepted/dropped counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = False
        self._when_idle: list[Callable[[], None]] = []
        self.accepted = 0
        self.dropped = 0

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._busy

    def try_enter(self) -> bool:
        """Claim the gate: True (counted as accepted) if free, else False (counted as dropped)."""
        with self._lock:
            if self._busy:
                self.dropped += 1
                return False
            self._busy = True
            self.accepted += 1
            return True

    def leave(self) -> None:
        """Release the gate after the inference (call exactly once per successful try_enter);
        then run what call_when_idle deferred, in this thread."""
        with self._lock:
            if not self._busy:
                raise RuntimeError("TickGate.leave() called while not busy")
            self._busy = False
            deferred, self._when_idle = self._when_idle, []
            self._idle.notify_all()
        for fn in deferred:
            fn()

    def call_when_idle(self, fn: Callable[[], None]) -> bool:
        """Run fn now when no inference runs; else defer it to the thread that calls
        leave() (e.g. freeing the model under a call that was abandoned). True when
        deferred."""
        with self._lock:
            if self._busy:
                self._when_idle.append(fn)
                return True
        fn()
        return False

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no inference runs (at most `timeout` s); True when idle."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._busy, timeout)


class QuestionSlot:
    """At most one question queued or running on the model worker (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = False
        self.accepted = 0
        self.busy_refusals = 0

    @property
    def pending(self) -> bool:
        with self._lock:
            return self._pending

    def submit(self, worker: Any, fn: Callable[[], None]) -> bool:
        """Queue fn() on ``worker`` (anything with ``submit(fn)``, e.g. ros.shutdown's
        WorkerThread) unless a question is queued or running: False (counted) then. The
        slot frees when fn returns or raises. The worker's RuntimeError (stopped) passes
        through with the slot free."""
        with self._lock:
            if self._pending:
                self.busy_refusals += 1
                return False
            self._pending = True

        def run() -> None:
            try:
                fn()
            finally:
                with self._lock:
                    self._pending = False

        try:
            worker.submit(run)
        except BaseException:
            with self._lock:
                self._pending = False
            raise
        with self._lock:
            self.accepted += 1
        return True
