"""The stall watch, pure and with hand-driven clocks."""

from __future__ import annotations

import pytest

from agent.stall import Stall, StallWatch, detect


def test_detect_late_ticks_and_uncounted_time():
    assert detect((10.0, 50.0), (10.05, 50.05), 0.05, 0.25) is None
    assert detect((10.0, 50.0), (10.29, 50.29), 0.05, 0.25) is None  # late, within threshold
    late = detect((10.0, 50.0), (16.0, 56.0), 0.05, 0.25)
    assert late == Stall(10.0, 16.0, 0.0) and late.length == 6.0
    hidden = detect((10.0, 50.0), (10.05, 60.05), 0.05, 0.25)  # a suspend: boottime ran on
    assert hidden is not None and hidden.hidden == pytest.approx(10.0)
    assert hidden.length == pytest.approx(10.05)


class Clocks:
    def __init__(self) -> None:
        self.mono, self.boot = 100.0, 500.0

    def advance(self, mono: float, hidden: float = 0.0) -> None:
        self.mono += mono
        self.boot += mono + hidden


def test_check_at_act_time_fences_acts_and_asks_for_evidence():
    c = Clocks()
    seen: list[Stall] = []
    w = StallWatch(0.25, period=0.05, on_stall=seen.append, clock=lambda: c.mono,
                   boot=lambda: c.boot)
    c.advance(0.04)
    w.check()
    assert w.act_fence == float("-inf") and not seen
    c.advance(6.0)  # frozen: the tick has not run yet, the act asks first
    w.check()
    assert w.act_fence == pytest.approx(106.04) and w.hold_fence == float("-inf")
    assert len(seen) == 1 and w.stalls == 1 and w.longest == pytest.approx(6.04)
    w.check()  # the same stall is counted once
    assert w.stalls == 1


def test_uncounted_time_voids_old_evidence_for_holding_too():
    c = Clocks()
    w = StallWatch(0.25, clock=lambda: c.mono, boot=lambda: c.boot)
    c.advance(0.05, hidden=30.0)
    w.check()
    assert w.hold_fence == pytest.approx(100.05) == w.act_fence
