"""Navigation instructions (issue 16 item 4), ROS-free: what is refused and why, the
newest instruction valid at t0, and what the planner core hands the model and reports."""
import pytest

from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
from alpamayo_ros.core.navigation import (MAX_TEXT_BYTES, NavigationBuffer, NavStatus,
                                          check_instruction)
from alpamayo_ros.core.planner_core import InsertStatus, PlannerCore, PlanStatus
from alpamayo_ros.core.types import NS_PER_S
from core_scenarios import Scenario, now_ns

S = NS_PER_S


@pytest.mark.parametrize("text,message", [
    (b"Turn left \xff in 40m", r"not UTF-8 \(invalid start byte at byte 10\)"),
    ("Turn \udcff left", "not UTF-8"),
    ("Turn left \ufffd in 40m", "not UTF-8 .*U\\+FFFD"),
    ("x" * (MAX_TEXT_BYTES + 1), f"{MAX_TEXT_BYTES + 1} bytes long, the limit is "
                                 f"{MAX_TEXT_BYTES}"),
    ("ä" * (MAX_TEXT_BYTES // 2 + 1), "bytes long"),
    ("Turn left\nin 40m", "control characters \\['0xa'\\]"),
    ("Turn left<|route_end|>", "holds '<\\|'"),
    ("Turn left |> now", "holds '\\|>'"),
])
def test_bad_text_is_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        check_instruction(1, text, S)


def test_good_text_utf8_bytes_and_validity():
    assert check_instruction(5, "Turn right onto Grüner Weg in 30m", S).text.endswith("30m")
    assert check_instruction(5, "Turn left in 11m".encode(), S).text == "Turn left in 11m"
    with pytest.raises(ValueError, match="no stamp"):
        check_instruction(0, "Turn left", S)
    with pytest.raises(ValueError, match="valid_for must be > 0, have -1 s"):
        check_instruction(5, "Turn left", -S)


def test_newest_valid_instruction_at_t0():
    buffer = NavigationBuffer()
    assert buffer.select(10 * S) == (None, NavStatus.NONE)
    buffer.add(check_instruction(2 * S, "Turn left in 40m", 10 * S))
    buffer.add(check_instruction(5 * S, "Turn right in 30m", 2 * S))
    assert buffer.select(S) == (None, NavStatus.NONE)                  # before both
    assert buffer.select(3 * S)[0].text == "Turn left in 40m"         # only the first
    assert buffer.select(6 * S)[0].text == "Turn right in 30m"        # the newest valid
    assert buffer.select(7 * S)[0].text == "Turn left in 40m"         # the newer expired
    assert buffer.select(12 * S) == (None, NavStatus.EXPIRED)         # both expired
    buffer.add(check_instruction(8 * S, "  ", 10 * S))                 # cleared from 8 s
    assert buffer.select(9 * S) == (None, NavStatus.EMPTY)
    buffer.add(check_instruction(8 * S, "Keep straight", 10 * S))      # same stamp replaces
    assert buffer.select(9 * S)[0].text == "Keep straight"
    buffer.clear()
    assert buffer.select(9 * S) == (None, NavStatus.NONE)


class RecordingModel(ConstantVelocityModel):
    def __init__(self) -> None:
        super().__init__()
        self.texts = []

    def predict(self, model_input, options=None, initial_noise=None):
        self.texts.append(model_input.navigation_text)
        return super().predict(model_input, options, initial_noise)


def test_planner_core_feeds_reports_and_counts_navigation():
    scenario, model = Scenario(), RecordingModel()
    core = PlannerCore(PlannerConfig(), model)
    scenario.advance(core, 3.0)
    result = core.tick(now_ns(3.02))
    assert result.status == PlanStatus.OK and result.navigation_text == ""
    assert result.navigation_status == NavStatus.NONE.value and model.texts == [None]
    added = core.add_navigation(now_ns(2.0), "Turn left in 40m", 3 * S // 2, "route")
    assert added.status == InsertStatus.ADDED
    refused = core.add_navigation(now_ns(2.5), b"\xff\xfe", 2 * S, "fuzz")
    assert refused.status == InsertStatus.REJECTED and "not UTF-8" in refused.reason
    result = core.tick(now_ns(3.02))
    assert result.navigation_text == "Turn left in 40m" and model.texts[-1] == result.navigation_text
    assert result.navigation_status == "used"
    scenario.advance(core, 4.0)  # t0 3.91 s, past 2.0 + 1.5 s: expired
    result = core.tick(now_ns(4.02))
    assert result.status == PlanStatus.OK and result.t0_ns == now_ns(3.91)
    assert (result.navigation_text, result.navigation_status) == ("", "expired")
    counters = core.counters()
    assert (counters.navigation_added, counters.navigation_rejected) == (1, 1)
    assert (counters.navigation_none, counters.navigation_used,
            counters.navigation_expired) == (1, 1, 1)
    core.add_navigation(now_ns(3.9), "Turn right in 30m", 10 * S)
    core.reset(now_ns(4.1), "test")  # a reset forgets instructions with the other buffers
    assert core.inputs._navigation.select(now_ns(4.0)) == (None, NavStatus.NONE)
