"""KindThrottle: log each kind of message at most once per period, whatever its text.

A flood of messages of one kind (a planner sending plans refused for the same reason with a
different number in each text) must not flood the log, and one kind must not hide another.
rclpy's throttle_duration_sec keys on the call site, so one call site that logs several
kinds would let one hide the others; comparing the whole text lets numbers defeat it. Here
the caller names the kind (the controller: the refusal's check and the message's shape,
its text with the numbers replaced), and a suppressed message is only counted: the next
one logged says how many of its kind were left out.
"""
from __future__ import annotations

import re
from typing import Hashable, Optional

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def message_shape(text: str) -> str:
    """The text with every number replaced by '#': messages that differ only in their
    numbers (the flood case) have one shape; different checks keep different ones."""
    return _NUMBER.sub("#", text)


class KindThrottle:
    """period_s: shortest time between two messages of one kind [s] (the caller's clock)."""

    def __init__(self, period_s: float) -> None:
        self.period_s = float(period_s)
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def admit(self, kind: Hashable, text: str, now_s: float) -> Optional[str]:
        """The text to log now (with the count of this kind left out since its last line),
        or None when a message of this kind was logged less than period_s ago."""
        last = self._last.get(kind)
        if last is not None and now_s - last < self.period_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return None
        self._last[kind] = now_s
        left_out = self._suppressed.pop(kind, 0)
        return text if not left_out else f"{text} ({left_out} more of this kind not logged)"
