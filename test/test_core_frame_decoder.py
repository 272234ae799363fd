"""FrameDecoder and DecodeCache across threads: parallel decoding, one decode per frame,
cancelled decode-ahead, errors reported by the tick."""
import threading

import numpy as np
import pytest

from alpamayo_ros.core.errors import DecodeError
from alpamayo_ros.core.frame_decoder import FrameDecodeError, FrameDecoder
from alpamayo_ros.core.image_decode import DecodeCache, decode_image
from core_scenarios import rgb_image

TIMEOUT_S = 10.0


class GatedDecoder:
    """decode_image that counts calls per frame and can hold each call until released."""

    def __init__(self, held=False):
        self.calls = []
        self.running = 0
        self.cond = threading.Condition()
        self.open = not held

    def release(self):
        with self.cond:
            self.open = True
            self.cond.notify_all()

    def wait_running(self, n):
        with self.cond:
            return self.cond.wait_for(lambda: self.running >= n, TIMEOUT_S)

    def __call__(self, image):
        with self.cond:
            self.calls.append(image.data[0])
            self.running += 1
            self.cond.notify_all()
            if not self.cond.wait_for(lambda: self.open, TIMEOUT_S):
                raise AssertionError("a held decode was never released")
            self.running -= 1
        return decode_image(image)


def jobs(values):
    return [((0, 0, v), rgb_image(value=v)) for v in values]


def test_decode_runs_frames_in_parallel_and_returns_them_in_order():
    # Every decode waits at a barrier of 3: decoding one after another never gets past it.
    barrier = threading.Barrier(3, timeout=TIMEOUT_S)

    def decoder(image):
        barrier.wait()
        return decode_image(image)

    frame_decoder = FrameDecoder(DecodeCache(16, decoder=decoder), None, threads=2)
    frames, missing = frame_decoder.decode(jobs([1, 2, 3]))
    assert missing == 3 and [int(f[0, 0, 0]) for f in frames] == [1, 2, 3]
    frame_decoder.close()


def test_a_frame_wanted_by_two_threads_is_decoded_once():
    decoder = GatedDecoder(held=True)
    cache = DecodeCache(16, decoder=decoder)
    image = rgb_image(value=7)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_decode((0, 7), image)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    assert decoder.wait_running(1)
    assert cache.contains((0, 7))  # being decoded counts: nobody queues it again
    decoder.release()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert decoder.calls == [7] and len(results) == 2 and results[0] is results[1]
    assert cache.decodes == 1 and cache.hits == 1


def test_prefetch_cancels_queued_decodes_a_newer_selection_does_not_want():
    decoder = GatedDecoder(held=True)
    frame_decoder = FrameDecoder(DecodeCache(16, decoder=decoder), None, threads=1)
    assert frame_decoder.prefetch(jobs([1, 2, 3])) == 3
    assert decoder.wait_running(1)  # frame 1 holds the only thread; 2 and 3 are queued
    assert frame_decoder.prefetch(jobs([1, 3, 4])) == 1  # 1 and 3 already queued: only 4
    assert frame_decoder.cancelled == 1  # frame 2 never starts
    decoder.release()
    assert frame_decoder.wait_idle(TIMEOUT_S)
    assert sorted(decoder.calls) == [1, 3, 4]
    frames, missing = frame_decoder.decode(jobs([1, 3, 4]))
    assert missing == 0 and sorted(decoder.calls) == [1, 3, 4]
    frame_decoder.close()


def test_a_frame_that_fails_ahead_fails_the_tick_with_its_key():
    frame_decoder = FrameDecoder(DecodeCache(16), None, threads=2)
    bad = rgb_image(value=5)
    bad = type(bad)("rgb8", bad.height, bad.width, bad.step, bad.data[:10])
    frame_decoder.prefetch([((0, 1, 5), bad)])
    assert frame_decoder.wait_idle(TIMEOUT_S)
    with pytest.raises(FrameDecodeError) as caught:
        frame_decoder.decode(jobs([4]) + [((0, 1, 5), bad)])
    assert caught.value.key == (0, 1, 5) and isinstance(caught.value, DecodeError)
    assert frame_decoder.cache.failures == 1 and frame_decoder.cache.failure_hits == 1


def test_without_threads_decoding_happens_in_the_caller():
    caller = threading.get_ident()
    seen = []

    def decoder(image):
        seen.append(threading.get_ident())
        return decode_image(image)

    frame_decoder = FrameDecoder(DecodeCache(16, decoder=decoder), None, threads=0)
    assert frame_decoder.prefetch(jobs([1, 2])) == 0
    frames, missing = frame_decoder.decode(jobs([1, 2]))
    assert missing == 2 and seen == [caller, caller]
    np.testing.assert_array_equal(frames[1], decode_image(rgb_image(value=2)))
    with pytest.raises(ValueError, match="threads must be >= 0"):
        FrameDecoder(DecodeCache(16), None, threads=-1)
