"""Where the protocol's timers come from: one home per default (pure)."""

import pytest

from cluster import timing
from cluster.model import LvsConfig
from cluster.timing import Timing, margin_for, timing_from


def test_the_defaults_of_timing_are_those_of_an_empty_lvs_cf():
    assert Timing() == timing_from(LvsConfig())


def test_only_keepalive_and_deadtime_have_defaults_outside_the_model():
    # The model leaves them None ("not given", Piranha: 2 s / 5 s); pulse picks its own.
    cfg = LvsConfig()
    assert (cfg.keepalive, cfg.deadtime) == (None, None)
    assert (Timing().keepalive, Timing().deadtime) == (timing.DEFAULT_KEEPALIVE,
                                                       timing.DEFAULT_DEADTIME)


def test_lvs_cf_values_reach_timing():
    cfg = LvsConfig(lease_ttl=5, keepalive=0.25, deadtime=0.75, ack_window=1.5,
                    hold_down=7.5, fast_eviction=True)
    t = timing_from(cfg)
    assert (t.ttl, t.keepalive, t.deadtime, t.window, t.hold_down, t.fast_eviction) == (
        5.0, 0.25, 0.75, 1.5, 7.5, True)
    assert t.margin == margin_for(0.75) == pytest.approx(0.1875)


def test_deadtime_defaults_to_twice_a_long_keepalive():
    assert timing_from(LvsConfig(keepalive=1.5)).deadtime == 3.0


def test_safety_margin_overrides_the_default_and_must_stay_below_half_the_ttl():
    t = timing_from(LvsConfig(lease_ttl=6, keepalive=1, deadtime=6, safety_margin=1.0))
    assert t.margin == 1.0 and t.problems() == []
    assert "safety margin (3s) must be > 0 and < TTL/2" in timing_from(
        LvsConfig(lease_ttl=6, safety_margin=3.0)).problems()


def test_margin_is_a_quarter_of_a_short_deadtime_and_at_most_the_cap():
    assert margin_for(0.5) == 0.125
    assert margin_for(2.0) == margin_for(60.0) == timing.MAX_MARGIN


def test_bfd_class_timers_validate_with_fast_eviction_only():
    # issue 11: keepalive 0.03 s, deadtime 0.1 s. Without fast eviction a dead agent's VIP
    # (lifetime 1 s + kernel slack 1 s) could outlive the takeover wait: refused.
    bfd = timing_from(LvsConfig(keepalive=0.03, deadtime=0.1, fast_eviction=True))
    assert bfd.problems() == []
    assert bfd.margin == pytest.approx(0.025) and bfd.window == 0.1
    assert bfd.failsafe_possible  # 0.1 > 0.025 + 0.03: acks outlive a keepalive
    slow = timing_from(LvsConfig(keepalive=0.03, deadtime=0.1))
    assert any("VIP lifetime + kernel slack" in p for p in slow.problems())


def test_a_dead_verdict_needs_two_missed_heartbeats_at_any_speed():
    assert timing_from(LvsConfig(keepalive=0.03, deadtime=0.06, fast_eviction=True)
                       ).problems() == []
    assert "must be at least twice keepalive" in timing_from(
        LvsConfig(keepalive=0.03, deadtime=0.05, fast_eviction=True)).problems()[0]
