"""A frozen router never speaks for a VIP it lost (issue 9, section 1).

A real lab of three routers. The active's agent is frozen with SIGSTOP (alone, or with its
VIP guardian) for 0.5x, 1x and 3x the lease TTL; a backup is frozen; the active is frozen
during its gratuitous-ARP burst, and a switchover target as it takes over. ARP probers on
both LANs sample the owners every 10 ms and record every frame that claims an address.

A router is certainly unlicensed (docs/protocol.md, "Licence"):

* from its freeze + TTL - margin until it resumes: the licence is a deadline computed from
  the send time of the last confirmed lease refresh, and none can be sent while frozen;
* from the moment the leader key of its term is deleted (etcd let its lease go) until it
  wins the key again, if it does (a new term, fairly won).

No frame of it may claim a VIP in those stretches, and no probe may see two owners.
"""

from __future__ import annotations

import time

import pytest
from support.failover_kit import (
    LVSCTL,
    Cluster,
    LeaderEvent,
    Report,
    lab_for,
    measured,
    netns_mark,
    wait_for,
)

pytestmark = netns_mark

TTL, MARGIN = 2.0, 0.25  # the lab's lease TTL and safety margin (lvslab's lvs.cf)
EVERY = 0.01  # probe period: one ARP request per VIP every 10 ms


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    with lab_for("h", routers=3) as c:
        yield c


def key_deleted(events: list[LeaderEvent], after: float) -> float | None:
    """When the first deletion of the leader key after ``after`` was seen (None: never)."""
    return next((e.t for e in events if e.kind == "DELETE" and e.t > after), None)


def unlicensed(events: list[LeaderEvent], router: str, frozen: float, resumed: float,
               ) -> list[tuple[float, float]]:
    """Stretches in which ``router`` (frozen at ``frozen``, resumed at ``resumed``) was
    certainly unlicensed: the rest of its freeze past TTL - margin, and from the deletion of
    its key until it won the key again (the watcher sees both a little late: the stretch
    starts late and ends late, so the new term's first frames get half a second of slack)."""
    out = [(frozen + TTL - MARGIN, resumed)]
    gone = key_deleted(events, frozen)
    if gone is not None:
        again = next((e.t for e in events if e.kind == "PUT" and e.node == router
                      and e.t > gone), float("inf"))
        out.append((gone, again - 0.5))
    return out


def assert_silent_when_unlicensed(report: Report, router: str,
                                  stretches: list[tuple[float, float]]) -> None:
    """Never two owners, and no claim from ``router`` while it was certainly unlicensed."""
    report.assert_one_owner_at_a_time()
    late = [e for start, end in stretches for e in report.claims(router, start, end)]
    assert not late, (
        f"{router} claimed a VIP while unlicensed ({stretches}): "
        + ", ".join(f"{e.kind} {e.ip} at {e.t:.3f}" for e in late[:5]))


@pytest.mark.parametrize("guardian", [False, True], ids=["agent", "agent+guardian"])
@pytest.mark.parametrize("factor", [0.5, 1, 3])
def test_frozen_active_never_claims_a_vip_it_lost(cluster, factor, guardian):
    old = cluster.restore()
    with cluster.watch(every=EVERY) as watch, cluster.leader_events() as key:
        time.sleep(0.3)
        with cluster.frozen(old, guardian) as frozen:
            time.sleep(factor * TTL)
        resumed = time.monotonic()
        holder = cluster.wait_one_holder()
        time.sleep(1.5)  # what the resumed router does next
    report = watch.report
    gone = key_deleted(key, frozen)
    assert_silent_when_unlicensed(report, old, unlicensed(key, old, frozen, resumed))
    if factor >= 3:  # its lease ran out: another router took over, and it stays backup
        assert gone is not None and holder != old and cluster.one_holder() != old
        m = cluster.metrics(old)  # what the operator sees of it
        assert m["lvs_stalls_total"] >= 1 and m["lvs_stall_longest_seconds"] >= factor * TTL
        assert m["lvs_licence_remaining_seconds"] == -1.0
        assert m["lvs_vip_fence_enabled"] == 1.0 and m["lvs_vip_fence_errors_total"] == 0
    if factor <= 0.5:  # its lease outlived the freeze: it simply carries on
        assert gone is None and holder == old
    measured(f"freeze active {factor}x TTL ({'with' if guardian else 'without'} guardian)",
             holder=holder, key_deleted_after=(gone - frozen) if gone else None,
             gaps=",".join(f"{g:.2f}" for g in report.gaps(frozen)))


def test_frozen_backup_stays_silent(cluster):
    active = cluster.restore()
    backup = next(r for r in cluster.routers if r != active)
    with cluster.watch(every=EVERY) as watch:
        time.sleep(0.3)
        with cluster.frozen(backup, guardian=True) as frozen:
            time.sleep(3 * TTL)
        time.sleep(2.0)
    report = watch.report
    report.assert_one_owner_at_a_time()
    assert report.claims(backup, frozen - 1.0) == []
    assert report.owners() == [active]
    cluster.wait_healthy()


def test_frozen_during_its_gratuitous_arp_burst(cluster):
    """The new active is frozen 0.1 s into its first burst (5 rounds 0.2 s apart, a second
    burst after 5 s): the rounds still due when it resumes must not go out."""
    first = cluster.restore()
    with cluster.watch(every=EVERY) as watch, cluster.leader_events() as key:
        time.sleep(0.3)
        cluster.lab.kill(first, link_down=True)
        second = cluster.wait_one_holder(other_than=first, within=10)
        time.sleep(0.1)
        with cluster.frozen(second) as frozen:
            time.sleep(3 * TTL + 1)  # past the second burst, too
        resumed = time.monotonic()
        third = cluster.wait_one_holder(other_than=second, within=10)
        time.sleep(1.5)
    report = watch.report
    assert third not in (first, second)
    assert_silent_when_unlicensed(report, second, unlicensed(key, second, frozen, resumed))


def test_frozen_switchover_target(cluster):
    """`lvsctl switchover --to T`; T is frozen the moment it wins the leader key, before or
    while it adds the VIPs: the old active has released; T's lease runs out; a third router
    takes over and T, resumed, claims nothing."""
    old = cluster.restore()
    target = next(r for r in cluster.routers if r != old)
    with cluster.watch(every=EVERY) as watch, cluster.leader_events() as key:
        time.sleep(0.3)
        asked = time.monotonic()
        proc = cluster.lab.popen("client", LVSCTL, "--etcd", cluster.lab.etcd_url,
                                 "switchover", "--to", target, "--wait", "3")
        wait_for(lambda: any(e.kind == "PUT" and e.t > asked for e in key), every=0.002,
                 what=f"{target} to take the leader key")
        with cluster.frozen(target) as frozen:
            time.sleep(3 * TTL)
        resumed = time.monotonic()
        proc.wait(10)
        new = cluster.wait_one_holder(other_than=target, within=10)
        time.sleep(1.5)
    report = watch.report
    assert new != target
    assert_silent_when_unlicensed(report, target, unlicensed(key, target, frozen, resumed))

