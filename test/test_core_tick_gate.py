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
    started = []

    def tick():
        if gate.try_enter():
            started.append(1)
            release.wait(5)
            gate.leave()

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for t in threads:
        t.start()
    while gate.accepted + gate.dropped < 8:
        pass
    release.set()
    for t in threads:
        t.join()
    assert len(started) == 1 and gate.accepted == 1 and gate.dropped == 7
