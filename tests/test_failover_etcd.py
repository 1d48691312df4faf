"""The active router without etcd (issue #4, 5, 6 and 8).

* cut from etcd only: it keeps the VIP on its peers' acknowledgements (failsafe);
* cut from etcd and from its peers: it drops the VIP before its lease can expire and a
  backup takes over; back again it stays backup, unless ``preempt`` (after ``hold_down``);
  and if etcd restarts while it is still cut off from its peers, it stays backup;
* etcd down for everyone longer than the lease TTL: the VIP does not move.

Real labs (etcd, pulse agents, namespaces), ARP probers on both LANs.
"""

from __future__ import annotations

import time

import pytest
from support.failover_kit import Cluster, lab_for, measured, netns_mark, wait_for

pytestmark = netns_mark
HOLD_DOWN = 2.0


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    with lab_for("e", routers=3) as c:
        yield c


@pytest.fixture(scope="module")
def preempt() -> Cluster:
    with lab_for("f", routers=3, reservation_conflict_action="preempt",
                 hold_down=HOLD_DOWN) as c:
        yield c


def roles_are(cluster: Cluster, active: str) -> bool:
    return cluster.roles() == {r: "active" if r == active else "backup"
                               for r in cluster.routers}


def test_active_cut_from_etcd_only_keeps_the_vip(cluster):
    active = cluster.restore()
    with cluster.watch() as watch:
        cut = time.monotonic()
        cluster.lab.cut_etcd(active)
        wait_for(lambda: cluster.metrics(active).get("lvs_etcd_ok") == 0.0,
                 what=f"{active} to notice etcd is gone")
        time.sleep(8)  # four lease TTLs
        assert cluster.holders() == cluster.holders(cluster.gateway) == [active]
        assert roles_are(cluster, active)
        until = time.monotonic()
        cluster.lab.restore_etcd(active)
        back = cluster.wait_healthy()
        restored = time.monotonic()
    report = watch.report
    report.assert_one_owner_at_a_time()
    for ip in (cluster.vip, cluster.gateway):
        assert report.owners_during(cut, until, ip) == {active}
        assert report.gaps(cut, until, ip) == []
        # When etcd answers again it takes its expired key back: no failover, no gap.
        assert report.owners_during(until, restored, ip) == {active}
        assert report.gaps(until, restored, ip) == []
    assert "re-took the leader key" in cluster.lab.log_path(active).read_text()
    measured("etcd cut from the active (8 s)", after_restore=back,
             owners_after=report.owners_during(until, restored),
             gap_after_restore=sum(report.gaps(until)))


