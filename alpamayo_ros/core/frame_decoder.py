"""Decoding a tick's camera frames off the path from tick to model start.

Decoding the four new 1080p JPEG frames of a tick is the largest part of the time from
tick to model start (docs/design.md gives the numbers of bench/bench_core_overhead.py).
Two measures take it off the tick:

* **ahead of the tick**: after every frame that arrives, PlannerCore works out which 16
  frames a tick at this moment would select (the same select_frames as the tick) and,
  once that selection's t0 is near the t0 expected at the next tick, `prefetch` queues
  the ones not yet decoded on a small thread pool. When the tick comes, its frames are
  usually decoded already. Queued decodes of frames that a newer selection no longer
  wants are cancelled before they start; frames still wanted are kept fresh in the
  cache's LRU.
* **in parallel at the tick**: frames still missing are decoded on the pool and on the
  tick's own thread at once.

Threads work because the decoders (simplejpeg, OpenCV, Pillow) release the GIL while
decoding.
concurrent.futures gives the pool and cancellation; the one thing it lacks, that a frame
wanted by the tick and by a decode-ahead job is decoded once, is DecodeCache's (a key
is decoded by one thread at a time, the other waits for its result).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Optional, Sequence

import numpy as np

from alpamayo_ros.core.errors import DecodeError
from alpamayo_ros.core.image_decode import DecodeCache, EncodedImage

# (cache key, undecoded frame) of one frame a tick needs.
FrameJob = tuple[tuple, EncodedImage]


class FrameDecodeError(DecodeError):
    """A frame of a tick cannot be decoded; key names it."""

    def __init__(self, key: tuple, cause: DecodeError) -> None:
        super().__init__(str(cause))
        self.key = key


class FrameDecoder:
    """Decodes frames into a DecodeCache, ahead of the tick and in parallel.

    cache: the DecodeCache the tick reads; size_wh: the resize target (None = native);
    threads: worker threads (0 = every frame is decoded on the calling thread at the tick,
    prefetch does nothing).
    """

    def __init__(self, cache: DecodeCache, size_wh: Optional[tuple], threads: int) -> None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0, have {threads}")
        self.cache = cache
        self._size = size_wh
        self.threads = int(threads)
        self._pool = (ThreadPoolExecutor(threads, thread_name_prefix="alpamayo-decode")
                      if threads else None)
        self._lock = threading.Lock()
        self._ahead: dict[tuple, Future] = {}  # queued or running decode-ahead jobs
        self.prefetched = 0  # decode-ahead jobs queued
        self.cancelled = 0  # ... cancelled before they started (superseded)

    def prefetch(self, jobs: Sequence[FrameJob]) -> int:
        """Queue the decodes of jobs not decoded yet; cancel queued jobs of frames not in
        jobs (a newer selection replaced them). Returns the number queued."""
        if self._pool is None:
            return 0
        wanted = {key for key, _ in jobs}
        queued = 0
        with self._lock:
            for key, future in list(self._ahead.items()):
                if future.done():
                    del self._ahead[key]
                elif key not in wanted and future.cancel():
                    del self._ahead[key]
                    self.cancelled += 1
            for key, image in jobs:
                if key in self._ahead or self.cache.contains(key, touch=True):
                    continue
                self._ahead[key] = self._pool.submit(self._decode_quietly, key, image)
                queued += 1
            self.prefetched += queued
        return queued

    def wait_idle(self, timeout_s: float) -> bool:
        """True once every queued decode-ahead job has ended (tests, benchmarks)."""
        with self._lock:
            pending = list(self._ahead.values())
        return not wait(pending, timeout_s).not_done

    def _decode_quietly(self, key: tuple, image: EncodedImage) -> None:
        try:
            self.cache.get_or_decode(key, image, self._size)
        except DecodeError:
            pass  # remembered by the cache: the tick that needs this frame reports it

    def decode(self, jobs: Sequence[FrameJob]) -> tuple[list[np.ndarray], int]:
        """The decoded frames of jobs, in order, and how many were not decoded yet when
        called. Raises the DecodeError of the first failing frame in order."""
        missing = [(key, image) for key, image in jobs if not self.cache.contains(key)]
        helpers = []
        with self._lock:
            if self._pool is not None and len(missing) > 1:
                # The pool takes all but the first; this thread decodes that one and then
                # waits for (or itself decodes, when the pool is still busy) the rest.
                helpers = [self._pool.submit(self._decode_quietly, key, image)
                           for key, image in missing[1:]]
        frames = []
        try:
            for key, image in jobs:
                try:
                    frames.append(self.cache.get_or_decode(key, image, self._size))
                except DecodeError as exc:
                    raise FrameDecodeError(key, exc) from exc
        finally:
            for helper in helpers:  # not started yet: no longer needed (this thread did it)
                helper.cancel()
        return frames, len(missing)

    def clear(self) -> None:
        """Cancel queued decode-ahead jobs and drop every decoded frame (a restart)."""
        with self._lock:
            for future in self._ahead.values():
                future.cancel()
            self._ahead.clear()
        self.cache.clear()

    def close(self) -> None:
        """Stop the pool: queued jobs are cancelled, running ones end on their own; later
        calls decode on the calling thread."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._ahead.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
