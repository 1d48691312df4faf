"""IPVS carries real traffic under pulse, NAT (issue 10): the lab's routers program the
kernel's IPVS, the sync daemon keeps long-lived connections through a crash of the active,
a returning router preempts only once its table is warm, and drift is repaired while
connections flow.

One lab for the module (two routers, two real servers, ``network = nat``, connection sync
on the private LAN, preempt). Tests run in file order; each but the last leaves r1 active.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator

import pytest
from ipvslab_kit import (
    WARMUP,
    Conns,
    active,
    client_conns,
    daemons,
    established,
    failed,
    holders,
    ipvs_lab,
    ipvsadm,
    load,
    log,
    log_time,
    make_active,
    wait_for,
)

from lvslab import Lab

pytestmark = pytest.mark.ipvs

ALT = 8080  # a second virtual (same real servers, port 80): untouched by the drift test
HOLD_DOWN = 1.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    n = 90 + os.getpid() % 10
    with ipvs_lab("ipn", n, tmp_path_factory.mktemp("nat"), alt_port=ALT,
                  reservation_conflict_action="preempt", hold_down=HOLD_DOWN) as lab:
        make_active(lab, "r1")
        wait_for(lambda: "backup sync daemon" in daemons(lab, "r2"), 60, "r2 sync backup")
        yield lab


def test_requests_through_the_vip_are_served_by_ipvs(lab: Lab) -> None:
    """New connections through the VIP are balanced by the active's IPVS table over both
    real servers, and the sync daemons run: master on the active, backup on the other."""
    result = load(lab, 20)
    assert result["errors"] == {} and set(result["answers"]) == {"rs1", "rs2"}, result
    table = ipvsadm(lab, "r1", "-L", "-n")
    assert f"TCP  {lab.vip}:80 wrr" in table and "Masq" in table, table
    assert client_conns(lab, "r1"), "the active's IPVS table has no connection of the client"
    assert "master sync daemon (mcast=eth1, syncid=7" in daemons(lab, "r1")
    assert "backup sync daemon (mcast=eth1, syncid=7" in daemons(lab, "r2")
    # IPVS, not the nftables data plane: its table is absent (the VIP fence's is there).
    tables = lab.exec("r1", "nft", "list", "tables").stdout.split("\n")
    assert "table ip piranha" not in tables and "table inet piranha" not in tables, tables


def test_drift_is_repaired_while_connections_flow(lab: Lab) -> None:
    """Someone changes the active's IPVS table with ipvsadm behind the agent's back (a real
    server and a whole service deleted, a scheduler changed, a foreign service added); the
    agent puts it back (drift check on SIGUSR1) and the echo connections keep flowing."""
    before = ipvsadm(lab, "r1", "-S", "-n")
    conns = Conns(lab, 6)
    try:
        rs2 = lab.address("rs2")
        ipvsadm(lab, "r1", "-d", "-t", f"{lab.vip}:{ALT}", "-r", f"{rs2}:80")
        ipvsadm(lab, "r1", "-E", "-t", f"{lab.vip}:{ALT}", "-s", "lc")
        ipvsadm(lab, "r1", "-D", "-t", f"{lab.vip}:80")
        ipvsadm(lab, "r1", "-A", "-t", f"{lab.vip}:9999", "-s", "rr")
        changed = time.monotonic()
        pid = lab.pid("r1")
        assert pid is not None
        os.kill(pid, signal.SIGUSR1)
        took = wait_for(lambda: ipvsadm(lab, "r1", "-S", "-n") == before, 30,
                        "the IPVS table repaired")
        log(f"drift repaired {took:.1f} s after SIGUSR1")
        wait_for(lambda: conns.answered_since(changed + took), 20, "answers after the repair")
        assert load(lab, 6, ALT)["errors"] == {} and load(lab, 6)["errors"] == {}
    finally:
        results = conns.stop()
    assert failed(results) == [], results
    longest = max(c["gap"] for c in results)
    log(f"drift: longest gap of a connection {longest:.2f} s")
    assert longest < 2.0, results


def nudges(lab: Lab, host: str) -> list[tuple[str, str]]:
    """(connections, ends answered) of each resume nudge in ``host``'s log."""
    return re.findall(r"resume: (\d+) connections, (\d+) ends answered",
                      lab.log_path(host).read_text(errors="replace"))


