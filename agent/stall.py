"""Notice this agent's own stalls: a late event loop, or time its monotonic clock missed.

A stalled agent (a paused VM, a swap storm, a cgroup freeze, SIGSTOP, a debugger) wakes up
with old beliefs and overdue timers. Every act that asserts ownership checks the licence
at that instant anyway (docs/protocol.md, "Licence"); this watch adds two fences:

* after any stall (ticks further apart than ``period + threshold``) acts need evidence
  sent after it: a fresh lease confirmation or failsafe round (``act_fence``); the
  watch asks for both at once through ``on_stall``;
* after time the monotonic clock did not count (CLOCK_BOOTTIME ran ahead of it: a
  suspend), every deadline computed before is unsound, so all older evidence is void for
  holding too (``hold_fence``): the role machine demotes.

:func:`detect` is the pure rule; :class:`StallWatch` runs it on a timer and at every check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

INF = float("inf")


def boottime() -> float:
    """Seconds since boot including suspend (CLOCK_BOOTTIME; the monotonic clock if absent)."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


@dataclass(frozen=True)
class Stall:
    """The agent ran nothing from ``start`` to ``end`` (monotonic); ``hidden`` seconds of
    real time passed that the monotonic clock did not count."""

    start: float
    end: float
    hidden: float = 0.0

    @property
    def length(self) -> float:
        return self.end - self.start + self.hidden


def detect(last: tuple[float, float], now: tuple[float, float], period: float,
           threshold: float) -> Stall | None:
    """A stall between two samples ``(monotonic, boottime)`` taken ``period`` apart when on
    time; None if both clocks moved by no more than ``period + threshold``."""
    mono = now[0] - last[0]
    hidden = (now[1] - last[1]) - mono
    if mono > period + threshold or hidden > threshold:
        return Stall(last[0], now[0], max(0.0, hidden))
    return None


class StallWatch:
    """Ticks every ``period`` s; a late tick (or a late :meth:`check`) is a stall."""

    def __init__(self, threshold: float, period: float = 0.05,
                 on_stall: Callable[[Stall], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 boot: Callable[[], float] = boottime) -> None:
        self.threshold = threshold
        self.period = period
        self.on_stall = on_stall or (lambda stall: None)
        self.clock, self.boot = clock, boot
        self.act_fence = -INF  # acts need evidence sent after this
        self.hold_fence = -INF  # evidence from before this is void altogether
        self.stalls = 0
        self.longest = 0.0
        self._last = (clock(), boot())

    def check(self) -> None:
        """Sample now: call right before an act, so a stall still in progress (the tick
        that would have noticed it has not run yet) counts at once."""
        now = (self.clock(), self.boot())
        stall = detect(self._last, now, self.period, self.threshold)
        if stall is not None:
            self._last = now
            self._record(stall)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            self.check()
            self._last = (self.clock(), self.boot())

    def _record(self, stall: Stall) -> None:
        self.stalls += 1
        self.longest = max(self.longest, stall.length)
        self.act_fence = max(self.act_fence, stall.end)
        if stall.hidden > self.threshold:
            self.hold_fence = max(self.hold_fence, stall.end)
            log.warning("stalled for %.3f s, %.3f s of it not counted by the monotonic clock: "
                        "every deadline computed before is void", stall.length, stall.hidden)
        else:
            log.warning("stalled for %.3f s: no act until the lease or the peers confirm again",
                        stall.length)
        self.on_stall(stall)
