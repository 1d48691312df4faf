"""PeerTable: liveness, claims and acknowledgements on an injected clock."""

import pytest

from agent.heartbeat import (
    Ack,
    ActiveClaim,
    Heartbeat,
    Incarnation,
    PeerAlive,
    PeerDead,
    PeerRestarted,
    PeerStatus,
    PeerTable,
)
from agent.heartbeat.table import SendHistory

ME = Incarnation(started=1000, nonce=111)
R2 = Incarnation(started=2000, nonce=222)
R3 = Incarnation(started=3000, nonce=333)
DEAD = 1.0


def table(history: int = 100) -> PeerTable:
    return PeerTable("r1", ME, ["r1", "r2", "r3"], deadtime=DEAD, history=history)


def hb(node="r2", seq=1, role="backup", term=0, etcd_ok=True, inc=None, acks=None) -> Heartbeat:
    inc = inc or {"r2": R2, "r3": R3}[node]
    return Heartbeat("lb", node, inc, seq, 0.0, role, term, etcd_ok, acks or {})


def test_peers_exclude_self():
    assert table().peers == ("r2", "r3")


def test_first_heartbeat_makes_peer_alive_with_status():
    t = table()
    changes = t.received(10.0, hb(role="backup", term=4), "10.0.0.2")
    assert changes == [PeerAlive("r2", 10.0), PeerStatus("r2", 10.0, "backup", 4, True)]
    assert t.alive("r2", 10.0) and not t.alive("r3", 10.0)
    assert t.last_heard("r2") == 10.0 and t.last_heard("r3") is None
    view = t.view("r2")
    assert view.address == "10.0.0.2" and view.term == 4 and view.seq == 1
    t.received(10.5, hb(seq=2, term=4), "192.0.2.2")  # over the second link
    view = t.view("r2")
    assert view.address == "192.0.2.2" and view.seq == 2
    assert view.links == {"10.0.0.2": 10.0, "192.0.2.2": 10.5}


def test_alive_until_deadtime_then_dead():
    t = table()
    t.received(10.0, hb())
    assert t.alive("r2", 10.999)
    assert not t.alive("r2", 11.0)
    assert t.tick(10.5) == []
    assert t.tick(11.2) == [PeerDead("r2", 11.0, 10.0)]
    assert t.tick(12.0) == []  # reported once


def test_steady_heartbeats_keep_peer_alive_without_events():
    t = table()
    t.received(0.0, hb(seq=1))
    for i in range(2, 50):
        assert t.received(i * 0.3, hb(seq=i)) == []
        assert t.tick(i * 0.3 + 0.1) == []
    assert t.alive_peers(50 * 0.3) == {"r2"}


def test_comeback_after_silence_reports_dead_then_alive_even_without_tick():
    t = table()
    t.received(0.0, hb(seq=1))
    changes = t.received(5.0, hb(seq=2))
    assert changes == [PeerDead("r2", 1.0, 0.0), PeerAlive("r2", 5.0)]


def test_next_deadline_follows_the_oldest_alive_peer():
    t = table()
    assert t.next_deadline() is None
    t.received(1.0, hb("r2"))
    t.received(1.5, hb("r3"))
    assert t.next_deadline() == 2.0
    t.tick(2.1)
    assert t.next_deadline() == 2.5


def test_status_change_is_reported_and_claims_tracked():
    t = table()
    t.received(1.0, hb(seq=1, role="backup", term=3))
    assert t.last_active_claim() is None
    assert t.received(1.1, hb(seq=2, role="backup", term=3)) == []
    changes = t.received(1.2, hb(seq=3, role="active", term=4, etcd_ok=False))
    assert changes == [PeerStatus("r2", 1.2, "active", 4, False)]
    t.received(1.3, hb(seq=4, role="active", term=4, etcd_ok=False))
    assert t.last_active_claim() == ActiveClaim("r2", 4, 1.3)
    assert t.active_claims(1.3) == {"r2": 4}
    assert t.active_claims(2.4) == {}  # dead peers claim nothing now
    assert t.last_active_claim() == ActiveClaim("r2", 4, 1.3)  # but the history stays


def test_overtaken_packet_counts_for_liveness_but_not_status():
    t = table()
    t.received(1.0, hb(seq=1, role="backup", term=3))
    t.received(1.1, hb(seq=3, role="active", term=4), "10.0.0.2")
    changes = t.received(1.2, hb(seq=2, role="backup", term=3), "192.0.2.2")  # slower link
    assert changes == []
    view = t.view("r2")
    assert (view.role, view.term, view.seq, view.last_heard) == ("active", 4, 3, 1.2)
    assert t.last_active_claim() == ActiveClaim("r2", 4, 1.1)


