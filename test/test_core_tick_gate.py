"""TickGate: ticks arriving while an inference runs are dropped and counted, never queued."""
import threading
import time

import pytest

from alpamayo_ros.core.tick_gate import TickGate


def test_drops_while_busy_and_counts():
    gate = TickGate()
    assert gate.try_enter() and gate.busy
    assert not gate.try_enter()
    assert not gate.try_enter()
    gate.leave()
    assert not gate.busy and gate.try_enter()
    gate.leave()
    assert gate.accepted == 2 and gate.dropped == 2
    with pytest.raises(RuntimeError, match="not busy"):
        gate.leave()


def test_only_one_of_many_concurrent_ticks_runs():
    gate = TickGate()
    release = threading.Event()
    decided = threading.Semaphore(0)  # one release per tick that has called try_enter
    started = []

    def tick():
        entered = gate.try_enter()
        decided.release()
        if entered:
            started.append(1)
            assert release.wait(10), "the test never released the running tick"
            gate.leave()

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for t in threads:
        t.start()
    # Every tick has tried the gate while the first one still holds it.
    assert all(decided.acquire(timeout=10) for _ in threads)
    assert gate.busy and gate.accepted == 1 and gate.dropped == 7
    release.set()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert len(started) == 1 and not gate.busy


def test_call_when_idle_runs_now_or_when_the_inference_leaves():
    gate = TickGate()
    calls = []
    assert gate.call_when_idle(lambda: calls.append("now")) is False
    assert calls == ["now"]
    assert gate.try_enter()
    assert gate.call_when_idle(lambda: calls.append("deferred")) is True
    assert calls == ["now"]  # not while the inference runs
    gate.leave()
    assert calls == ["now", "deferred"]
    assert gate.try_enter()
    gate.leave()
    assert calls == ["now", "deferred"]  # once only


# ----------------------------------------------------------------------------------------
# Questions between ticks (issue 16 item 6): the node's arrangement on one model worker.
# planner_node: _on_tick claims the TickGate and queues _plan on the worker (the gate is
# left in _plan's finally); _on_ask queues the answer through QuestionSlot.submit. Both go
# to one WorkerThread (FIFO). The fake model calls below stand in for predict / ask.


class _Calls:
    """Model calls on the worker: start/end times, each blocking until released (or for
    a fixed time)."""

    def __init__(self, seconds=None):
        self.seconds = seconds
        self.lock = threading.Lock()
        self.log = []          # (name, start, end)
        self.started = {}
        self.release = {}

    def make(self, name):
        started, release = threading.Event(), threading.Event()
        self.started[name], self.release[name] = started, release

        def call():
            start = time.monotonic()
            started.set()
            if self.seconds is None:
                assert release.wait(10), f"{name} never released"
            else:
                time.sleep(self.seconds)
            with self.lock:
                self.log.append((name, start, time.monotonic()))
        return call

    def ended_between(self, t0, t1):
        with self.lock:
            return [name for name, _, end in self.log if t0 <= end <= t1]

    def start_of(self, name):
        with self.lock:
            return next(start for n, start, _ in self.log if n == name)


def _submit_tick(gate, worker, call):
    """planner_node._on_tick + _plan: claim the gate (else dropped), queue the call, leave
    the gate when it ends. Returns the submit time, or None when dropped."""
    if not gate.try_enter():
        return None
    submitted = time.monotonic()

    def plan():
        try:
            call()
        finally:
            gate.leave()
    worker.submit(plan)
    return submitted


def _wait(event, what):
    assert event.wait(10), f"{what} did not start"


def test_a_question_delays_a_tick_by_at_most_one_call_and_only_one_waits():
    from alpamayo_ros.core.tick_gate import QuestionSlot
    from alpamayo_ros.ros.shutdown import WorkerThread
    gate, slot, worker, calls = TickGate(), QuestionSlot(), WorkerThread("test_infer"), _Calls()
    try:
        # A question arrives just before a tick: the tick waits for that one call.
        assert slot.submit(worker, calls.make("q1"))
        _wait(calls.started["q1"], "q1")
        assert not slot.submit(worker, calls.make("q2"))          # busy: q1 runs
        t1 = _submit_tick(gate, worker, calls.make("t1"))
        assert t1 is not None
        assert _submit_tick(gate, worker, calls.make("t1b")) is None   # ticks never queue
        calls.release["q1"].set()
        _wait(calls.started["t1"], "t1")
        # While t1 runs the slot is free again: one question queues, the next is busy.
        assert slot.submit(worker, calls.make("q3"))
        assert not slot.submit(worker, calls.make("q4"))
        # A tick arriving while t1 runs (q3 queued behind it) is dropped, not queued
        # behind t1 and q3.
        assert _submit_tick(gate, worker, calls.make("t2")) is None
        calls.release["t1"].set()
        _wait(calls.started["q3"], "q3")
        t3 = _submit_tick(gate, worker, calls.make("t3"))         # waits for q3 only
        assert t3 is not None
        calls.release["q3"].set()
        _wait(calls.started["t3"], "t3")
        calls.release["t3"].set()
        assert gate.wait_idle(10)
        assert calls.ended_between(t1, calls.start_of("t1")) == ["q1"]
        assert calls.ended_between(t3, calls.start_of("t3")) == ["q3"]
        assert [name for name, _, _ in calls.log] == ["q1", "t1", "q3", "t3"]
        assert (slot.accepted, slot.busy_refusals) == (2, 2) and not slot.pending
        assert (gate.accepted, gate.dropped) == (2, 2)
    finally:
        worker.stop(5.0)


def test_slow_calls_ticks_and_questions_at_random_wait_at_most_one_call():
    """Slow calls (0.15 s), a tick every 0.1 s and a question at random every ~0.05 s for
    3 s: every planned tick started after at most one other call ended since it was
    queued, within that call's end plus the worker's hand-off."""
    import random

    from alpamayo_ros.core.tick_gate import QuestionSlot
    from alpamayo_ros.ros.shutdown import WorkerThread
    gate, slot, worker = TickGate(), QuestionSlot(), WorkerThread("test_infer")
    calls, rng = _Calls(seconds=0.15), random.Random(0)
    ticks = []
    try:
        end, next_tick, k = time.monotonic() + 3.0, 0.0, 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_tick:
                name = f"t{k}"
                submitted = _submit_tick(gate, worker, calls.make(name))
                if submitted is not None:
                    ticks.append((name, submitted))
                next_tick, k = now + 0.1, k + 1
            if rng.random() < 0.5:
                slot.submit(worker, calls.make(f"q{k}_{rng.random():.6f}"))
            time.sleep(0.025)
        assert gate.wait_idle(10)
        worker.submit(lambda: None)
        time.sleep(0.5)  # the last question (if any) ends
    finally:
        worker.stop(5.0)
    assert slot.accepted >= 3 and slot.busy_refusals >= 3, (slot.accepted, slot.busy_refusals)
    assert len(ticks) >= 5
    waited_for_a_question = 0
    for name, submitted in ticks:
        start = calls.start_of(name)
        before = calls.ended_between(submitted, start)
        assert len(before) <= 1, (name, before)
        if before:
            assert before[0].startswith("q"), (name, before)  # never another tick
            waited_for_a_question += 1
            own_end = next(e for n, _, e in calls.log if n == before[0])
            assert start - own_end < 0.1, (name, start - own_end)
    assert waited_for_a_question >= 1
