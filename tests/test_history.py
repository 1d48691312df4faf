"""The cluster's history, pure parts: ids, retention, the one-line summaries, how a new
active tells a failover from a switchover, which verdicts are health transitions, and the
writer's bounded queue."""

from __future__ import annotations

import pytest

from agent.history import (
    HistoryWriter,
    OldActive,
    Takeover,
    health_transitions,
    takeover_event,
)
from cluster.documents import (
    ConfigHistoryEntry,
    FailoverEvent,
    HealthTransition,
    HealthVerdict,
    ReleasedMarker,
    SwitchoverEvent,
    SwitchoverRequest,
)
from cluster.etcd.client import KV
from cluster.health import ServerKey
from cluster.history import (
    DAY,
    RETENTION,
    Event,
    Retention,
    decode_event,
    event_id,
    id_time,
    kind_of,
    prune_plan,
)
from cluster.keys import Keys

T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z


def test_ids_sort_by_time_and_carry_it() -> None:
    a, b = event_id(T0, "r1", 7), event_id(T0 + 0.001, "r0", 1)
    assert a == "20261130T005320.000Z-r1-000007"
    assert a < b < event_id(T0 + 86400, "a", 0)
    assert id_time(a) == pytest.approx(T0)
    assert id_time("000000000012") is None and id_time("junk") is None


def test_keys_of_events_parse_back() -> None:
    keys = Keys("c")
    key = keys.history_event("health", event_id(T0, "web/1", 1))
    assert key.startswith("/lvs/c/history/health/") and "web%2F1" in key
    assert kind_of(keys, key) == "health"
    assert kind_of(keys, keys.config_history(14)) == "config"
    assert kind_of(keys, "/lvs/c/history/other/x") is None
    assert kind_of(keys, "/lvs/c/history/health/") is None
    assert kind_of(keys, "/lvs/c/health/a/b") is None


def ids(n: int, start: float = T0, step: float = 60.0) -> list[str]:
    return [event_id(start + i * step, "r1", i) for i in range(n)]


def test_prune_by_count_within_budget() -> None:
    policy = Retention(keep=10, max_age=None)
    old = ids(20)
    assert prune_plan(old[:5], 12, policy, T0, budget=5) == old[:2]
    assert prune_plan(old[:5], 100, policy, T0, budget=5) == old[:5]  # never a burst
    assert prune_plan(old[:5], 10, policy, T0, budget=5) == []


def test_prune_by_age_stops_at_the_first_young_one() -> None:
    policy = Retention(keep=1000, max_age=DAY)
    old = ids(6, start=T0 - 2 * DAY, step=DAY / 2)  # 2, 1.5, 1, 0.5, 0, -0.5 days old
    now = T0
    assert prune_plan(old, 6, policy, now, budget=20) == old[:2]
    assert prune_plan(old, 6, policy, now, budget=1) == old[:1]
    # count first, then age, all within one budget
    assert prune_plan(old, 1003, policy, now, budget=4) == old[:3]
    # an id without a time is only ever pruned by count
    assert prune_plan(["nodate", *old], 7, policy, now, budget=20) == []


def test_retention_is_bounded_for_every_router_written_kind() -> None:
    assert set(RETENTION) == {"failover", "switchover", "health", "config"}
    for kind in ("failover", "switchover", "health"):
        assert 0 < RETENTION[kind].keep <= 1000 and RETENTION[kind].max_age is not None
    assert RETENTION["config"] == Retention(100, None)


def ev(doc: object, kind: str) -> Event:
    return Event(kind, f"/lvs/c/history/{kind}/x", 1, doc)  # type: ignore[arg-type]


