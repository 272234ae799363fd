"""StampedBuffer: time and entry bounds, ordering, duplicates, concurrent use."""
import threading

import numpy as np

from alpamayo_ros.core.ring_buffer import InsertStatus, StampedBuffer

MS = 1_000_000


def test_bounded_by_time_not_count():
    buf = StampedBuffer(duration_ns=500 * MS, max_entries=1000)
    for k in range(100):  # 100 Hz for 1 s
        buf.add(k * 10 * MS, k)
    stamps = buf.stamps()
    assert stamps[-1] == 990 * MS
    assert stamps[0] == 490 * MS  # newest - 0.5 s
    assert len(buf) == 51


def test_hard_entry_cap():
    buf = StampedBuffer(duration_ns=10_000 * MS, max_entries=8)
    for k in range(50):
        buf.add(k * MS, k)
    assert len(buf) == 8
    assert buf.stamps()[0] == 42 * MS


def test_out_of_order_sorted_duplicates_replace_too_old_refused():
    buf = StampedBuffer(duration_ns=100 * MS, max_entries=100)
    assert buf.add(50 * MS, "b") == InsertStatus.ADDED
    assert buf.add(30 * MS, "a") == InsertStatus.ADDED
    assert buf.add(70 * MS, "c") == InsertStatus.ADDED
    np.testing.assert_array_equal(buf.stamps(), np.array([30, 50, 70]) * MS)
    assert buf.add(50 * MS, "b2") == InsertStatus.REPLACED
    assert buf.get(50 * MS) == "b2" and len(buf) == 3
    assert buf.add(-40 * MS, "old") == InsertStatus.TOO_OLD
    assert len(buf) == 3
    assert buf.last_at_or_before(69 * MS) == (50 * MS, "b2")
    assert buf.last_at_or_before(70 * MS) == (70 * MS, "c")
    assert buf.last_at_or_before(29 * MS) is None
    buf.clear()
    assert len(buf) == 0 and buf.newest_stamp() is None


def test_concurrent_writers_and_reader_stay_consistent():
    buf = StampedBuffer(duration_ns=200 * MS, max_entries=64)
    errors = []

    def writer(offset):
        for k in range(2000):
            buf.add((k * 4 + offset) * MS, k)

    def reader():
        for _ in range(2000):
            stamps, items = buf.snapshot()
            if len(stamps) != len(items) or np.any(np.diff(stamps) <= 0) or len(stamps) > 64:
                errors.append((len(stamps), len(items)))

    threads = [threading.Thread(target=writer, args=(o,)) for o in range(4)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(buf) <= 64
    stamps = buf.stamps()
    assert stamps[-1] == (1999 * 4 + 3) * MS
    assert stamps[-1] - stamps[0] <= 200 * MS
