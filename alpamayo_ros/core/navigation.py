"""Navigation instructions for Alpamayo 1.5 (ROS-free): checks, buffer, choice at t0.

An instruction ("Turn left in 40m", as the official notebooks phrase them) is stamped and
stays valid for a given time: from its stamp s to s + valid_for. A tick uses the newest
instruction valid at its t0 (stamp <= t0 < stamp + valid_for); without one (none at all,
all expired) or when that newest valid one is empty (an explicit "no instruction"), the
model gets the prompt without navigation. Each outcome is counted (NavStatus).

Text is refused, with the reason, when it is not valid UTF-8, longer than
MAX_TEXT_BYTES, holds control characters, or holds ``<|`` / ``|>`` (the model's special
token markers: the text sits inside ``<|route_start|>..<|route_end|>`` and must not end
that span or open another). A refused instruction changes nothing else.

The node (ros/planner_node.py) and the replay (replay/engine.py) take instructions
from NAVIGATION_TOPIC by the same rules: a model family without navigation ignores them
(navigation_ignored_reason: one WARN), the others go to PlannerCore.add_navigation.
swap_direction is the official counterfactual (nav_utils.swap_direction) the replay's
--nav-compare runs.
"""
from __future__ import annotations

import bisect
import enum
import re
import unicodedata
from dataclasses import dataclass
from typing import Optional, Union

from alpamayo_ros.core.model_family import FAMILIES
from alpamayo_ros.core.types import NS_PER_S

# Where instructions arrive (relative: resolved in the node's namespace).
NAVIGATION_TOPIC = "alpamayo/navigation"

# Longest accepted text, in UTF-8 bytes; the official instructions are under 60.
# The planner's navigation input topic (relative: resolved in the node's namespace).
NAVIGATION_TOPIC = "alpamayo/navigation"
MAX_TEXT_BYTES = 256
# Instructions kept (newest by stamp); older ones can no longer be the newest valid one
# once this many newer ones exist.
MAX_KEPT = 32
_MARKERS = ("<|", "|>")


class NavStatus(enum.Enum):
    """What a tick did with navigation."""

    USED = "used"          # the newest valid instruction went into the prompt
    NONE = "none"          # no instruction stamped at or before t0
    EXPIRED = "expired"    # instructions exist, none valid at t0
    EMPTY = "empty"        # the newest valid instruction is empty (cleared)


@dataclass(frozen=True)
class NavigationInstruction:
    """One accepted instruction: header stamp [ns], text, validity [ns], source."""

    stamp_ns: int
    text: str
    valid_for_ns: int
    source: str = ""

    def valid_at(self, t_ns: int) -> bool:
        return self.stamp_ns <= t_ns < self.stamp_ns + self.valid_for_ns


def check_prompt_text(text: Union[str, bytes], what: str = "navigation text") -> str:
    """Text a user puts into the prompt (an instruction, a question), stripped; ValueError
    naming ``what`` and the reason when it is refused (see the module docstring)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{what} is not UTF-8 ({exc.reason} at byte "
                             f"{exc.start})") from None
    if not isinstance(text, str):
        raise ValueError(f"{what} must be text, have {type(text).__name__}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates (undecodable bytes passed through)
        raise ValueError(f"{what} is not UTF-8 ({exc.reason} at character "
                         f"{exc.start})") from None
    if size > MAX_TEXT_BYTES:
        raise ValueError(f"{what} is {size} bytes long, the limit is {MAX_TEXT_BYTES}")
    if "\ufffd" in text:  # what a ROS string holds where its bytes were not UTF-8
        raise ValueError(f"{what} is not UTF-8 (it holds U+FFFD, the replacement of bytes "
                         "that did not decode)")
    control = [c for c in text if unicodedata.category(c) == "Cc"]
    if control:
        raise ValueError(f"{what} holds control characters "
                         f"{sorted({hex(ord(c)) for c in control})}")
    for marker in _MARKERS:
        if marker in text:
            raise ValueError(f"{what} holds {marker!r} (special-token markers are not "
                             "allowed)")
    return text.strip()


def check_instruction(stamp_ns: int, text: Union[str, bytes], valid_for_ns: int,
                      source: str = "") -> NavigationInstruction:
    """The instruction, or ValueError with the reason it is refused (see module doc)."""
    text = check_prompt_text(text)
    if int(stamp_ns) <= 0:
        raise ValueError("navigation instruction has no stamp (header.stamp not set)")
    if int(valid_for_ns) <= 0:
        raise ValueError(f"navigation instruction valid_for must be > 0, have "
                         f"{int(valid_for_ns) / NS_PER_S:g} s")
    return NavigationInstruction(int(stamp_ns), text, int(valid_for_ns), str(source))


class NavigationBuffer:
    """The newest MAX_KEPT instructions by stamp (not thread-safe: the owner locks)."""

    def __init__(self, max_kept: int = MAX_KEPT) -> None:
        self._items: list[NavigationInstruction] = []
        self._max_kept = int(max_kept)

    def add(self, instruction: NavigationInstruction) -> None:
        """Insert by stamp (an instruction with an equal stamp replaces the older one)."""
        stamps = [i.stamp_ns for i in self._items]
        index = bisect.bisect_left(stamps, instruction.stamp_ns)
        if index < len(stamps) and stamps[index] == instruction.stamp_ns:
            self._items[index] = instruction
        else:
            self._items.insert(index, instruction)
        del self._items[:-self._max_kept]

    def clear(self) -> None:
        self._items.clear()

    def copy(self) -> "NavigationBuffer":
        """An own copy (the instructions themselves are frozen)."""
        other = NavigationBuffer(self._max_kept)
        other._items = list(self._items)
        return other

    def select(self, t0_ns: int) -> tuple[Optional[NavigationInstruction], NavStatus]:
        """(the instruction for a tick at t0, or None; what happened)."""
        earlier = [i for i in self._items if i.stamp_ns <= t0_ns]
        if not earlier:
            return None, NavStatus.NONE
        valid = [i for i in earlier if i.valid_at(t0_ns)]
        if not valid:
            return None, NavStatus.EXPIRED
        newest = valid[-1]
        if not newest.text:
            return None, NavStatus.EMPTY
        return newest, NavStatus.USED


def navigation_ignored_reason(family: str, backend: str) -> str:
    """Why a model ignores navigation instructions ("" when it takes them): family is the
    checkpoint family (ModelDescription.family, "" for a backend without weights)."""
    known = FAMILIES.get(family)
    if known is not None and known.navigation:
        return ""
    what = known.label if known else f"the {backend} backend"
    return (f"navigation instructions are ignored: {what} takes none (an Alpamayo 1.5 "
            "checkpoint does)")


_LEFT = re.compile(r"\bleft\b", re.IGNORECASE)
_RIGHT = re.compile(r"\bright\b", re.IGNORECASE)
_HOLD = "\x00"  # never in an accepted text (control characters are refused)


def swap_direction(text: str) -> str:
    """The instruction with left and right exchanged, as the official
    nav_utils.swap_direction does: whole words, any case; every "left" becomes lower-case
    "right", a "right" becomes "left" or, when its first letter is upper-case, "Left"
    ("Turn left onto Main Street in 40m" -> "Turn right onto Main Street in 40m",
    "Right lane" -> "Left lane", "LEFT" -> "right"). Text without either word is
    returned unchanged."""
    held = _LEFT.sub(_HOLD, text)
    swapped = _RIGHT.sub(lambda m: "Left" if m.group()[0].isupper() else "left", held)
    return swapped.replace(_HOLD, "right")