def test_summaries_say_who_what_why_and_the_gap() -> None:
    f = ev(FailoverEvent(at="t", node="r2", term=9, previous="r1", previous_term=7,
                         reason="r1 silent for 1.2 s", gap_ms=1450), "failover")
    assert f.summary() == "r2 took over from r1 (term 7 -> 9): r1 silent for 1.2 s; gap 1450 ms"
    assert f.who == "r2" and f.gap_ms == 1450 and f.at == "t"
    s = ev(SwitchoverEvent(at="t", node="r2", term=9, previous="r1", previous_term=7,
                           by="root@ops", reason="lvsctl switchover", to="r2", gap_ms=3),
           "switchover")
    assert s.summary() == ("r1 handed over to r2 (term 7 -> 9), asked by root@ops "
                           "(lvsctl switchover); gap 3 ms")
    assert s.who == "root@ops"
    h = ev(HealthTransition(virtual="http", server="web1", previous="up", state="down",
                            reason="connect refused", observed_by=("r1", "r2"), by="r1",
                            dropped_before=3), "health")
    assert h.summary() == ("http/web1 up -> down (connect refused), observed by r1,r2 "
                           "[3 earlier transitions not recorded]")
    c = ev(ConfigHistoryEntry(serial_no=14, pushed_at="t", pushed_by="me@h",
                              changes=("a", "b")), "config")
    assert c.summary() == "serial_no 14 pushed by me@h (2 changes)" and c.at == "t"
    js = c.to_json()
    assert js["kind"] == "config" and js["event"]["serial_no"] == 14 and js["who"] == "me@h"


def test_decode_event_from_a_key_value() -> None:
    keys = Keys("c")
    doc = FailoverEvent(node="r2", term=9)
    kv = KV(keys.history_event("failover", "id"), doc.encode().encode(), 5, 5, 1, 0)
    event = decode_event(keys, kv)
    assert event.kind == "failover" and event.revision == 5 and event.doc == doc
    with pytest.raises(ValueError, match="not a valid failover event"):
        decode_event(keys, KV(kv.key, b"{}", 5, 5, 1, 0))


# -- what the new active records -----------------------------------------------------------

def test_a_crash_is_a_failover_with_the_gap_since_the_last_heartbeat() -> None:
    seen = Takeover(old=OldActive("r1", 7, last_active=100.0, alive=False), key_gone=101.0)
    e = takeover_event(node="r2", term=9, at=T0, vips_up=101.5, seen=seen)
    assert isinstance(e, FailoverEvent)
    assert (e.previous, e.previous_term, e.gap_ms, e.takeover_ms) == ("r1", 7, 1500, 500)
    assert e.reason == "r1 silent for 1.5 s (no heartbeat); its leader key went away"


@pytest.mark.parametrize(("old", "reason"), [
    (OldActive("r1", 7, alive=True, etcd_ok=False, role="active"), "r1 lost etcd"),
    (OldActive("r1", 7, alive=True, role="backup"), "r1 gave the role up"),
    (OldActive("r1", 7, alive=False), "r1 not heard"),
    (OldActive("r2", 7), "r2 lost its own term 7"),
    (None, "no active router before"),
])
def test_failover_reasons(old: OldActive | None, reason: str) -> None:
    e = takeover_event(node="r2", term=9, at=T0, vips_up=10.0, seen=Takeover(old=old))
    assert isinstance(e, FailoverEvent) and e.reason.startswith(reason)
    assert e.gap_ms is None and e.takeover_ms is None


def test_a_requested_hand_over_is_a_switchover_naming_who_asked() -> None:
    request = SwitchoverRequest(to="r2", term=7, id="abc", by="root@ops",
                                reason="lvsctl switchover")
    seen = Takeover(old=OldActive("r1", 7, last_active=10.0, alive=True, role="backup"),
                    key_gone=10.01, released=ReleasedMarker(node="r1", term=7),
                    request=request)
    e = takeover_event(node="r2", term=9, at=T0, vips_up=10.02, seen=seen)
    assert isinstance(e, SwitchoverEvent)
    assert (e.previous, e.by, e.to, e.request, e.reason, e.gap_ms) == (
        "r1", "root@ops", "r2", "abc", "lvsctl switchover", 20)


def test_a_shutdown_hand_over_is_a_switchover_by_the_old_active() -> None:
    seen = Takeover(old=OldActive("r1", 7), key_gone=5.0,
                    released=ReleasedMarker(node="r1", term=7, reason="shutting down"),
                    request=SwitchoverRequest(to="r3", term=3))  # stale: another term
    e = takeover_event(node="r2", term=9, at=T0, vips_up=5.1, seen=seen)
    assert isinstance(e, SwitchoverEvent)
    assert (e.by, e.reason, e.to, e.gap_ms) == ("r1", "shutting down", "", 100)


