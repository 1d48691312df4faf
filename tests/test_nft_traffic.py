"""End to end: real TCP connections through a router whose nftables backend balances a VIP.

    client 10.231.1.2 --[cbr]-- 10.231.1.1 router 10.231.2.1 --[sbr]-- rs1 .11, rs2 .12, rs3 .13

The client routes the VIP network 10.231.100.0/24 via the router; rs1 and rs2 route back
through it, rs3 has no route back (reachable only with full NAT). Each real server answers
every line with "<its name> <peer address>".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support import netlab

from agent.dataplane.nft import NftBackend
from agent.dataplane.table import (
    AddDest,
    AddService,
    DestKey,
    DestSpec,
    EditDest,
    EditService,
    ServiceKey,
    ServiceSpec,
)

pytestmark = pytest.mark.netns

VIP = ServiceKey("tcp", "10.231.100.1", 80)
VIP_FULLNAT = ServiceKey("tcp", "10.231.100.2", 80)
VIP6 = ServiceKey("tcp", "fd00:231:100::1", 80, family=6)
RS = {"rs1": "10.231.2.11", "rs2": "10.231.2.12", "rs3": "10.231.2.13"}
RS6 = {"rs1": "fd00:231:2::11", "rs2": "fd00:231:2::12"}
CLIENT_ADDR, ROUTER_SERVER_SIDE = "10.231.1.2", "10.231.2.1"
CLIENT6 = "fd00:231:1::2"

SERVER = r"""
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET6)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
srv.bind(("::", port))
srv.listen(512)
print("ready", flush=True)
def serve(conn, peer):
    with conn, conn.makefile("rwb", buffering=0) as f:
        for _ in f:
            f.write(f"{name} {peer[0].removeprefix('::ffff:')}\n".encode())
while True:
    conn, peer = srv.accept()
    threading.Thread(target=serve, args=(conn, peer), daemon=True).start()
"""

CLIENT = r"""
import collections, json, socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names, peers, refused, failed = collections.Counter(), set(), 0, 0
for _ in range(count):
    try:
        with socket.create_connection((host, port), timeout=3) as conn:
            conn.sendall(b"hi\n")
            name, peer = conn.makefile().readline().split()
            names[name] += 1
            peers.add(peer)
    except ConnectionRefusedError:
        refused += 1
    except OSError:
        failed += 1
print(json.dumps({"names": names, "peers": sorted(peers), "refused": refused, "failed": failed}))
"""

# Connects until a connection lands on the wanted server, keeps it, and on each line of
# stdin asks that same connection again.
HOLDER = r"""
import socket, sys
host, port, want = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for _ in range(200):
    conn = socket.create_connection((host, port), timeout=3)
    f = conn.makefile("rw")
    f.write("hi\n"); f.flush()
    if f.readline().split()[0] == want:
        break
    conn.close()
else:
    sys.exit("never reached " + want)
print("holding", flush=True)
for _ in sys.stdin:
    f.write("again\n"); f.flush()
    print(f.readline().strip(), flush=True)
