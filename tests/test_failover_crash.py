"""Crashes and hand-overs of the active router (issue #4, 2-4, and fast eviction).

Real labs (etcd, pulse agents, namespaces); the ARP probers on both LANs prove that no
instant had two owners of a VIP, and an HTTP prober measures the service gap.
"""

from __future__ import annotations

import time

import pytest
from support.failover_kit import Cluster, lab_for, measured, netns_mark, wait_for

pytestmark = netns_mark


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    with lab_for("c", routers=3) as c:
        yield c


@pytest.fixture(scope="module")
def fast() -> Cluster:
    with lab_for("d", routers=3, keepalive=0.1, deadtime=0.5,
                 fast_eviction=1) as c:
        yield c


def fail_over(cluster: Cluster, old: str, fault) -> tuple[str, float, object]:
    """Apply ``fault`` to the active ``old`` while watching; (new active, fault time, report)."""
    with cluster.watch(http=True) as watch:
        time.sleep(0.3)
        at = time.monotonic()
        fault()
        new = cluster.wait_one_holder(other_than=old)
        wait_for(lambda: cluster.leader() == new, what=f"{new} to lead in etcd")
        watch.wait_http_ok(after=time.monotonic())
    report = watch.report
    report.assert_one_owner_at_a_time()
    assert report.owners() == report.owners(cluster.gateway) == [old, new]
    return new, at, report


def took_over(report, new: str, since: float) -> float:
    """Seconds from ``since`` to the new owner's first answer."""
    return min(i.start for i in report.own[report.vip].intervals
               if report.names[i.mac] == new and i.start > since) - since


@pytest.mark.parametrize("how", ["link-down", "agent", "agent+guardian"])
def test_crash_of_the_active_moves_the_vip(cluster, how):
    """SIGKILL of the active's agent: with its links down (a host crash); with its links up
    (its VIP guardian removes the VIPs at once); with its guardian killed too (the kernel
    must drop the VIPs by their lifetime before the backup adds them)."""
    old = cluster.restore()
    fault = {"link-down": lambda: cluster.lab.kill(old, link_down=True),
             "agent": lambda: cluster.lab.kill(old),
             "agent+guardian": lambda: cluster.kill_family(old)}[how]
    new, crash, report = fail_over(cluster, old, fault)
    assert not cluster.lab.alive(old)
    assert old not in cluster.holders()  # its VIPs are gone from its namespace
    gaps = report.gaps(crash)
    assert len(gaps) == 1 and len(report.gaps(crash, ip=cluster.gateway)) == 1
    gone = max(i.end for i in report.own[cluster.vip].intervals
               if report.names[i.mac] == old) - crash  # its last answer, after the kill
    if how == "agent":
        assert gone < 0.5, f"{old}'s VIP answered {gone:.2f}s after SIGKILL (guardian?)"
    if how == "agent+guardian":  # the lifetime (1 s, renewed every 0.25 s) did it
        assert gone > 0.5, f"{old}'s VIP vanished {gone:.2f}s after SIGKILL: not by lifetime"
    measured(f"crash ({how})", gap=gaps[0], takeover=took_over(report, new, crash),
             old_vip_gone=gone, http_outage=report.outage(crash))


def test_sigterm_hands_over_within_a_few_heartbeats(cluster):
    old = cluster.restore()
    new, stop, report = fail_over(cluster, old, lambda: cluster.terminate(old))
    cluster.wait_exit(old)
    took = took_over(report, new, stop)
    assert took < 3.0, f"{new} answered {took:.2f}s after SIGTERM to {old}"
    assert "resigned term" in cluster.lab.log_path(old).read_text()
    measured("SIGTERM", gap=sum(report.gaps(stop)), takeover=took,
             http_outage=report.outage(stop))


def test_switchover_to_a_named_router(cluster):
    old = cluster.restore()
    # the lowest-priority other router: not who would win without --to
    target = [r for r in cluster.routers if r != old][-1]
    result = {}

    def switchover() -> None:
        result["proc"] = cluster.lvsctl("switchover", "--to", target)

    new, asked, report = fail_over(cluster, old, switchover)
    proc = result["proc"]
    assert proc.returncode == 0, proc.stderr
    assert f"{target} is active" in proc.stdout
    assert new == target
    assert cluster.roles() == {r: "active" if r == target else "backup"
                               for r in cluster.routers}
    measured("switchover --to", gap=sum(report.gaps(asked)), target=target,
             http_outage=report.outage(asked))


def test_fast_eviction_fails_over_after_a_crash(fast):
    old = fast.restore()
    new, crash, report = fail_over(fast, old, lambda: fast.lab.kill(old, link_down=True))
    evicted = [r for r in fast.routers if r != old
               and "fast eviction: every live backup lost" in fast.lab.log_path(r).read_text()]
    assert evicted, "no backup revoked the dead active's lease (fast eviction unused)"
    measured("crash with fast eviction", gap=report.gaps(crash)[0],
             takeover=took_over(report, new, crash))