def test_an_old_release_marker_does_not_hide_a_failover() -> None:
    seen = Takeover(old=OldActive("r1", 7), released=ReleasedMarker(node="r1", term=5))
    assert isinstance(takeover_event(node="r2", term=9, at=T0, vips_up=1.0, seen=seen),
                      FailoverEvent)


def verdict(state: str) -> HealthVerdict:
    return HealthVerdict(state=state, reason=f"is {state}")  # type: ignore[arg-type]


def test_health_transitions_are_state_changes_not_startup() -> None:
    a, b, c, d, e = (ServerKey("v", s) for s in "abcde")
    stored = {a: verdict("up"), b: verdict("unknown"), c: verdict("down"), e: verdict("up")}
    written = {a: verdict("down"), b: verdict("up"), c: verdict("down"),
               d: verdict("unknown"), e: None}
    out = health_transitions(stored, written, by="r1", term=9, at=T0)
    assert [(t.server, t.previous, t.state, t.by, t.term) for t in out] == [
        ("a", "up", "down", "r1", 9)]
    assert out[0].reason == "is down"
    # a server that is down from the start is worth a line; unknown -> down too
    out = health_transitions({b: verdict("unknown")}, {b: verdict("down"), d: verdict("down")},
                             by="r1", term=9, at=T0)
    assert [(t.server, t.previous) for t in out] == [("b", "unknown"), ("d", None)]


# -- the writer's queue ------------------------------------------------------------------

def test_the_queue_is_bounded_and_drops_are_counted() -> None:
    w = HistoryWriter(None, Keys("c"), "r1", health_queue=3)  # type: ignore[arg-type]
    tr = HealthTransition(virtual="v", server="s", state="down")
    assert all(w.record(tr) for _ in range(3))
    assert not w.record(tr) and not w.record(tr)
    assert w.stats.dropped == {"health": 2} and w.pending == 3
    # failovers have their own room: a flood of health transitions never crowds them out
    assert w.record(FailoverEvent(node="r1"))
    assert w.pending == 4


def test_the_writer_exports_its_counts() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from agent.history import metrics

    w = HistoryWriter(None, Keys("c"), "r1", health_queue=1)  # type: ignore[arg-type]
    w.record(HealthTransition(virtual="v", server="s", state="down"))
    w.record(HealthTransition(virtual="v", server="s", state="up"))

    class Collector:
        def collect(self):  # type: ignore[no-untyped-def]
            return metrics(w)

    registry = CollectorRegistry()
    registry.register(Collector())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert 'lvs_history_events_dropped_total{kind="health"} 1.0' in text
    assert 'lvs_history_events_written_total{kind="failover"} 0.0' in text
    assert "lvs_history_events_queued 1.0" in text and "lvs_history_write_errors_total 0.0" in text


def test_durations_for_since() -> None:
    from cluster.lvsctl.history_cmds import parse_duration

    assert parse_duration("90") == 90 and parse_duration("30s") == 30
    assert parse_duration("1h30m") == 5400 and parse_duration("7d") == 7 * 86400
    assert parse_duration("1w") == 7 * 86400 and parse_duration("0.5h") == 1800
    for bad in ("", "soon", "5x", "1h 30m", "m5", "-3h"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_lines_and_tables_of_events() -> None:
    from rich.console import Console

    from cluster.lvsctl.history_cmds import plain_line, table

    f = ev(FailoverEvent(at="2026-12-06T12:00:00.000Z", node="r2", previous="r1", gap_ms=9),
           "failover")
    h = ev(HealthTransition(at="2026-12-06T12:00:01.000Z", virtual="v", server="[s]",
                            previous="up", state="down", by="r2"), "health")
    assert plain_line(f) == ("2026-12-06T12:00:00.000Z  failover    r2  r2 took over from r1 "
                             "(term ? -> 0); gap 9 ms")
    console = Console(width=140, record=True, color_system="truecolor")
    console.print(table([f, h]))
    text = console.export_text(clear=False)
    assert "2026-12-06 12:00:00.000" in text and "9 ms" in text
    assert "v/[s] up -> down" in text  # names are not markup
    assert "\x1b[31m" in console.export_text(styles=True)  # colours on a terminal