def test_two_active_claims_seen():
    t = table()
    t.received(1.0, hb("r2", role="active", term=5))
    t.received(1.1, hb("r3", role="active", term=6))
    assert t.active_claims(1.2) == {"r2": 5, "r3": 6}
    assert t.last_active_claim() == ActiveClaim("r3", 6, 1.1)


def test_restart_is_reported_and_resets_seq():
    t = table()
    t.received(1.0, hb(seq=900))
    new = Incarnation(started=9000, nonce=999)
    changes = t.received(1.5, hb(seq=1, inc=new))
    assert changes == [PeerRestarted("r2", 1.5, new), PeerStatus("r2", 1.5, "backup", 0, True)]
    assert t.view("r2").seq == 1
    assert t.acks()["r2"] == Ack(999, 1)


def test_acks_to_send_name_the_peers_incarnation_and_newest_seq():
    t = table()
    assert t.acks() == {}
    t.received(1.0, hb("r2", seq=7))
    t.received(1.0, hb("r2", seq=5))  # reordered, older
    t.received(1.0, hb("r3", seq=3))
    assert t.acks() == {"r2": Ack(222, 7), "r3": Ack(333, 3)}


def test_acked_since_is_send_time_of_newest_acked_seq():
    t = table()
    for seq in range(1, 11):
        t.sent(seq, 100.0 + seq)
    assert t.acked_since("r2") is None
    t.received(112.0, hb(seq=1, acks={"r1": Ack(111, 4)}))
    assert t.acked_seq("r2") == 4 and t.acked_since("r2") == 104.0
    t.received(112.1, hb(seq=2, acks={"r1": Ack(111, 9)}))
    assert t.acked_since("r2") == 109.0
    t.received(112.2, hb(seq=3, acks={"r1": Ack(111, 6)}))  # an older ack never goes back
    assert t.acked_since("r2") == 109.0


def test_acks_for_another_incarnation_or_unsent_seq_are_ignored():
    t = table()
    t.sent(1, 5.0)
    t.received(6.0, hb(seq=1, acks={"r1": Ack(nonce=12345, seq=1)}))  # our previous run
    t.received(6.0, hb(seq=2, acks={"r1": Ack(nonce=111, seq=50)}))  # never sent
    t.received(6.0, hb(seq=3, acks={"r3": Ack(nonce=111, seq=1)}))  # ack for someone else
    assert t.acked_seq("r2") is None and t.acked_since("r2") is None


def test_acked_since_none_when_acked_seq_left_the_history():
    t = table(history=5)
    for seq in range(1, 21):
        t.sent(seq, float(seq))
    t.received(21.0, hb(acks={"r1": Ack(111, 10)}))
    assert t.acked_seq("r2") == 10 and t.acked_since("r2") is None
    assert not t.all_acked_within(1000.0, 21.0, ["r2"])


def test_all_acked_within():
    t = table()
    for seq in range(1, 11):
        t.sent(seq, float(seq))
    assert not t.all_acked_within(5.0, 10.5)
    t.received(10.5, hb("r2", acks={"r1": Ack(111, 9)}))
    assert not t.all_acked_within(5.0, 10.5)  # r3 never acked
    assert t.all_acked_within(5.0, 10.5, ["r2"])
    t.received(10.6, hb("r3", acks={"r1": Ack(111, 3)}))
    assert not t.all_acked_within(5.0, 10.6)  # r3's ack is of seq 3, sent at 3.0
    assert t.all_acked_within(8.0, 10.6)
    t.received(10.7, hb("r3", seq=2, acks={"r1": Ack(111, 10)}))
    assert t.all_acked_within(1.8, 10.7)  # r2 acked seq 9 (sent 9.0), r3 seq 10
    assert not t.all_acked_within(1.8, 12.0)  # time passes, nothing new acked
    assert t.all_acked_within(1.0, 10.0, [])


def test_unknown_peer_queries_are_errors():
    t = table()
    with pytest.raises(KeyError):
        t.alive("r9", 0.0)
    with pytest.raises(KeyError):
        t.received(0.0, hb(node="r1", inc=ME))


def test_send_history_is_bounded_and_ordered():
    h = SendHistory(3)
    for seq in [1, 2, 4, 5]:
        h.add(seq, seq * 10.0)
    assert [h.time_of(s) for s in [1, 2, 3, 4, 5, 6]] == [None, 20.0, None, 40.0, 50.0, None]
    with pytest.raises(ValueError):
        h.add(5, 60.0)