@pytest.mark.parametrize("etcd_first", [False, True], ids=["heal-first", "etcd-first"])
def test_active_cut_from_etcd_and_peers_demotes_before_its_lease_expires(cluster, etcd_first):
    """It drops the VIP before its lease can expire, a backup takes over; when it comes
    back (peers and etcd, in either order) it stays backup: no preemption."""
    old = cluster.restore()
    others = [r for r in cluster.routers if r != old]
    with cluster.watch() as watch, cluster.leader_events() as key:
        # Peers first, etcd a second later. The other order lets the failsafe extend the
        # licence past the lease: acknowledgements of heartbeats sent after the last lease
        # refresh (the steps take a few hundred ms on a loaded machine) legitimately keep
        # the VIP until the backups' promise ends, after the lease key is gone. This test
        # is about the lease alone: the refreshes sent in that second outlast every
        # acknowledgement.
        cluster.lab.partition(old, others)
        time.sleep(1.0)  # two lease refresh intervals
        assert cluster.holders() == [old]
        cut = time.monotonic()
        cluster.lab.cut_etcd(old)
        new = cluster.wait_one_holder(other_than=old)
        assert cluster.role(old) != "active"
        assert cluster.metrics(old)["lvs_vips_held"] == 0
        back = time.monotonic()
        if etcd_first:  # it sees the new leader in etcd but still hears no peer
            cluster.lab.restore_etcd(old)
            time.sleep(3)
            assert cluster.one_holder() == new and cluster.role(old) == "backup"
        cluster.lab.heal(old, others)
        cluster.lab.restore_etcd(old)
        assert cluster.wait_healthy() == new
        time.sleep(3)  # no preemption: it stays backup
        assert cluster.healthy() == new
        end = time.monotonic()
    report = watch.report
    report.assert_one_owner_at_a_time()
    assert report.owners() == report.owners(cluster.gateway) == [old, new]
    expired = next((e.t for e in key if e.kind == "DELETE" and e.t > cut), None)
    assert expired is not None, "the old leader key never expired"
    last = max(i.end for i in report.own[cluster.vip].intervals if report.names[i.mac] == old)
    assert last < expired, f"{old} answered {last - expired:.3f}s after its lease expired"
    assert report.owners_during(back, end) == {new}
    measured(f"etcd + peers cut from the active ({'etcd' if etcd_first else 'peers'} back "
             "first)", released=last - cut, lease_expired=expired - cut,
             gap=sum(report.gaps(cut, back)))


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_etcd_restart_while_the_old_active_is_cut_off(cluster, attempt):
    """The old active, cut off (etcd and peers) and demoted, gets etcd back through an etcd
    restart while its peers are still unreachable: its new lease must not let it take the
    VIP back on the leader key it saw before (the key expired with its old lease). It is a
    race with its view of etcd catching up, hence several attempts."""
    old = cluster.restore()
    others = [r for r in cluster.routers if r != old]
    with cluster.watch() as watch:
        cluster.lab.cut_etcd(old)
        cluster.lab.partition(old, others)
        new = cluster.wait_one_holder(other_than=old)
        time.sleep(0.5)
        cluster.lab.kill_etcd()
        cluster.lab.restore_etcd(old)
        time.sleep(1.5)
        back = time.monotonic()
        cluster.lab.start_etcd()
        time.sleep(3)  # etcd is back for everyone, the peers are still cut off
        assert cluster.role(old) != "active"
        end = time.monotonic()
        cluster.lab.heal(old, others)
        cluster.wait_healthy()
    report = watch.report
    report.assert_one_owner_at_a_time()
    assert old not in report.owners_during(back, end), report.describe()
    measured(f"etcd restart while {old} is cut off (attempt {attempt})", new=new,
             owners_after=report.owners_during(back, end))


def test_preempt_takes_the_vip_back_after_hold_down(preempt):
    top = preempt.routers[0]  # the highest priority
    wait_for(lambda: preempt.restore() == top, what=f"{top} active (preempt)")
    others = preempt.routers[1:]
    with preempt.watch() as watch:
        preempt.lab.cut_etcd(top)
        preempt.lab.partition(top, others)
        new = preempt.wait_one_holder(other_than=top)
        back = time.monotonic()
        preempt.lab.heal(top, others)
        preempt.lab.restore_etcd(top)
        assert preempt.wait_one_holder(other_than=new, within=20) == top
        preempt.wait_healthy()
    report = watch.report
    report.assert_one_owner_at_a_time()
    assert report.owners() == report.owners(preempt.gateway) == [top, new, top]
    returned = report.own[preempt.vip].intervals[-1].start
    assert returned - back >= HOLD_DOWN, "preempted before its hold-down"
    measured("preempt", returned_after=returned - back,
             gap=sum(report.gaps(back)))


def test_etcd_outage_longer_than_the_ttl_keeps_the_vip_in_place(cluster):
    active = cluster.restore()
    with cluster.watch(http=True) as watch:
        down = time.monotonic()
        cluster.lab.kill_etcd()
        time.sleep(6)  # three lease TTLs
        assert cluster.one_holder() == active and roles_are(cluster, active)
        assert all(cluster.metrics(r)["lvs_etcd_ok"] == 0.0 for r in cluster.routers)
        up = time.monotonic()
        cluster.lab.start_etcd()
        assert cluster.wait_healthy() == active
        time.sleep(1)
        assert cluster.healthy() == active
        end = time.monotonic()
    report = watch.report
    report.assert_one_owner_at_a_time()
    assert report.owners() == report.owners(cluster.gateway) == [active]
    assert report.gaps(down, end) == report.gaps(down, end, cluster.gateway) == []
    assert report.outages(down) == []
    measured("etcd down 6 s", active=active, etcd_back_after=time.monotonic() - up,
             http_requests=len([r for r in report.http if r.start > down]))
