"""IPVS with direct routing (issue 10): the real servers hold the VIP on lo without claiming
it (arp_ignore = 1, arp_announce = 2) and answer the client themselves; a graceful switchover
and a crash of the active keep the established connections (sync daemon).

One lab for the module: two routers, two real servers also on the public LAN,
``network = direct``, connection sync on the private LAN, no preemption.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator

import pytest
from ipvslab_kit import (
    Conns,
    ctl,
    established,
    failed,
    holders,
    ipvs_lab,
    ipvsadm,
    load,
    log,
    make_active,
    wait_for,
)

from lvslab import Lab

pytestmark = pytest.mark.ipvs


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    n = 80 + os.getpid() % 10
    with ipvs_lab("ipd", n, tmp_path_factory.mktemp("dr"), network="direct") as lab:
        make_active(lab, "r1")
        yield lab


def mac(lab: Lab, host: str, ifname: str) -> str:
    (link,) = json.loads(lab.exec(host, "ip", "-j", "link", "show", ifname).stdout)
    return link["address"]


def test_real_servers_answer_the_client_directly(lab: Lab) -> None:
    """IPVS forwards by direct routing; the real servers see the client's own address and
    answer it themselves, and only the active router answers ARP for the VIP."""
    result = load(lab, 20)
    assert result["errors"] == {} and set(result["answers"]) == {"rs1", "rs2"}, result
    assert "Route" in ipvsadm(lab, "r1", "-L", "-n")
    head = lab.exec("client", "curl", "-s", "-D", "-", "-o", "/dev/null", "-m", "5",
                    f"http://{lab.vip}/").stdout
    assert f"X-Client: {lab.address('client')}:" in head, head
    for rs in lab.servers:  # the VIP is on lo, answered for by nobody but the active
        assert f"{lab.vip}/32" in lab.exec(rs, "ip", "-4", "addr", "show", "lo").stdout
    out = lab.exec("client", "arping", "-c", "3", "-w", "5", "-I", "eth0", lab.vip).stdout
    answers = set(re.findall(r"\b([0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5})\b", out))
    assert answers, out
    assert {a.lower() for a in answers} == {mac(lab, "r1", "eth0")}, out
    # The real servers' own ARP requests name their own address, never the VIP.
    for rs in lab.servers:
        assert lab.exec(rs, "sysctl", "-n", "net.ipv4.conf.all.arp_announce").stdout.strip() == "2"


def test_connections_survive_a_switchover_and_a_crash(lab: Lab) -> None:
    """`lvsctl switchover` (graceful) to r2, then a crash of r2: r1 takes over again; every
    established connection carries on through both."""
    conns = Conns(lab, 8)
    try:
        wait_for(lambda: conns.ports <= established(lab, "r2"), 30,
                 "r2's table to hold the client's connections")
        moved = time.monotonic()
        ctl(lab, "switchover", "--to", "r2")
        took = wait_for(lambda: holders(lab) == ["r2"], 60, "r2 to take the VIP")
        log(f"switchover: r2 holds the VIP {took:.1f} s after the request")
        wait_for(lambda: conns.answered_since(moved + took), 30, "answers through r2")
        wait_for(lambda: conns.ports <= established(lab, "r1"), 30,
                 "r1's table to hold the client's connections")
        crash = time.monotonic()
        lab.kill("r2", link_down=True)
        took = wait_for(lambda: holders(lab) == ["r1"], 60, "r1 to take the VIP")
        log(f"crash: r1 holds the VIP {took:.1f} s after the crash")
        wait_for(lambda: conns.answered_since(crash + took), 30, "answers through r1")
        assert load(lab, 10)["errors"] == {}  # new connections too
    finally:
        results = conns.stop()
    assert failed(results) == [], results
    log(f"longest gap of a connection: {max(c['gap'] for c in results):.2f} s")