"""


async def in_ns(ns: str, *args: str, **kwargs) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec("ip", "netns", "exec", ns, *args, **kwargs)


@pytest.fixture
async def lab() -> AsyncIterator[netlab.Lab]:
    lab = netlab.Lab("nftt")
    try:
        for bridge in ("cbr", "sbr"):
            lab.add_bridge(bridge)
        for name in ("c", "r", *RS):
            lab.add_ns(name)
        lab.connect("c", "eth0", bridge="cbr", addrs=[f"{CLIENT_ADDR}/24", f"{CLIENT6}/64"])
        lab.connect("r", "eth0", bridge="cbr", addrs=["10.231.1.1/24", "fd00:231:1::1/64"])
        lab.connect(
            "r", "eth1", bridge="sbr", addrs=[f"{ROUTER_SERVER_SIDE}/24", "fd00:231:2::1/64"]
        )
        lab.run("c", "ip", "route", "add", "10.231.100.0/24", "via", "10.231.1.1")
        lab.run("c", "ip", "-6", "route", "add", "fd00:231:100::/64", "via", "fd00:231:1::1")
        for vip in (VIP, VIP_FULLNAT):  # the router holds the VIPs, as an active agent does
            lab.run("r", "ip", "addr", "add", f"{vip.address}/32", "dev", "lo")
        lab.run("r", "ip", "-6", "addr", "add", f"{VIP6.address}/128", "dev", "lo")
        lab.sysctl("r", "net.ipv4.ip_forward", 1)
        lab.sysctl("r", "net.ipv6.conf.all.forwarding", 1)
        for name, addr in RS.items():
            addrs = [f"{addr}/24"] + ([f"{RS6[name]}/64"] if name in RS6 else [])
            lab.connect(name, "eth0", bridge="sbr", addrs=addrs)
            if name != "rs3":
                lab.run(name, "ip", "route", "add", "default", "via", ROUTER_SERVER_SIDE)
                lab.run(name, "ip", "-6", "route", "add", "default", "via", "fd00:231:2::1")
            await lab.serve(name, sys.executable, "-c", SERVER, name, "8080")
        yield lab
    finally:
        lab.destroy()  # and the servers


async def connect(lab: netlab.Lab, key: ServiceKey, count: int) -> dict:
    proc = await lab.arun("c", sys.executable, "-c", CLIENT, key.address, str(key.port), str(count))
    return json.loads(proc.stdout)


async def test_weighted_split_quiesce_hashing_and_full_nat(lab):
    router = lab.ns("r")
    backend = NftBackend(netns=router, compact_delay=None)
    rs1, rs2, rs3 = (DestKey(RS[n], 8080) for n in RS)
    add_rs = [AddDest(VIP, rs1, DestSpec(3)), AddDest(VIP, rs2, DestSpec(1))]
    await backend.apply([AddService(VIP, ServiceSpec("wrr")), *add_rs])

    # 3:1 over 300 connections: expected 225/75, sigma 7.5; +-35 is 4.7 sigma (p ~ 3e-6).
    got = await connect(lab, VIP, 300)
    print("3:1 split over 300 connections:", dict(got["names"]))
    assert got["failed"] == got["refused"] == 0
    assert abs(got["names"]["rs1"] - 225) <= 35 and got["names"]["rs1"] + got["names"]["rs2"] == 300
    assert got["peers"] == [CLIENT_ADDR]  # plain DNAT: real servers see the client

    # Weight 0: no new connections to rs2, but one it already has goes on.
    holder = await in_ns(lab.ns("c"), sys.executable, "-c", HOLDER,
                         VIP.address, "80", "rs2",
                         stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)  # fmt: skip
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"holding\n"
        await backend.apply([EditDest(VIP, rs2, DestSpec(0))])
        got = await connect(lab, VIP, 60)
        assert got["names"] == {"rs1": 60}
        holder.stdin.write(b"again\n")
        await holder.stdin.drain()
        reply = await asyncio.wait_for(holder.stdout.readline(), 10)
        assert reply.split()[0] == b"rs2"
    finally:
        holder.kill()
        await holder.wait()

    # No live real server: connections are refused (ICMP port unreachable, like IPVS).
    await backend.apply([EditDest(VIP, rs1, DestSpec(0))])
    got = await connect(lab, VIP, 5)
    assert got["refused"] == 5

    # Source hashing: one client always reaches the same real server.
    even = [EditDest(VIP, rs1, DestSpec(1)), EditDest(VIP, rs2, DestSpec(1))]
    await backend.apply([EditService(VIP, ServiceSpec("sh")), *even])
    got = await connect(lab, VIP, 30)
    assert len(got["names"]) == 1 and sum(got["names"].values()) == 30

    # IPv6 in the same table.
    six = [AddDest(VIP6, DestKey(RS6[n], 8080), DestSpec(1)) for n in RS6]
    await backend.apply([AddService(VIP6, ServiceSpec("rr")), *six])
    got = await connect(lab, VIP6, 40)
    assert set(got["names"]) == {"rs1", "rs2"} and sum(got["names"].values()) == 40
    assert got["peers"] == [CLIENT6]

    # Full NAT: rs3 has no route back; masquerading makes it answer the router.
    backend.close()
    backend = NftBackend(netns=router, full_nat=True, compact_delay=None)
    have = await backend.read()  # base differs: the next apply rewrites every service
    assert have == {}
    await backend.apply([AddService(VIP, ServiceSpec("sh")),
                         AddDest(VIP, rs1, DestSpec(1)), AddDest(VIP, rs2, DestSpec(1)),
                         AddService(VIP_FULLNAT, ServiceSpec("rr")),
                         AddDest(VIP_FULLNAT, rs3, DestSpec(1))])  # fmt: skip
    got = await connect(lab, VIP_FULLNAT, 10)
    assert got["names"] == {"rs3": 10} and got["peers"] == [ROUTER_SERVER_SIDE]
    backend.close()


GUARD_PROBE = r"""
import sys
from scapy.all import IP, TCP, send
src, dst, sport, flags = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
send(IP(src=src, dst=dst) / TCP(sport=sport, dport=40000, flags=flags, seq=1000), verbose=0)
"""


def guard_drops(lab: netlab.Lab, comment: str = "piranha:guard4") -> int:
    """Packets the reply guard (or the base rule of ``comment``) of the router has met."""
    out = lab.run("r", "nft", "-j", "list", "chain", "inet", "piranha", "prerouting").stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule", {})
        if rule.get("comment") == comment:
            return next(s["counter"]["packets"] for s in rule["expr"] if "counter" in s)
    raise AssertionError(f"no rule {comment}")


@contextlib.asynccontextmanager
async def sh_holder(lab: netlab.Lab) -> AsyncIterator[tuple[NftBackend, str, Any]]:
    """An ``sh`` service over rs1 and rs2, and a client holding one connection through it:
    (backend, that connection's real server, the holder process)."""
    backend = NftBackend(netns=lab.ns("r"), compact_delay=None)
    rs1, rs2 = DestKey(RS["rs1"], 8080), DestKey(RS["rs2"], 8080)
    await backend.apply([AddService(VIP, ServiceSpec("sh")), AddDest(VIP, rs1, DestSpec(1)),
                         AddDest(VIP, rs2, DestSpec(1))])
    (name,) = (await connect(lab, VIP, 1))["names"]  # sh: this client's real server
    holder = await in_ns(lab.ns("c"), sys.executable, "-c", HOLDER, VIP.address, "80", name,
                         stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)  # fmt: skip
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"holding\n"
        yield backend, name, holder
    finally:
        holder.kill()
        await holder.wait()
        backend.close()


async def again(holder: Any) -> bytes:
    """Send a line on the held connection; the name of the real server that answered."""
    holder.stdin.write(b"again\n")
    await holder.stdin.drain()
    return (await asyncio.wait_for(holder.stdout.readline(), 10)).split()[0]


async def test_a_mid_stream_packet_to_an_address_not_held_is_dropped(lab):
    """A router that does not hold the VIP (a stale ARP entry sent the client here) does not
    pick up a connection it does not know: a real server chosen now would reset it. The
    packet is dropped and leaves no conntrack entry; once the router holds the VIP, the
    client's retransmission is picked up and the connection lives on (``sh``: the same
    real server)."""
    async with sh_holder(lab) as (backend, name, holder):
        mine = DestKey(RS[name], 8080)
        # meanwhile a pick-up could only choose the other server, which would reset it
        await backend.apply([EditDest(VIP, mine, DestSpec(0))])
        lab.run("r", "ip", "addr", "del", f"{VIP.address}/32", "dev", "lo")
        lab.run("r", "conntrack", "-F")
        before = guard_drops(lab, "piranha:nonlocal")
        answer = asyncio.ensure_future(again(holder))
        await asyncio.sleep(0.8)
        assert guard_drops(lab, "piranha:nonlocal") > before
        # no entry left behind to clash with a synced one committed at a takeover
        listed = lab.run("r", "conntrack", "-L", "-p", "tcp", "--dport", "80").stdout
        assert VIP.address not in listed
        assert not answer.done()
        await backend.apply([EditDest(VIP, mine, DestSpec(1))])
        lab.run("r", "ip", "addr", "add", f"{VIP.address}/32", "dev", "lo")
        assert await answer == name.encode()


async def test_reply_guard_drops_mid_stream_packets_opening_from_a_real_server(lab):
    """A new director without state: the server's mid-stream reply is dropped, not let
    through un-NATed (the client would reset the connection); its SYNs and other ports
    pass, and so does a client's mid-stream packet to the VIP (picked up, DNATed)."""

    async def probe(sport: int, flags: str) -> None:
        await lab.arun("rs1", sys.executable, "-c", GUARD_PROBE, RS["rs1"], CLIENT_ADDR,
                       str(sport), flags)  # fmt: skip

    async with sh_holder(lab) as (_backend, name, holder):
        assert guard_drops(lab) == 0
        await probe(8080, "A")  # mid-stream reply, no connection on this router
        await probe(8080, "PA")
        assert guard_drops(lab) == 2
        await probe(8080, "S")  # the server opening a connection of its own
        await probe(9999, "A")  # not a real server endpoint
        assert guard_drops(lab) == 2
        # A connection picked up mid-stream from the client's side still works.
        await asyncio.sleep(0.5)
        lab.run("r", "conntrack", "-F")
        assert await again(holder) == name.encode()
