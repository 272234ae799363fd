"""t0 and the 16 camera frames of one planning tick, chosen by header stamps.

t0 = the newest time at which every camera has a frame = min over cameras of each camera's
newest stamp; that minimum is itself a real frame stamp (of the most lagging camera), so
t0 always equals a received frame's header stamp. Per camera and target t0-0.3, t0-0.2,
t0-0.1, t0 the frame taken is the last one at or before the target (the official loader's
rule); a frame older than its target by more than the tolerance rejects the tick.
Everything works on stamps, never on message counts, so 10-60 Hz cameras all give a
0.3 s span.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from alpamayo_ros.core.errors import InputNotReady
from alpamayo_ros.core.plan_result import ReasonCode
from alpamayo_ros.core.types import FRAME_OFFSETS, FRAMES_PER_CAMERA, NS_PER_S

FRAME_OFFSETS_NS = tuple(int(round(o * NS_PER_S)) for o in FRAME_OFFSETS)


@dataclass(frozen=True)
class FrameSelection:
    """The frames chosen for one tick.

    t0_ns: t0 [ns], the stamp of a real frame.
    frame_stamps_ns: (16,) int64 stamps, camera-major (slot 0 f0..f3, slot 1 ...),
        oldest first within a camera.
    target_stamps_ns: (16,) int64 target times t0-0.3 .. t0 in the same order.
    frame_skews: (16,) float64 stamp - target [s], <= 0 by the at-or-before rule.
    camera_skew: spread (max - min) of the cameras' newest stamps [s].
    newest_stamps_ns: (4,) int64 newest stamp per camera slot at selection time.
    """

    t0_ns: int
    frame_stamps_ns: np.ndarray
    target_stamps_ns: np.ndarray
    frame_skews: np.ndarray
    camera_skew: float
    newest_stamps_ns: np.ndarray


def select_frames(camera_stamps_ns: Sequence[np.ndarray], frame_tolerance: float,
                  slot_descriptions: Sequence[str]) -> FrameSelection:
    """Choose t0 and 4 frames per camera (any number of cameras).

    camera_stamps_ns: per camera slot, ascending int64 stamps [ns] of the buffered frames.
    frame_tolerance: largest allowed target - stamp [s].
    slot_descriptions: text naming each slot in messages.
    Raises InputNotReady with the camera and the numbers when a camera has no frames or a
    target has no frame within the tolerance.
    """
    if len(camera_stamps_ns) < 1:
        raise ValueError("need the stamps of at least one camera")
    for slot, stamps in enumerate(camera_stamps_ns):
        if len(stamps) == 0:
            raise InputNotReady(f"{slot_descriptions[slot]}: no frame received yet",
                                ReasonCode.NO_FRAME)
    newest = np.asarray([int(s[-1]) for s in camera_stamps_ns], dtype=np.int64)
    t0_ns = int(newest.min())
    tolerance_ns = int(round(frame_tolerance * NS_PER_S))
    targets = np.empty(len(camera_stamps_ns) * FRAMES_PER_CAMERA, dtype=np.int64)
    chosen = np.empty_like(targets)
    for slot, stamps in enumerate(camera_stamps_ns):
        stamps = np.asarray(stamps, dtype=np.int64)
        for k, offset_ns in enumerate(FRAME_OFFSETS_NS):
            target = t0_ns + offset_ns
            pos = int(np.searchsorted(stamps, target, side="right")) - 1
            label = "t0" if offset_ns == 0 else f"t0{offset_ns / NS_PER_S:+.1f} s"
            if pos < 0:
                raise InputNotReady(
                    f"{slot_descriptions[slot]}: no frame at or before {label} "
                    f"(oldest buffered frame is {(stamps[0] - target) / NS_PER_S:.3f} s "
                    "after it)", ReasonCode.NO_FRAME)
            lag_ns = target - int(stamps[pos])
            if lag_ns > tolerance_ns:
                raise InputNotReady(
                    f"{slot_descriptions[slot]}: no frame within {frame_tolerance:g} s "
                    f"before {label} (newest before it is {lag_ns / NS_PER_S:.3f} s older)",
                    ReasonCode.FRAME_TOO_OLD)
            index = slot * FRAMES_PER_CAMERA + k
            targets[index] = target
            chosen[index] = stamps[pos]
    skews = (chosen - targets).astype(np.float64) / NS_PER_S
    return FrameSelection(
        t0_ns=t0_ns, frame_stamps_ns=chosen, target_stamps_ns=targets, frame_skews=skews,
        camera_skew=float(newest.max() - newest.min()) / NS_PER_S, newest_stamps_ns=newest)