def test_connections_survive_a_crash_and_a_warm_failback(lab: Lab) -> None:
    """Crash of the active: r2 takes over and every established connection, synced to it
    by the sync daemon, carries on. r1 comes back and preempts (graceful switchover), but
    only once its table is warm: the connections opened through r2 survive the failback."""
    before = Conns(lab, 20)  # opened through r1
    after: Conns | None = None
    try:
        # The sync daemon brought every one of them to r2 (the proof of the sync itself).
        wait_for(lambda: before.ports <= established(lab, "r2"), 30,
                 "r2's table to hold the client's connections")
        seen = len(nudges(lab, "r2"))
        crash = time.monotonic()
        lab.kill("r1", link_down=True)
        took = wait_for(lambda: holders(lab) == ["r2"], 60, "r2 to take the VIP")
        log(f"crash: r2 holds the VIP {took:.1f} s after the crash")
        wait_for(lambda: before.answered_since(crash + took), 30,
                 "every connection answered through r2")
        assert "master sync daemon" in daemons(lab, "r2")
        # The new active nudged the synced connections (agent/resume, IPVS's ip_vs_conn).
        wait_for(lambda: len(nudges(lab, "r2")) > seen, 10, "r2's resume nudge")
        found, answered = map(int, nudges(lab, "r2")[-1])
        log(f"resume: r2 found {found} synced connections, {answered} ends answered")
        assert found >= 20 and answered >= 20

        after = Conns(lab, 8)  # opened through r2: r1 can only learn them by sync
        lab.start_agent("r1")
        back = time.time()
        # The guest is slow: a restarted agent takes 40-90 s to start (imports, under load).
        took = wait_for(lambda: active(lab) == "r1", 240, "r1 to preempt")
        log(f"failback: r1 active {took:.1f} s after its restart")
        failback = time.monotonic()
        wait_for(lambda: before.answered_since(failback) and after.answered_since(failback),
                 30, "every connection answered through r1")
    finally:
        results = before.stop() + (after.stop() if after is not None else [])
    assert failed(results) == [], results
    # The gate: r1 asked for the switchover only once its backup daemon had run WARMUP s.
    receiving = log_time(lab, "r1", "connection sync: backup")
    asked = log_time(lab, "r1", "preempt: asked")
    assert receiving is not None and asked is not None and receiving >= back - 1
    log(f"r1 received sync for {asked - receiving:.1f} s before preempting (hold_down "
        f"{HOLD_DOWN:g} s, warm-up {WARMUP:g} s)")
    assert asked - receiving >= WARMUP - 0.1
    log(f"longest gap of a connection: {max(c['gap'] for c in results):.2f} s")


def test_connections_survive_a_graceful_stop(lab: Lab) -> None:
    """SIGTERM to the active: it hands over (graceful), r2 takes the VIP and every
    established connection, synced to r2, carries on; new connections are served."""
    conns = Conns(lab, 12)
    try:
        assert active(lab) == "r1"
        wait_for(lambda: conns.ports <= established(lab, "r2"), 30,
                 "r2's table to hold the client's connections")
        pid = lab.pid("r1")
        assert pid is not None
        stopped = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        took = wait_for(lambda: holders(lab) == ["r2"], 60, "r2 to take the VIP")
        log(f"SIGTERM: r2 holds the VIP {took:.1f} s after the signal")
        wait_for(lambda: not lab.alive("r1"), 30, "r1's agent to exit")
        wait_for(lambda: conns.answered_since(stopped + took), 30, "answers through r2")
        assert load(lab, 10)["errors"] == {}
    finally:
        results = conns.stop()
    assert failed(results) == [], results
    log(f"SIGTERM: longest gap of a connection {max(c['gap'] for c in results):.2f} s")
