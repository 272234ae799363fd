"""The lockstep gate cannot be switched off by one message, and warnings are throttled by
kind (ROS-free: control/lockstep.py, core/log_throttle.py)."""
from __future__ import annotations

import pytest

from alpamayo_ros.control.lockstep import LockstepGate
from alpamayo_ros.core.log_throttle import KindThrottle, message_shape

S = 1_000_000_000
PERIOD = S // 2
STEP = S // 20


def test_ticks_are_the_multiples_of_the_period():
    gate = LockstepGate(PERIOD)
    assert not gate.is_tick(0) and gate.is_tick(PERIOD) and gate.is_tick(3 * PERIOD)
    assert not gate.is_tick(PERIOD + STEP)
    with pytest.raises(ValueError):
        LockstepGate(0)


def test_a_tick_an_hour_ahead_is_ignored_and_the_next_tick_still_waits():
    gate = LockstepGate(PERIOD)
    gate.note_odometry(9 * STEP)
    reason = gate.note_output(3600 * S)
    assert reason is not None and "more than one period" in reason
    assert gate.ignored_ticks == 1 and gate.last_ignored == reason
    assert gate.newest_tick_ns == -1
    gate.note_odometry(10 * STEP)
    assert gate.must_wait(10 * STEP)  # lockstep is still on
    assert gate.note_output(10 * STEP) is None
    assert not gate.must_wait(10 * STEP)
    assert gate.must_wait(20 * STEP)


@pytest.mark.parametrize("odometry_ns, tick_ns, taken", [
    (9 * STEP, PERIOD, True),                   # the planner's tick just ahead of our odometry
    (10 * STEP, PERIOD, True),                  # the tick of the held sample
    (9 * STEP, 9 * STEP + PERIOD, True),        # exactly one period ahead: the upper bound
    (9 * STEP, 9 * STEP + PERIOD + 1, False),   # beyond it
    (None, PERIOD, False),                      # before any odometry: nothing to compare with
])
def test_the_window_is_newest_tick_to_newest_odometry_plus_one_period(odometry_ns, tick_ns,
                                                                      taken):
    gate = LockstepGate(PERIOD)
    if odometry_ns is not None:
        gate.note_odometry(odometry_ns)
    assert (gate.note_output(tick_ns) is None) is taken
    assert gate.ignored_ticks == (0 if taken else 1)


def test_ticks_before_the_newest_answered_one_are_ignored_the_same_one_again_is_not():
    gate = LockstepGate(PERIOD)
    gate.note_odometry(40 * STEP)
    assert gate.note_output(2 * S) is None
    assert gate.note_output(2 * S) is None  # the same tick answered twice
    reason = gate.note_output(S)
    assert reason is not None and "before the newest answered tick" in reason
    assert gate.newest_tick_ns == 2 * S and gate.ignored_ticks == 1


def test_a_simulator_reset_starts_the_window_over():
    gate = LockstepGate(PERIOD)
    gate.note_odometry(100 * S)
    assert gate.note_output(100 * S) is None
    gate.reset()
    gate.note_odometry(STEP)
    assert gate.must_wait(PERIOD)  # the old time line's answers do not count
    assert gate.note_output(100 * S) is not None  # a late output of the old time line
    assert gate.note_output(PERIOD) is None


def test_the_throttle_logs_each_kind_once_per_period_whatever_the_text():
    throttle = KindThrottle(5.0)
    texts = [throttle.admit("future", f"plan refused: t0 is {0.1 + i * 1e-3:.3f} s ahead", 0.01 * i)
             for i in range(500)]  # 500 differing texts of one kind in 5 s
    assert sum(t is not None for t in texts) == 1
    # Another kind is not hidden by the flood.
    assert throttle.admit("anchor", "plan refused: anchored 8 m away", 4.0) is not None
    # After the period the kind is logged again, with the count left out.
    line = throttle.admit("future", "plan refused: t0 is 0.2 s ahead", 5.5)
    assert line == "plan refused: t0 is 0.2 s ahead (499 more of this kind not logged)"
    assert throttle.admit("future", "again", 5.6) is None


def test_messages_that_differ_only_in_numbers_have_one_shape():
    a = message_shape("plan refused: speed 50.1 m/s above max_plan_speed 40 m/s")
    b = message_shape("plan refused: speed 1e+200 m/s above max_plan_speed 40 m/s")
    assert a == b == "plan refused: speed # m/s above max_plan_speed # m/s"
    assert message_shape("plan has 300 poses, more than max_plan_waypoints 256") != \
        message_shape("plan message of 8000324 bytes, more than max_plan_message_bytes 1048576")
