"""LockstepGate: which control steps must wait for the planner, and until when.

In lockstep the planner's rclpy timer runs on sim time; started before the simulator's
first /clock, it fires at every multiple k * period (k >= 1) of sim time, and its output
carries that tick time (PlannerOutput.tick_stamp). At a step whose stamp is such a tick
time, the controller withholds its command until the output of that tick has arrived
(whatever its status: a skipped tick answers the tick too). The simulator waits for the
command, so it cannot advance while the planner thinks: sim-time latency is exactly the
tick-to-t0 offset, however long inference takes on the wall clock.

One message cannot switch the gate off: a tick stamp is taken only inside
[newest answered tick, newest odometry stamp + one period] (a planner ticks at the sim
time it has seen, which the odometry reaches at most one period later). A stamp outside,
e.g. an hour ahead (which, kept, would answer every later tick), or any stamp before the
first odometry (no time to compare it with), is ignored and counted with its reason.
"""
from __future__ import annotations

from typing import Optional

from alpamayo_ros.core.types import NS_PER_S


class LockstepGate:
    """period_ns: the planner's tick period [ns] (> 0)."""

    def __init__(self, period_ns: int) -> None:
        if period_ns <= 0:
            raise ValueError(f"planning period must be > 0 ns, have {period_ns}")
        self.period_ns = int(period_ns)
        self.newest_tick_ns = -1
        # Newest odometry stamp seen on the current time line (None: none yet).
        self.now_ns: Optional[int] = None
        self.waits = 0
        self.timeouts = 0
        self.ignored_ticks = 0
        self.last_ignored = ""

    def is_tick(self, stamp_ns: int) -> bool:
        return stamp_ns >= self.period_ns and stamp_ns % self.period_ns == 0

    def note_odometry(self, stamp_ns: int) -> None:
        """An odometry sample stamped stamp_ns arrived (call reset() first when sim time
        went back)."""
        self.now_ns = stamp_ns if self.now_ns is None else max(self.now_ns, int(stamp_ns))

    def note_output(self, tick_ns: int) -> Optional[str]:
        """The planner answered the tick at tick_ns: None when taken, else why it was
        ignored (counted in ignored_ticks, kept in last_ignored)."""
        tick_ns = int(tick_ns)
        if self.now_ns is None:
            reason = f"tick {tick_ns / NS_PER_S:.3f} s arrived before any odometry"
        elif tick_ns < self.newest_tick_ns:
            reason = (f"tick {tick_ns / NS_PER_S:.3f} s is before the newest answered tick "
                      f"{self.newest_tick_ns / NS_PER_S:.3f} s")
        elif tick_ns > self.now_ns + self.period_ns:
            reason = (f"tick {tick_ns / NS_PER_S:.3f} s is more than one period "
                      f"({self.period_ns / NS_PER_S:g} s) after the newest odometry "
                      f"{self.now_ns / NS_PER_S:.3f} s")
        else:
            self.newest_tick_ns = tick_ns
            return None
        self.ignored_ticks += 1
        self.last_ignored = reason
        return reason

    def must_wait(self, stamp_ns: int) -> bool:
        """True when the step at stamp_ns is a planning tick not answered yet."""
        return self.is_tick(stamp_ns) and self.newest_tick_ns < stamp_ns

    def reset(self) -> None:
        """Sim time went back: forget the ticks answered and the time seen on the old time
        line."""
        self.newest_tick_ns = -1
        self.now_ns = None
