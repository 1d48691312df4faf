"""The token bucket that keeps health publication under a rate of etcd operations."""

from __future__ import annotations

from agent.health.budget import OpsBudget


def test_a_burst_goes_at_once_then_the_rate_holds() -> None:
    b = OpsBudget(rate=1000, burst=500)
    assert b.wait(500, 0.0) == 0.0
    b.spend(500, 0.0)
    assert b.wait(100, 0.0) == 0.1  # 100 operations at 1000/s
    assert b.wait(100, 0.05) == 0.05
    assert b.wait(100, 0.1) == 0.0


def test_sustained_load_is_bounded_by_the_rate() -> None:
    b = OpsBudget(rate=2000, burst=1000)
    now, sent = 0.0, 0
    while now < 10.0:  # a writer that always has 100 operations to send
        now += b.wait(100, now)
        b.spend(100, now)
        sent += 100
    assert sent <= 1000 + 2000 * 10 + 100


def test_a_request_larger_than_the_burst_is_not_starved() -> None:
    b = OpsBudget(rate=100, burst=50)
    b.spend(50, 0.0)
    assert b.wait(500, 0.0) == 0.5  # waits for a full bucket, then goes
    b.spend(500, 0.5)
    assert b.wait(10, 0.5) > 4.0  # and the ones after it pay for it
