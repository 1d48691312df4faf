"""The nanny state machine, pure, with an injected clock."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.nanny.state import (
    StateSpec,
    StateSpecError,
    Tracked,
    initial,
    is_news,
    step,
    transition,
)
from cluster.health import Health


def feed(tracked, spec, events, weight=1):
    """Apply (now, ok) events; return the list of healths after each."""
    out = []
    for now, ok in events:
        tracked = step(tracked, spec, now, ok, "ok" if ok else "connect refused", weight)
        out.append(tracked.health)
    return out


def test_new_server_comes_up_on_its_first_success_like_nanny():
    spec = StateSpec()
    t = initial(None, 0.0, 5)
    assert t.health.state == "unknown"
    up = step(t, spec, 1.0, True, "connected", 5)
    assert up.health == Health("up", since=1.0, reason="connected", weight=5)
    assert is_news(t, up)
    change = transition(("vs", "rs1"), t, up)
    assert (change.key, change.old, change.new) == (("vs", "rs1"), "unknown", "up")
    assert (change.since, change.weight) == (1.0, 5) and change.health is up.health


def test_one_failure_takes_a_server_down_by_default():
    spec = StateSpec()
    up = initial("up", 0.0, 1)
    down = step(up, spec, 2.0, False, "connect refused", 1)
    assert (down.health.state, down.health.since, down.health.reason) == (
        "down", 2.0, "connect refused")
    assert is_news(up, down)


def test_failures_to_down_counts_consecutive_failures_only():
    spec = StateSpec(failures_to_down=3)
    h = initial("up", 0.0, 1)
    states = [x.state for x in feed(h, spec, [(1, False), (2, False), (3, True), (4, False),
                                               (5, False), (6, False)])]
    assert states == ["up", "up", "up", "up", "up", "down"]


def test_first_failure_of_a_new_server_takes_it_down_and_reentry_applies():
    spec = StateSpec(reentry=10)
    t = step(initial(None, 0.0, 1), spec, 0, False, "connect refused", 1)
    assert t.health.state == "down"
    states = [x.state for x in feed(t, spec, [(1, True), (6, True), (10.9, True), (11, True)])]
    assert states == ["down", "down", "down", "up"]


def test_reentry_needs_continuous_success():
    spec = StateSpec(reentry=10)
    t = initial("down", 0.0, 1)
    events = [(1, True), (8, True), (9, False), (10, True), (15, True), (19.5, True), (20, True)]
    hs = feed(t, spec, events)
    assert [x.state for x in hs] == ["down"] * 6 + ["up"]
    assert hs[-1].since == 20
    assert hs[-1].reason == "ok (ok for 10s)"
    for now, ok in events:
        t = step(t, spec, now, ok, "ok" if ok else "connect refused", 1)
    assert t.failures == 0


def test_reentry_zero_comes_back_at_once():
    down = initial("down", 0.0, 1)
    assert step(down, StateSpec(reentry=0), 1.0, True, "ok", 1).health.state == "up"


def test_down_keeps_the_reason_it_went_down_for():
    spec = StateSpec()
    down = step(initial("up", 0.0, 1), spec, 1.0, False, "connect refused", 1)
    later = step(down, spec, 2.0, False, "timeout after 1s", 1)
    assert later is down  # nothing new: same object, no allocation
    assert later.health.reason == "connect refused"


def test_steady_states_return_the_same_object():
    spec = StateSpec()
    up = step(initial("up", 0.0, 1), spec, 1.0, True, "ok", 1)
    assert step(up, spec, 2.0, True, "ok", 1) is up


def test_weight_change_while_up_is_news_but_not_while_down():
    spec = StateSpec(reentry=100)
    up = initial("up", 0.0, 4)
    heavier = step(up, spec, 1.0, True, "exit 7: weight 5", 5)
    assert (heavier.health.state, heavier.health.weight, heavier.health.since) == ("up", 5, 0.0)
    assert is_news(up, heavier)
    down = initial("down", 0.0, 4)
    assert not is_news(down, step(down, spec, 1.0, True, "exit 7: weight 5", 5))


def test_clock_going_back_restarts_the_reentry_wait():
    spec = StateSpec(reentry=10)
    h = step(initial("down", 0.0, 1), spec, 100.0, True, "ok", 1)
    h = step(h, spec, 50.0, True, "ok", 1)  # wall clock stepped back
    assert h.ok_since == 50.0
    assert step(h, spec, 59.0, True, "ok", 1).health.state == "down"
    assert step(h, spec, 60.0, True, "ok", 1).health.state == "up"


def test_bad_state_specs_and_initial_states():
    with pytest.raises(StateSpecError, match="failures_to_down must be >= 1"):
        StateSpec(failures_to_down=0)
    with pytest.raises(StateSpecError, match="reentry must be"):
        StateSpec(reentry=-1)
    with pytest.raises(StateSpecError, match="initial state must be"):
        initial("sideways", 0.0, 1)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    failures_to_down=st.integers(1, 4),
    reentry=st.integers(0, 20),
    results=st.lists(st.booleans(), max_size=60),
)
def test_properties_of_the_state_machine(failures_to_down, reentry, results):
    """Down only after N failures in a row; up again only after `reentry` s of success."""
    spec = StateSpec(failures_to_down=failures_to_down, reentry=reentry)
    h = Tracked(Health("up", since=0.0, reason="initial", weight=1))
    run_fail = 0
    ok_since = 0.0  # the initial "up" counts as a success at t=0
    for t, ok in enumerate(results, start=1):
        new = step(h, spec, float(t), ok, "r", 1)
        if ok:
            ok_since = ok_since if run_fail == 0 else float(t)
            run_fail = 0
        else:
            run_fail += 1
        if h.health.state == "up" and new.health.state == "down":
            assert run_fail == failures_to_down
        if h.health.state == "down" and new.health.state == "up":
            assert ok and t - ok_since >= reentry
        if h.health.state == "up" and not ok and run_fail < failures_to_down:
            assert new.health.state == "up"
        if new is not h and new.health == h.health:
            assert new.health is h.health  # the health object is kept when it is unchanged
        h = new
