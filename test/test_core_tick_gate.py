"""TickGate: ticks arriving while an inference runs are dropped and counted, never queued."""
import threading

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
