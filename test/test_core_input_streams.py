"""InputStreams (core/input_streams.py): the one jump rule, typed events and counters, one
odometry check per sample, and PlannerCore planning from a snapshot."""
import pytest

from alpamayo_ros.core import input_streams
from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.input_streams import (TIME_JUMP_CONFIRMATIONS, InputEvent, InputStreams,
                                             JumpRule, LineVerdict, StreamKind, TimeJump)
from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
from alpamayo_ros.core.plan_result import PlanStatus
from alpamayo_ros.core.planner_core import PlannerCore
from alpamayo_ros.core.ring_buffer import InsertStatus
from core_scenarios import EPOCH_NS, NS, Scenario, now_ns, odometry, rgb_image

MS = 1_000_000


def test_jump_rule_refuses_strays_and_confirms_one_consistent_new_line():
    rule = JumpRule(back_ns=100 * MS)
    newest = 10 * NS
    assert rule.check("a", newest - 50 * MS, None, newest).verdict is LineVerdict.ON_LINE
    # Back by 3 s twice, then a stamp on yet another line: the run starts over.
    assert rule.check("a", 7 * NS, 1, newest) == input_streams.LineCheck(LineVerdict.OFF_LINE, 1)
    assert rule.check("a", 7 * NS + 20 * MS, 2, newest).in_row == 2
    assert rule.check("a", 4 * NS, 3, newest).in_row == 1
    # Another key has its own run; an on-line stamp ends the key's run.
    assert rule.check("b", 4 * NS, 0, newest).in_row == 1
    assert rule.check("b", newest, 0, newest).verdict is LineVerdict.ON_LINE
    assert rule.check("b", 4 * NS, 0, newest).in_row == 1
    assert rule.check("a", 4 * NS + 10 * MS, 4, newest).verdict is LineVerdict.OFF_LINE
    jump = rule.check("a", 4 * NS + 20 * MS, 5, newest)
    assert jump.verdict is LineVerdict.JUMP and jump.in_row == TIME_JUMP_CONFIRMATIONS
    assert [item for _, item in jump.held] == [3, 4, 5]
    assert rule.check("a", 4 * NS, 6, newest).in_row == 1  # the run was handed over


def test_jump_rule_with_a_forward_bound():
    rule = JumpRule(back_ns=100 * MS, forward_ns=5 * NS)
    assert rule.departure_ns(16 * NS, 10 * NS) == 6 * NS
    assert rule.departure_ns(14 * NS, 10 * NS) == 0
    assert rule.departure_ns(9 * NS, 10 * NS) == -NS
    assert rule.departure_ns(9 * NS, None) == 0
    assert JumpRule(back_ns=100 * MS).departure_ns(100 * NS, 10 * NS) == 0


def test_typed_events_and_counters_keyed_by_enums():
    jumps = []
    streams = InputStreams(PlannerConfig(), on_time_jump=jumps.append)
    start = EPOCH_NS + 10 * NS
    assert streams.add_image(0, start, rgb_image()).status is InsertStatus.ADDED
    assert streams.add_image(0, start, rgb_image()).status is InsertStatus.REPLACED
    assert streams.add_image(7, start, rgb_image()).status is InsertStatus.REJECTED
    results = [streams.add_image(0, start - 3 * NS + k * 10 * MS, rgb_image())
               for k in range(TIME_JUMP_CONFIRMATIONS)]
    assert [r.status for r in results] == [InsertStatus.REJECTED] * 2 + [InsertStatus.ADDED]
    assert isinstance(results[-1].time_jump, TimeJump) and jumps == [results[-1].time_jump]
    change = streams.add_odometry(odometry(start, (0, 0, 0), (0, 0, 0, 1), "map"))
    assert change.frame_change is None
    change = streams.add_odometry(odometry(start + 20 * MS, (0, 0, 0), (0, 0, 0, 1), "odom"))
    assert change.frame_change.current == ("odom", "base_link")
    counts = streams.counts()
    assert counts.inserts[StreamKind.CAMERA, InsertStatus.ADDED] == 2
    assert counts.inserts[StreamKind.CAMERA, InsertStatus.REPLACED] == 1
    assert counts.inserts[StreamKind.CAMERA, InsertStatus.REJECTED] == 3
    assert counts.inserts[StreamKind.ODOMETRY, InsertStatus.ADDED] == 2
    assert counts.events[InputEvent.OUT_OF_ORDER] == 2
    assert counts.events[InputEvent.TIME_JUMP] == 1
    assert counts.events[InputEvent.ODOMETRY_FRAME_CHANGE] == 1


def test_each_odometry_sample_is_checked_once(monkeypatch):
    calls = []
    original = input_streams.checked_odometry
    monkeypatch.setattr(input_streams, "checked_odometry",
                        lambda sample: calls.append(sample) or original(sample))
    streams = InputStreams(PlannerConfig())
    sample = odometry(EPOCH_NS, (1, 2, 0), (0, 0, 0, 1.05))  # normalised by the check
    assert streams.add_odometry(sample).accepted and len(calls) == 1
    checked = original(odometry(EPOCH_NS + 20 * MS, (1, 2, 0), (0, 0, 0, 1)))
    assert streams.add_checked_odometry(checked).accepted and len(calls) == 1
    assert streams.snapshot().odometry_items[0][1][3] == pytest.approx(1.0)


def test_plan_uses_the_snapshot_not_the_buffers_of_later():
    core = PlannerCore(PlannerConfig(), ConstantVelocityModel())
    scenario = Scenario()
    scenario.advance(core, 2.0)
    snapshot = core.inputs.snapshot()
    scenario.advance(core, 3.0)
    earlier = core.plan(snapshot, now_ns(2.0))
    assert earlier.status is PlanStatus.OK
    assert earlier.t0_ns <= now_ns(2.0)
    later = core.tick(now_ns(3.0))
    assert later.status is PlanStatus.OK and later.t0_ns > now_ns(2.9)
    assert core.counters().ok == core.counters().ticks == 2
