"""Heartbeat faults (issue #4, 7, 9 and 10): one-way loss, routers that cannot hear each
other, forged and replayed heartbeats. etcd stays the authority: none of these may give a
VIP two owners, and with etcd up none moves it.

Real lab (etcd, three pulse agents, namespaces), ARP probers on both LANs.
"""

from __future__ import annotations

import itertools
import secrets
import sys
import time

import pytest
from support.failover_kit import Cluster, lab_for, measured, netns_mark, wait_for

from agent.heartbeat.packet import Heartbeat, Incarnation, encode

pytestmark = netns_mark
QUIET = 5.0  # seconds a fault is left in place: 2.5 lease TTLs and deadtimes


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    with lab_for("g", routers=3) as c:
        yield c


def stays(cluster: Cluster, active: str, report, start: float, end: float) -> None:
    """``active`` held both VIPs without a gap from ``start`` to ``end``."""
    for ip in (cluster.vip, cluster.gateway):
        assert report.owners_during(start, end, ip) == {active}, report.describe(ip)
        assert report.gaps(start, end, ip) == [], report.describe(ip)


@pytest.mark.parametrize("cut_etcd", [False, True], ids=["etcd-up", "etcd-cut"])
def test_one_way_heartbeat_loss(cluster, cut_etcd):
    """The active hears the backup, the backup does not hear the active."""
    active = cluster.restore()
    backup = next(r for r in cluster.routers if r != active)  # the one that would take over
    with cluster.watch() as watch:
        start = time.monotonic()
        cluster.lab.drop_heartbeats(sender=active, receiver=backup)
        if cut_etcd:
            cluster.lab.cut_etcd(active)
        time.sleep(QUIET)
        holder = cluster.wait_one_holder()
        if not cut_etcd:  # the active keeps its lease and key: nothing moves
            assert holder == active and cluster.leader() == active
        end = time.monotonic()
        cluster.restore()
    report = watch.report
    report.assert_one_owner_at_a_time()
    if not cut_etcd:
        stays(cluster, active, report, start, end)
    else:  # without etcd it loses the failsafe (the backup's acks go stale) and hands on
        assert report.owners()[:2] == [active, holder] and holder != active
    measured(f"one-way heartbeat loss {active}->{backup} ({'etcd cut' if cut_etcd else 'etcd up'})",
             owners=report.owners(), gap=sum(report.gaps(start, end)))


def test_routers_that_cannot_hear_each_other_keep_one_active(cluster):
    active = cluster.restore()
    pairs = list(itertools.combinations(cluster.routers, 2))
    with cluster.watch() as watch:
        start = time.monotonic()
        for a, b in pairs:
            cluster.lab.partition(a, b)
        wait_for(lambda: all(cluster.metrics(r).get(f'lvs_peer_alive{{peer="{p}"}}') == 0.0
                             for r in cluster.routers for p in cluster.routers if p != r),
                 what="every router to lose every peer")
        time.sleep(QUIET)
        assert cluster.one_holder() == active and cluster.leader() == active
        assert cluster.roles() == {r: "active" if r == active else "backup"
                                   for r in cluster.routers}
        end = time.monotonic()
        for a, b in pairs:
            cluster.lab.heal(a, b)
        assert cluster.wait_healthy() == active
    report = watch.report
    report.assert_one_owner_at_a_time()
    stays(cluster, active, report, start, end)


SNIFF_UDP = """
import ipaddress, socket, struct, sys, time
src, port, within = ipaddress.IPv4Address(sys.argv[1]).packed, int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.bind(("eth0", 0))
deadline = time.monotonic() + within
while (left := deadline - time.monotonic()) > 0:
    s.settimeout(left)
    ip = s.recv(65535)
    ihl = (ip[0] & 15) * 4
    if ip[9] == 17 and ip[12:16] == src and struct.unpack("!H", ip[ihl + 2:ihl + 4])[0] == port:
        print(ip[ihl + 8:].hex())
        break
"""
SEND_UDP = """
import socket, sys
dst, port, data, count = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), int(sys.argv[4])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    for _ in range(count):
        s.sendto(data, (dst, port))
"""


def sniff_udp(cluster: Cluster, host: str, src: str, port: int) -> bytes:
    """The payload of the next UDP datagram from ``src`` to ``port`` arriving on ``host``'s
    eth0 (seen by a packet socket, whatever the host then does with it)."""
    proc = cluster.lab.exec(host, sys.executable, "-c", SNIFF_UDP, src, port, 5.0)
    assert proc.returncode == 0 and proc.stdout.strip(), f"nothing sniffed: {proc.stderr}"
    return bytes.fromhex(proc.stdout.strip())


def send_udp(cluster: Cluster, host: str, dst: str, port: int, data: bytes, count: int) -> None:
    """Send ``data`` ``count`` times from ``host`` to ``dst``:``port``."""
    cluster.lab.exec(host, sys.executable, "-c", SEND_UDP, dst, port, data.hex(), count,
                     check=True)


def dropped(cluster: Cluster, router: str, reason: str) -> float:
    return cluster.metrics(router).get(f'lvs_heartbeat_dropped_total{{reason="{reason}"}}', 0.0)


def test_forged_and_replayed_heartbeats_change_nothing(cluster):
    active = cluster.restore()
    port = cluster.lab.heartbeat_port
    backups = [r for r in cluster.routers if r != active]
    term = cluster.metrics(active)["lvs_term"]
    count = 5
    before = {(r, why): dropped(cluster, r, why) for r in cluster.routers
              for why in ("bad_mac", "replay")}
    with cluster.watch() as watch:
        start = time.monotonic()
        # forged with another key: a backup claims to be active with a newer term, and
        # the active says it stepped down
        for sender, target, role in ((backups[0], active, "active"),
                                     (active, backups[0], "backup")):
            forged = Heartbeat(cluster=cluster.lab.topology.cluster, node=sender,
                               incarnation=Incarnation.new(time.time()), seq=1,
                               timestamp=time.time(), role=role, term=int(term) + 100,
                               etcd_ok=True)
            packet = encode(forged, secrets.token_bytes(32))
            send_udp(cluster, "client", cluster.lab.address(target), port, packet, count)
        # replayed: a real heartbeat of the active, already received by the backup
        target = backups[0]
        real = sniff_udp(cluster, target, cluster.lab.address(active), port)
        send_udp(cluster, "client", cluster.lab.address(target), port, real, count)
        wait_for(lambda: dropped(cluster, target, "replay") >= before[target, "replay"] + count,
                 what="the replays to be counted")
        assert dropped(cluster, active, "bad_mac") == before[active, "bad_mac"] + count
        assert dropped(cluster, target, "bad_mac") == before[target, "bad_mac"] + count
        time.sleep(1)
        assert cluster.healthy() == active
        assert cluster.metrics(active)["lvs_term"] == term
        end = time.monotonic()
    assert dropped(cluster, target, "replay") == before[target, "replay"] + count
    report = watch.report
    report.assert_one_owner_at_a_time()
    stays(cluster, active, report, start, end)
