"""LockstepGate: which control steps must wait for the planner, and until when.

In lockstep the planner's rclpy timer runs on sim time; started before the simulator's
first /clock, it fires at every multiple k * period (k >= 1) of sim time, and its output
carries that tick time (PlannerOutput.tick_stamp). At a step whose stamp is such a tick
time, the controller withholds its command until the output of that tick has arrived
(whatever its status: a skipped tick answers the tick too). The simulator waits for the
command, so it cannot advance while the planner thinks: sim-time latency is exactly the
tick-to-t0 offset, however long inference takes on the wall clock.
"""
from __future__ import annotations


class LockstepGate:
    """period_ns: the planner's tick period [ns] (> 0)."""

    def __init__(self, period_ns: int) -> None:
        if period_ns <= 0:
            raise ValueError(f"planning period must be > 0 ns, have {period_ns}")
        self.period_ns = int(period_ns)
        self.newest_tick_ns = -1
        self.waits = 0
        self.timeouts = 0

    def is_tick(self, stamp_ns: int) -> bool:
        return stamp_ns >= self.period_ns and stamp_ns % self.period_ns == 0

    def note_output(self, tick_ns: int) -> None:
        """The planner answered the tick at tick_ns."""
        self.newest_tick_ns = max(self.newest_tick_ns, int(tick_ns))

    def must_wait(self, stamp_ns: int) -> bool:
        """True when the step at stamp_ns is a planning tick not answered yet."""
        return self.is_tick(stamp_ns) and self.newest_tick_ns < stamp_ns

    def reset(self) -> None:
        """Sim time went back: forget the ticks answered on the old time line."""
        self.newest_tick_ns = -1
