"""Start-up: with 2 and 3 routers, exactly one leader and one VIP owner (issue #4, 1).

Real labs (etcd, pulse agents, namespaces). Every agent of a running lab is killed and all
are started again while the ARP probers watch, so the election itself is observed. Also
proves the watcher can fail: a VIP added by hand to a backup is reported as two owners.
"""

from __future__ import annotations

import time

import pytest
from support.failover_kit import Cluster, lab_for, measured, netns_mark, wait_for

pytestmark = netns_mark


@pytest.fixture(scope="module")
def two() -> Cluster:
    with lab_for("a", routers=2) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def three() -> Cluster:
    with lab_for("b", routers=3) as cluster:
        yield cluster


def check_one_active(cluster: Cluster) -> str:
    """Exactly one active by every account (kernel, metrics, etcd); returns it."""
    holder = cluster.wait_one_holder()
    assert cluster.holders(cluster.vip) == cluster.holders(cluster.gateway) == [holder]
    roles = cluster.roles()
    assert roles == {r: "active" if r == holder else "backup" for r in cluster.routers}
    status = cluster.status()
    assert status is not None and status["leader"]["node"] == holder
    assert {n: d["role"] for n, d in status["nodes"].items()} == roles
    metrics = {r: cluster.metrics(r) for r in cluster.routers}
    assert metrics[holder]["lvs_term"] == status["leader"]["term"]
    assert {r: m["lvs_vips_held"] for r, m in metrics.items()} == {
        r: 2.0 if r == holder else 0.0 for r in cluster.routers}
    return holder


@pytest.mark.parametrize("which", ["two", "three"])
def test_cold_start_elects_exactly_one_leader_and_owner(which, request):
    cluster: Cluster = request.getfixturevalue(which)
    cluster.restore()
    for r in cluster.routers:
        cluster.lab.kill(r)
    wait_for(lambda: not cluster.holders() and not cluster.holders(cluster.gateway),
             what="the dead agents' VIPs to expire")
    with cluster.watch(owned=False) as watch:
        start = time.monotonic()
        for r in cluster.routers:
            cluster.lab.start_agent(r)
        holder = cluster.wait_healthy()
        assert check_one_active(cluster) == holder
        time.sleep(1.5)  # and it stays that way
        assert check_one_active(cluster) == holder
    report = watch.report
    report.assert_one_owner_at_a_time()
    assert report.owners() == report.owners(cluster.gateway) == [holder]
    assert report.gaps() == report.gaps(ip=cluster.gateway) == []
    elected = report.own[cluster.vip].intervals[0].start - start
    measured(f"cold start, {len(cluster.routers)} routers", elected=elected, active=holder)


def test_watcher_reports_a_vip_held_twice(two):
    """The analysis is not vacuous: a second owner added by hand is seen at once. (The
    backup's fence first keeps its kernel from claiming the hand-added VIP at all: the
    fence's rule has to go for the second owner to show.)"""
    active = two.restore()
    backup = next(r for r in two.routers if r != active)
    rule = "arp saddr ip @guarded arp saddr ip != @licensed drop"
    with two.watch() as watch:
        time.sleep(0.3)
        two.lab.exec(backup, "ip", "addr", "add", f"{two.vip}/32", "dev", "eth0", check=True)
        time.sleep(0.3)
        fenced = watch.snapshot()
        added = time.monotonic()
        two.lab.exec(backup, "nft", "flush", "chain", "arp", "piranha_fence", "out", check=True)
        time.sleep(0.3)
        two.lab.exec(backup, "ip", "addr", "del", f"{two.vip}/32", "dev", "eth0", check=True)
        removed = time.monotonic()
        two.lab.exec(backup, "nft", "add", "rule", "arp", "piranha_fence", "out", *rule.split(),
                     check=True)
        time.sleep(0.3)
    assert fenced.own[two.vip].overlaps == () and fenced.claims(backup, 0.0) == []
    own = watch.report.own[two.vip]
    assert len(own.overlaps) == 1
    (overlap,) = own.overlaps
    assert set(overlap.macs) == {two.macs[active], two.macs[backup]}
    assert added <= overlap.start and overlap.end <= removed
    assert overlap.end - overlap.start > 0.2  # answered every probe for 0.3 s
    assert watch.report.own[two.gateway].overlaps == ()
