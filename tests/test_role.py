"""The role machine, pure: every safety rule driven by hand-made worlds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.role import (
    Activate,
    Campaign,
    Deactivate,
    Evict,
    Leader,
    Peer,
    RequestSwitchover,
    Resign,
    Role,
    RoleMachine,
    World,
)
from cluster.timing import Timing

T = Timing()  # ttl 2, keepalive 0.5, deadtime 2, window 2, margin 0.25


def world(now: float = 100.0, **kw: object) -> World:
    base = dict(now=now, me="r1", priority=200, lease_deadline=now + 1.9,
                lease_sent=now - 0.1, lease=7,
                etcd_ok=True, leader_known=True, leader=None, leader_absent_since=now - 1,
                peers=(Peer("r2", 100, alive=True, registered=True),))
    base.update(kw)
    return World(**base)  # type: ignore[arg-type]


def active_machine(term: int = 5, lease: int = 7) -> RoleMachine:
    """Active for ``term`` on ``lease``; licensed until 101.65 as of its last step."""
    m = RoleMachine(T)
    m.won(term, lease)
    m.role = Role.ACTIVE
    m.licensed_until = 101.65
    return m


def mine(term: int = 5) -> Leader:
    return Leader("r1", term, 7)


def test_lone_router_campaigns_then_activates_at_once() -> None:
    m = RoleMachine(T)
    actions, _ = m.step(world())
    assert actions == [Campaign()]
    m.won(5, 7)
    assert m.role is Role.CANDIDATE
    actions, _ = m.step(world(leader=mine()))
    assert actions == [Activate(5)] and m.role is Role.ACTIVE


def test_no_campaign_while_a_peer_claims_active_in_fresh_heartbeats() -> None:
    m = RoleMachine(T)
    claiming = Peer("r2", 100, alive=True, registered=True, active_heard=99.5, active_term=3)
    actions, wake = m.step(world(peers=(claiming,)))
    assert actions == [] and wake == pytest.approx(99.5 + T.deadtime)
    # Silent for deadtime: now it may campaign.
    actions, _ = m.step(world(now=101.6, peers=(replace(claiming, alive=False),)))
    assert actions == [Campaign()]


def test_no_campaign_without_etcd_or_lease() -> None:
    m = RoleMachine(T)
    assert m.step(world(etcd_ok=False))[0] == []
    assert m.step(world(lease_deadline=100.1))[0] == []  # within the margin: unproven
    assert m.step(world(leader_known=False))[0] == []


def test_lower_priority_waits_its_rank() -> None:
    m = RoleMachine(T)
    w = world(me="r3", priority=50, leader_absent_since=100.0,
              peers=(Peer("r1", 200, registered=True), Peer("r2", 100, alive=True)))
    actions, wake = m.step(w)
    assert actions == [] and wake == pytest.approx(100.0 + 2 * T.priority_step)
    assert m.step(replace(w, now=100.0 + 2 * T.priority_step))[0] == [Campaign()]


def test_candidate_waits_until_old_claims_are_past_the_ack_window() -> None:
    m = RoleMachine(T)
    m.won(9, 7)
    old = Peer("r2", 100, alive=False, active_heard=99.0, active_term=5)
    actions, wake = m.step(world(leader=Leader("r1", 9, 7), peers=(old,)))
    assert actions == [] and m.role is Role.CANDIDATE
    assert wake == pytest.approx(99.0 + T.window + T.margin)
    actions, _ = m.step(world(now=wake, lease_deadline=wake + 1.9, leader=Leader("r1", 9, 7),
                              peers=(old,)))
    assert actions == [Activate(9)]


def test_graceful_release_marker_skips_the_wait() -> None:
    m = RoleMachine(T)
    m.won(9, 7)
    old = Peer("r2", 100, alive=True, active_heard=99.9, active_term=5)
    w = world(leader=Leader("r1", 9, 7), peers=(old,), released=Leader("r2", 5))
    assert m.step(w)[0] == [Activate(9)]


def test_active_demotes_when_lease_unconfirmed_and_no_failsafe() -> None:
    m = active_machine()
    w = world(leader=mine(), lease_deadline=100.3, etcd_ok=False,
              peers=(Peer("r2", 100, alive=True, acked_send=None),))
    actions, wake = m.step(w)
    assert actions == [] and wake == pytest.approx(100.3 - T.margin)
    actions, _ = m.step(replace(w, now=100.06))
    assert actions == [Deactivate("licence expired (lease unconfirmed, no failsafe)")]
    assert m.role is Role.BACKUP


def test_failsafe_keeps_vips_while_every_peer_acks_and_drops_on_one_stale_ack() -> None:
    m = active_machine()
    peers = (Peer("r2", 100, alive=True, acked_send=99.8),
             Peer("r3", 50, alive=True, acked_send=99.9))
    w = world(leader=mine(), lease_deadline=90.0, etcd_ok=False, peers=peers)
    actions, wake = m.step(w)
    assert actions == [] and m.role is Role.ACTIVE
    assert wake == pytest.approx(99.8 + T.window - T.margin)  # the oldest ack rules
    assert m.licensed(w)
    stale = (peers[0], replace(peers[1], acked_send=98.0))
    actions, _ = m.step(replace(w, peers=stale))
    assert isinstance(actions[0], Deactivate) and m.role is Role.BACKUP


def test_failsafe_needs_every_configured_router_even_a_dead_one() -> None:
    m = active_machine()
    peers = (Peer("r2", 100, alive=True, acked_send=99.9), Peer("r3", 50, alive=False))
    w = world(leader=mine(), lease_deadline=90.0, etcd_ok=False, peers=peers)
    assert isinstance(m.step(w)[0][0], Deactivate)


def test_failsafe_counts_only_without_a_break() -> None:
    """Acknowledgements of heartbeats sent after the licence lapsed (a frozen router that
    resumes: its peers hear it again) prove nothing: another router may be active now."""
    m = active_machine()  # licensed until 101.65 at its last step
    fresh = (Peer("r2", 100, alive=True, acked_send=101.0),)
    assert m.step(world(now=101.2, leader=mine(), lease_deadline=90.0, peers=fresh))[0] == []
    assert m.licensed_until == pytest.approx(101.0 + T.window - T.margin)
    m2 = active_machine()
    after = (Peer("r2", 100, alive=True, acked_send=107.9),)  # sent after 101.65
    w = world(now=108.0, leader=mine(), lease_deadline=90.0, peers=after)
    assert isinstance(m2.step(w)[0][0], Deactivate)


def test_deposed_active_demotes_at_once_without_resigning() -> None:
    m = active_machine(5)
    actions, _ = m.step(world(leader=Leader("r2", 8, 3)))
    assert actions == [Deactivate("the leader key is no longer ours")]


def test_stale_leader_view_without_etcd_does_not_depose() -> None:
    m = active_machine(5)
    w = world(leader=Leader("r2", 8, 3), etcd_ok=False)
    assert m.step(w)[0] == [] and m.role is Role.ACTIVE


def test_stop_releases_before_resigning() -> None:
    m = active_machine(5)
    actions, _ = m.step(world(leader=mine(), stopping=True))
    assert actions == [Deactivate("shutting down"), Resign(5, "shutting down")]


def test_switchover_request_for_our_term_hands_over() -> None:
    m = active_machine(5)
    actions, _ = m.step(world(leader=mine(), switchover_to="r2", switchover_term=5))
    assert [type(a) for a in actions] == [Deactivate, Resign]
    # A request made against an older term is ignored by the new active.
    m2 = active_machine(6)
    assert m2.step(world(leader=mine(6), switchover_to="r2", switchover_term=5))[0] == []


def test_switchover_target_goes_first_others_defer() -> None:
    target = RoleMachine(T)
    w = world(me="r2", priority=100, switchover_to="r2", switchover_term=5,
              peers=(Peer("r1", 200, alive=True, registered=True),
                     Peer("r3", 50, alive=True, registered=True)),
              released=Leader("r1", 5), last_term=5)
    assert target.step(w)[0] == [Campaign()]
    other = RoleMachine(T)
    w3 = replace(w, me="r3", priority=50,
                 peers=(Peer("r1", 200, alive=True), Peer("r2", 100, alive=True)))
    actions, wake = other.step(w3)
    assert actions == [] and wake >= w3.leader_absent_since + T.switchover_wait  # type: ignore


def test_resigned_router_is_not_ranked_ahead_after_a_graceful_handover() -> None:
    m = RoleMachine(T)
    w = world(me="r2", priority=100, released=Leader("r1", 5), last_term=5,
              peers=(Peer("r1", 200, alive=True, registered=True),))
    assert m.step(w)[0] == [Campaign()]


def test_licensed_only_when_active_and_before_the_deadline() -> None:
    m = RoleMachine(T)
    assert not m.licensed(world())
    m = active_machine()
    assert m.licensed(world(leader=mine()))
    assert not m.licensed(world(leader=mine(), lease_deadline=100.1, etcd_ok=True))


def test_preempt_after_hold_down() -> None:
    m = RoleMachine(T)
    leader = Leader("r2", 4, 3)
    w = world(leader=leader, preempt=True, peers=(Peer("r2", 100, alive=True),))
    actions, wake = m.step(w)
    assert actions == [] and wake == pytest.approx(100.0 + T.hold_down)
    actions, _ = m.step(replace(w, now=wake, lease_deadline=wake + 1.9))
    assert actions == [RequestSwitchover("r1")]
    # Without preempt, never.
    m2 = RoleMachine(T)
    assert m2.step(replace(w, preempt=False, now=200.0, lease_deadline=201.9))[0] == []


def test_key_still_ours_on_our_lease_resumes_as_candidate() -> None:
    m = RoleMachine(T)
    actions, _ = m.step(world(leader=Leader("r1", 5, 7)))
    assert actions == [Activate(5)]
    m2 = RoleMachine(T)  # same name, other lease: a previous run's key, not ours
    assert m2.step(world(leader=Leader("r1", 5, 99)))[0] == []


def test_timing_problems_name_the_constraint() -> None:
    assert T.problems() == []
    assert "twice keepalive" in Timing(keepalive=1, deadtime=1.5).problems()[0]
    assert any("VIP lifetime" in p for p in Timing(keepalive=0.2, deadtime=0.5).problems())
    assert Timing(keepalive=0.1, deadtime=0.5, fast_eviction=True, margin=0.1).problems() == []


def test_fast_eviction_votes_then_revokes_when_every_live_backup_agrees() -> None:
    fast = Timing(keepalive=0.1, deadtime=0.5, margin=0.1, fast_eviction=True)
    m = RoleMachine(fast)
    holder = Peer("r1", 200, alive=False, registered=True, active_heard=99.0, active_term=4)
    other = Peer("r3", 50, alive=True, registered=True)
    w = world(me="r2", priority=100, leader=Leader("r1", 4, 11), peers=(holder, other))
    assert m.eviction_vote(w) == 4
    assert m.step(w)[0] == []  # r3 has not voted yet
    agreed = replace(w, evict_votes=(("r2", 4), ("r3", 4)))
    assert m.step(agreed)[0] == [Evict("r1", 4, 11)]
    # A vote for an older term does not count; an audible holder gets no vote at all.
    assert m.step(replace(w, evict_votes=(("r2", 4), ("r3", 3))))[0] == []
    assert m.eviction_vote(replace(w, peers=(replace(holder, alive=True), other))) is None
    # Without fast eviction, never.
    assert RoleMachine(T).eviction_vote(w) is None


def test_a_key_on_a_lost_lease_is_not_ours_even_in_a_stale_view() -> None:
    """Bug found by the failover tests: after etcd came back and our old lease was gone,
    a stale view still showed our old key and the candidate activated on it."""
    m = RoleMachine(T)
    m.won(27, 7)
    stale = world(leader=Leader("r1", 27, 7), lease=8)  # re-granted lease 8; key on lease 7
    actions, _ = m.step(stale)
    assert actions == [] and m.role is Role.BACKUP
    # An active (failsafe kept it) first tries to take the key back; failing, it demotes.
    m2 = active_machine(27)
    acked = replace(stale, peers=(Peer("r2", 100, alive=True, acked_send=99.9),))
    assert m2.step(acked)[0] == [Campaign()]
    assert m2.step(replace(acked, leader=Leader("r2", 31, 3)))[0] == [
        Deactivate("the leader key is no longer ours")]


def test_no_resume_while_etcd_is_unreachable() -> None:
    m = RoleMachine(T)
    w = world(leader=Leader("r1", 5, 7), etcd_ok=False, lease_deadline=99.0)
    assert m.step(w)[0] == [] and m.role is Role.BACKUP


def test_preempt_hold_down_restarts_after_a_demotion() -> None:
    """Bug found by the failover tests: healthy_since kept its start-up value across a
    demotion, so a returning high-priority router preempted at once."""
    m = active_machine(5)
    m.healthy_since = 1.0  # healthy since start-up
    m.step(world(leader=mine(), lease_deadline=90.0, etcd_ok=False))  # demoted
    assert m.role is Role.BACKUP
    back = world(leader=Leader("r2", 9, 3), preempt=True, peers=(Peer("r2", 100, alive=True),))
    actions, wake = m.step(back)
    assert actions == [] and wake == pytest.approx(100.0 + T.hold_down)


def test_active_in_failsafe_takes_its_expired_key_back_without_dropping_vips() -> None:
    m = active_machine(5)
    acks = (Peer("r2", 100, alive=True, registered=True, acked_send=99.9),)
    # etcd is back; our old key went with lease 7; every peer acknowledged us throughout
    back = world(leader=None, lease=8, peers=acks)
    assert m.step(back)[0] == [Campaign()] and m.role is Role.ACTIVE
    m.won(31, 8)
    assert m.role is Role.ACTIVE and m.term == 31 and m.term_lease == 8
    assert m.step(world(leader=Leader("r1", 31, 8), lease=8))[0] == []
    # Someone else got the key first: the one attempt fails, then we demote.
    m2 = active_machine(5)
    assert m2.step(back)[0] == [Campaign()]
    actions, _ = m2.step(world(leader=Leader("r2", 33, 3), lease=8, peers=acks))
    assert actions == [Deactivate("the leader key is no longer ours")]


def test_a_frozen_active_that_resumes_on_a_new_lease_demotes_and_does_not_rekey() -> None:
    """Bug found from outside (issue 9): frozen past its lease, the active resumed, was
    granted a new lease, and took its expired key back while holding the VIPs. A new lease
    proves nothing about the old term, and the acknowledgements are from before the freeze."""
    m = active_machine(5)
    before = (Peer("r2", 100, alive=True, registered=True, acked_send=99.8),)
    resumed = world(now=106.0, leader=None, lease=8, lease_sent=106.0,
                    lease_deadline=108.0, peers=before)
    actions, _ = m.step(resumed)
    assert actions == [Deactivate("licence expired (lease unconfirmed, no failsafe)")]
    assert m.role is Role.BACKUP and not m.licensed(resumed)


def test_licence_needs_the_lease_of_our_term() -> None:
    m = active_machine(5, lease=7)
    assert m.licensed(world(leader=mine()))
    assert m.licence(world(leader=mine(), lease=8)) == float("-inf")


def test_a_candidate_on_a_new_lease_does_not_activate() -> None:
    m = RoleMachine(T)
    m.won(9, 7)
    w = world(leader=None, lease=8, etcd_ok=False)  # lease 7 lost; the view is stale
    assert m.step(w)[0] == [] and m.role is Role.CANDIDATE


def test_evidence_from_before_a_stall_fence_does_not_count() -> None:
    m = active_machine()
    w = world(leader=mine(), lease_sent=99.9, peers=(Peer("r2", 100, acked_send=99.95),))
    assert m.licensed(w)
    assert not m.licensed(w, not_before=99.97)  # acts wait for fresh evidence
    assert m.licensed(replace(w, lease_sent=99.98), not_before=99.97)
    # uncounted time (the world's fence) voids the licence for holding, too
    actions, _ = m.step(replace(w, stall_fence=99.97))
    assert isinstance(actions[0], Deactivate)


def test_preempt_waits_until_the_connection_table_is_warm() -> None:
    """IPVS cannot pull connection state back: a returning router preempts only once its
    table is warm (the shell's measure), even after hold_down."""
    leader = Leader("r2", 4, 3)
    w = world(leader=leader, preempt=True, peers=(Peer("r2", 100, alive=True),),
              conn_warm_at=112.5)
    m = RoleMachine(T)
    actions, wake = m.step(w)
    assert actions == [] and wake == pytest.approx(112.5)  # later than hold_down (105)
    at_hold_down = replace(w, now=100.0 + T.hold_down, lease_deadline=106.9)
    actions, wake = m.step(at_hold_down)
    assert actions == [] and wake == pytest.approx(112.5)
    warm = replace(w, now=112.5, lease_deadline=114.4)
    assert m.step(warm)[0] == [RequestSwitchover("r1")]
    # Warm before hold_down ends: hold_down still rules.
    m2 = RoleMachine(T)
    early = replace(w, conn_warm_at=101.0)
    assert m2.step(early)[1] == pytest.approx(100.0 + T.hold_down)
    assert m2.step(replace(early, now=105.0, lease_deadline=106.9))[0] == [
        RequestSwitchover("r1")]


def test_preempt_never_while_the_table_is_not_known_warm() -> None:
    """inf (the sync receiver is not running): no switchover request, and the machine
    samples the world again each keepalive rather than sleeping forever."""
    w = world(leader=Leader("r2", 4, 3), preempt=True, peers=(Peer("r2", 100, alive=True),),
              conn_warm_at=float("inf"))
    m = RoleMachine(T)
    m.step(w)
    for now in (105.0, 150.0, 1000.0):
        actions, wake = m.step(replace(w, now=now, lease_deadline=now + 1.9))
        assert actions == [] and wake == pytest.approx(now + T.keepalive)
    # Once warm, it asks.
    assert m.step(replace(w, now=1001.0, lease_deadline=1002.9, conn_warm_at=1000.5))[0] == [
        RequestSwitchover("r1")]


def test_a_cold_table_delays_nothing_but_preemption() -> None:
    """Crash failover, operator switchovers and start-up never wait for warmth: a router
    whose table is cold still campaigns when the leader key is gone."""
    cold = float("inf")
    m = RoleMachine(T)
    assert m.step(world(conn_warm_at=cold))[0] == [Campaign()]
    m.won(5, 7)
    assert m.step(world(leader=mine(), conn_warm_at=cold))[0] == [Activate(5)]
    # Without preempt the table's warmth changes nothing either.
    m2 = RoleMachine(T)
    w = world(leader=Leader("r2", 4, 3), peers=(Peer("r2", 100, alive=True),),
              conn_warm_at=cold)
    assert m2.step(w) == ([], float("inf"))
