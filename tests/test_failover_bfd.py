"""BFD-class timers (issue 11): keepalive 0.03 s, deadtime 0.1 s, fast eviction.

A real lab at these timers: the config validates and runs, an idle cluster keeps its
active, and a crash of the active moves the VIPs with never two owners. Correctness only:
how fast it fails over is bench/failover.py's ``bfd`` scenario (docs/benchmarks.md).
"""

from __future__ import annotations

import time

import pytest
from support.failover_kit import Cluster, lab_for, netns_mark, wait_for

pytestmark = netns_mark

BFD = {"keepalive": 0.03, "deadtime": 0.1, "fast_eviction": 1}


@pytest.fixture(scope="module")
def bfd() -> Cluster:
    with lab_for("q", routers=3, **BFD) as c:
        yield c


def test_an_idle_cluster_keeps_its_active(bfd):
    active = bfd.restore()
    with bfd.watch() as watch, bfd.leader_events() as events:
        time.sleep(3.0)
    watch.report.assert_one_owner_at_a_time()
    assert watch.report.owners() == [active]
    assert events == [], f"the leader key changed with no fault: {events}"
    assert bfd.healthy() == active


def test_a_crash_of_the_active_moves_the_vips_to_one_new_owner(bfd):
    old = bfd.restore()
    with bfd.watch(http=True) as watch:
        time.sleep(0.3)
        bfd.lab.kill(old, link_down=True)
        new = bfd.wait_one_holder(other_than=old)
        wait_for(lambda: bfd.leader() == new, what=f"{new} to lead in etcd")
        watch.wait_http_ok(after=time.monotonic())
    report = watch.report
    report.assert_one_owner_at_a_time()
    assert report.owners() == report.owners(bfd.gateway) == [old, new]
    assert any("fast eviction: every live backup lost" in bfd.lab.log_path(r).read_text()
               for r in bfd.routers if r != old), "the dead active was not evicted"
