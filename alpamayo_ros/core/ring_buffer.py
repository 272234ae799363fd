"""Time-keyed, bounded, thread-safe buffer of stamped items (stamps in int nanoseconds).

Bounded by time (entries older than newest - duration are dropped) and by a hard entry cap
(the oldest go first), so memory stays bounded whatever the message rate. Callbacks add
while a worker reads: every method takes the lock, and readers get copies.
"""
from __future__ import annotations

import bisect
import enum
import threading
from typing import Generic, Optional, TypeVar

import numpy as np

T = TypeVar("T")


class InsertStatus(enum.Enum):
    """What happened to an item handed to the core."""

    ADDED = "added"
    # Same stamp as an entry already there: the new item replaces it (last one wins).
    REPLACED = "replaced"
    # Refused (non-finite values, bad camera slot, ...); the reason says why.
    REJECTED = "rejected"
    # Older than newest - duration: it would be evicted at once, so it is not stored.
    TOO_OLD = "too_old"


class StampedBuffer(Generic[T]):
    """Items sorted by stamp [ns].

    Keeps at most `max_entries` items, all within `duration_ns` of the newest stamp.
    """

    def __init__(self, duration_ns: int, max_entries: int) -> None:
        if duration_ns <= 0 or max_entries <= 0:
            raise ValueError(f"duration_ns and max_entries must be > 0, have "
                             f"{duration_ns}, {max_entries}")
        self._duration_ns = int(duration_ns)
        self._max_entries = int(max_entries)
        self._stamps: list[int] = []
        self._items: list[T] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._stamps)

    @property
    def duration_ns(self) -> int:
        """How far back from the newest stamp entries are kept [ns]."""
        return self._duration_ns

    def add(self, stamp_ns: int, item: T) -> InsertStatus:
        """Insert in stamp order (out-of-order arrivals are fine); equal stamp replaces."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            if self._stamps and stamp_ns < self._stamps[-1] - self._duration_ns:
                return InsertStatus.TOO_OLD
            pos = bisect.bisect_left(self._stamps, stamp_ns)
            if pos < len(self._stamps) and self._stamps[pos] == stamp_ns:
                self._items[pos] = item
                return InsertStatus.REPLACED
            self._stamps.insert(pos, stamp_ns)
            self._items.insert(pos, item)
            self._evict()
            return InsertStatus.ADDED

    def _evict(self) -> None:
        cutoff = self._stamps[-1] - self._duration_ns
        drop = bisect.bisect_left(self._stamps, cutoff)
        drop = max(drop, len(self._stamps) - self._max_entries)
        if drop > 0:
            del self._stamps[:drop]
            del self._items[:drop]

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._items.clear()

    def newest_stamp(self) -> Optional[int]:
        with self._lock:
            return self._stamps[-1] if self._stamps else None

    def stamps(self) -> np.ndarray:
        """All stamps, ascending, as an int64 array (a copy)."""
        with self._lock:
            return np.asarray(self._stamps, dtype=np.int64)

    def snapshot(self) -> tuple[np.ndarray, list]:
        """(stamps int64 ascending, items) copied under one lock."""
        with self._lock:
            return np.asarray(self._stamps, dtype=np.int64), list(self._items)

    def snapshot_from(self, start_ns: int) -> tuple[np.ndarray, list]:
        """Like snapshot(), but only entries with stamp >= start_ns plus the one before it."""
        with self._lock:
            pos = max(bisect.bisect_left(self._stamps, int(start_ns)) - 1, 0)
            return (np.asarray(self._stamps[pos:], dtype=np.int64), self._items[pos:])

    def get(self, stamp_ns: int) -> Optional[T]:
        """The item with exactly this stamp, or None."""
        with self._lock:
            pos = bisect.bisect_left(self._stamps, int(stamp_ns))
            if pos < len(self._stamps) and self._stamps[pos] == stamp_ns:
                return self._items[pos]
            return None

    def last_at_or_before(self, stamp_ns: int) -> Optional[tuple[int, T]]:
        """(stamp, item) of the newest entry with stamp <= stamp_ns, or None."""
        with self._lock:
            pos = bisect.bisect_right(self._stamps, int(stamp_ns))
            if pos == 0:
                return None
            return self._stamps[pos - 1], self._items[pos - 1]
