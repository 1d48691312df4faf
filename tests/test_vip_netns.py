"""VipManager against real kernels: namespaces client, r1, r2 on one bridge.

Each router's VipManager runs in a worker process inside its namespace (as the agent does).
"""

import asyncio
import os
import signal
import time

import pytest
from support import arpwatch, netlab

from agent.vip import Vip

pytestmark = pytest.mark.netns

MAC = {"client": "02:00:00:00:00:01", "r1": "02:00:00:00:00:11", "r2": "02:00:00:00:00:12"}
HOST = {"client": 1, "r1": 11, "r2": 12}
VIP4 = Vip("10.60.0.100", 24, "eth0", "eth0:1")
VIP6 = Vip("fd60::100", 64, "eth0")
MANAGER = "agent.vip:VipManager"


@pytest.fixture
async def lab():
    async with netlab.Lab("vip") as lab:
        lab.add_bridge()
        for name in ("client", "r1", "r2"):
            lab.add_ns(name)
            n = HOST[name]
            lab.connect(name, mac=MAC[name], addrs=[f"10.60.0.{n}/24", f"fd60::{n}/64"])
        yield lab


async def manager(lab, ns, **kwargs):
    worker = await lab.worker(ns)
    return worker, await worker.keep(MANAGER, **kwargs)


def vip_addrs(lab, ns):
    """{ip: valid_life_time} of the VIPs on eth0 of ``ns``."""
    vips = {VIP4.ip, VIP6.ip}
    return {a["local"]: a.get("valid_life_time") for a in lab.addresses(ns) if a["local"] in vips}


async def gone(lab, ns, ips, within):
    """Wait until none of ``ips`` is on ``ns``; return how long that took."""
    start = time.monotonic()
    await netlab.wait_for(
        lambda: not set(ips) & set(vip_addrs(lab, ns)), within=within, what=f"{ips} gone"
    )
    return time.monotonic() - start


async def test_acquire_makes_vips_reachable_with_finite_lifetime(lab):
    worker, mgr = await manager(lab, "r1", lifetime=3)
    result = await worker.call_method(mgr, "acquire", [VIP4, VIP6])
    assert result.added == {VIP4, VIP6} and result.ok
    assert await worker.call_method(mgr, "held") == {VIP4, VIP6}
    on_r1 = vip_addrs(lab, "r1")
    assert set(on_r1) == {VIP4.ip, VIP6.ip}
    assert all(1 <= lifetime <= 3 for lifetime in on_r1.values())  # finite, never "forever"
    label = next(a for a in lab.addresses("r1") if a["local"] == VIP4.ip)["label"]
    assert label == "eth0:1"
    for ip in (VIP4.ip, VIP6.ip):
        lab.run("client", "ping", "-c1", "-W2", ip)
        assert lab.neigh("client", ip)[0] == MAC["r1"]
    removal = await worker.call_method(mgr, "release")
    assert removal.removed == {VIP4, VIP6}
    assert vip_addrs(lab, "r1") == {}


async def test_unrenewed_vips_expire_and_renewed_ones_stay(lab):
    worker, mgr = await manager(lab, "r1", lifetime=2)
    await worker.call_method(mgr, "acquire", [VIP4, VIP6])
    for _ in range(8):  # 4 s of renewals: twice the lifetime
        await asyncio.sleep(0.5)
        assert await worker.call_method(mgr, "renew") == {}
    assert set(vip_addrs(lab, "r1")) == {VIP4.ip, VIP6.ip}
    # the agent stops renewing but stays up: the kernel drops both VIPs by itself
    took = await gone(lab, "r1", [VIP4.ip, VIP6.ip], within=2 + 3)
    print(f"un-renewed VIPs gone {took:.2f} s after the last renew (lifetime 2 s)")
    assert await worker.call_method(mgr, "held") == {VIP4, VIP6}  # it was not told
    # a late renew puts them back (the election only renews while its lease is valid)
    assert await worker.call_method(mgr, "renew") == {}
    assert set(vip_addrs(lab, "r1")) == {VIP4.ip, VIP6.ip}
    await worker.call_method(mgr, "release")


async def test_vips_vanish_when_the_agent_is_killed(lab):
    worker, mgr = await manager(lab, "r1", lifetime=2)
    await worker.call_method(mgr, "acquire", [VIP4, VIP6])
    os.kill(worker.proc.pid, signal.SIGKILL)
    await worker.proc.wait()
    assert set(vip_addrs(lab, "r1")) == {VIP4.ip, VIP6.ip}
    await gone(lab, "r1", [VIP4.ip, VIP6.ip], within=2 + 3)


@pytest.mark.parametrize(
    ("vip", "forms", "kinds"),
    [
        (VIP4, ("request", "reply"), {"arp-request", "arp-reply"}),
        (VIP4, ("request",), {"arp-request"}),
        (VIP4, ("reply",), {"arp-reply"}),
        (VIP6, ("request", "reply"), {"na"}),
    ],
    ids=["garp", "garp-request-only", "garp-reply-only", "unsolicited-na"],
)
async def test_failover_moves_client_neighbour_entry_without_client_traffic(
    lab, tmp_path, vip, forms, kinds
):
    record = tmp_path / "watch.jsonl"
    watcher = await arpwatch.start(lab, "client", "eth0", record, vips=[vip.ip])
    w1, m1 = await manager(lab, "r1", lifetime=3)
    w2, m2 = await manager(lab, "r2", lifetime=3, arp_forms=forms)
    await w1.call_method(m1, "acquire", [vip])
    lab.run("client", "ping", "-c1", "-W2", vip.ip)
    assert lab.neigh("client", vip.ip)[0] == MAC["r1"]

    switch = time.monotonic()
    assert (await w1.call_method(m1, "release")).removed == {vip}
    assert (await w2.call_method(m2, "acquire", [vip])).added == {vip}
    await netlab.wait_for(
        lambda: lab.neigh("client", vip.ip)[0] == MAC["r2"], within=10, what="entry -> r2"
    )
    switched = time.monotonic()
    lab.run("client", "ping", "-c1", "-W2", vip.ip)  # and r2 answers
    await w2.call_method(m2, "release")
    await arpwatch.stop(watcher)

    events = arpwatch.read_events(record)
    window = [e for e in events if switch <= e.t <= switched]
    announced = {e.kind for e in window if e.mac == MAC["r2"] and e.ip == vip.ip}
    assert announced == kinds
    # the client did not ask for the VIP: the announcement alone moved its entry
    assert [e for e in window if e.out] == []
    assert any(e.out and e.target == vip.ip for e in events if e.t < switch)  # it can ask
    own = arpwatch.ownership(events, [MAC["r1"], MAC["r2"]], vips=[vip.ip], hold=1.0)[vip.ip]
    assert own.owners == [MAC["r1"], MAC["r2"]]
    assert own.overlaps == ()
    assert own.foreign == ()


async def test_release_removes_all_even_when_some_are_gone(lab):
    lab.run("r1", "ip", "link", "add", "extra0", "type", "veth", "peer", "name", "extra1")
    lab.run("r1", "ip", "link", "set", "extra0", "up")
    vips = [
        VIP4,
        VIP6,
        Vip("10.60.0.101", 24, "eth0"),
        Vip("10.61.0.1", 24, "extra0"),
        Vip("10.62.0.1", 32, "nosuch0"),  # missing interface: reported, not fatal
    ]
    worker, mgr = await manager(lab, "r1", lifetime=5)
    result = await worker.call_method(mgr, "acquire", vips)
    assert result.added == set(vips[:4])
    assert set(result.failed) == {vips[4]} and "nosuch0" in result.failed[vips[4]]
    lab.run("r1", "ip", "addr", "del", "10.60.0.101/24", "dev", "eth0")  # gone by hand
    lab.run("r1", "ip", "link", "del", "extra0")  # gone with its interface
    assert await worker.call_method(mgr, "present") == {VIP4, VIP6}
    removal = await worker.call_method(mgr, "release")
    assert removal.removed == {VIP4, VIP6}
    assert removal.absent == {vips[2], vips[3], vips[4]}  # nosuch0: never installed
    assert removal.failed == {}
    assert vip_addrs(lab, "r1") == {}
    assert lab.has_addr("r1", "10.60.0.11")  # the router's own address is untouched
    assert await worker.call_method(mgr, "held") == set()
    assert await worker.call_method(mgr, "renew") == {}  # nothing wanted any more
    assert vip_addrs(lab, "r1") == {}


async def test_renew_retries_a_vip_whose_interface_appears_later(lab):
    late = Vip("10.63.0.1", 24, "late0")
    worker, mgr = await manager(lab, "r1", lifetime=5)
    result = await worker.call_method(mgr, "acquire", [VIP4, late])
    assert result.added == {VIP4} and set(result.failed) == {late}
    assert set(await worker.call_method(mgr, "renew")) == {late}
    lab.run("r1", "ip", "link", "add", "late0", "type", "veth", "peer", "name", "late1")
    lab.run("r1", "ip", "link", "set", "late0", "up")
    assert await worker.call_method(mgr, "renew") == {}
    assert lab.has_addr("r1", late.ip, "late0")
    assert await worker.call_method(mgr, "held") == {VIP4, late}
    # acquiring a smaller set drops the rest
    result = await worker.call_method(mgr, "acquire", [late])
    assert result.removed.removed == {VIP4}
    assert vip_addrs(lab, "r1") == {}
    await worker.call_method(mgr, "release")
    assert not lab.has_addr("r1", late.ip, "late0")


async def test_cleanup_leftovers_removes_stale_vips_anywhere(lab):
    # what a crashed agent (or an admin) left behind: other prefix, other interface, forever
    lab.add_addr("r2", "eth0", "10.60.0.100/32", "valid_lft", "60", "preferred_lft", "60")
    lab.add_addr("r2", "eth0", "fd60::100/64")
    lab.run("r2", "ip", "link", "add", "old0", "type", "veth", "peer", "name", "old1")
    lab.add_addr("r2", "old0", "10.60.9.9/24", "label", "old0:7")
    worker, mgr = await manager(lab, "r2", lifetime=3)
    leftover = Vip("10.60.9.9", 24, "eth0")  # configured for eth0, found on old0
    removal = await worker.call_method(mgr, "cleanup_leftovers", [VIP4, VIP6, leftover])
    assert {v.ip for v in removal.removed} == {VIP4.ip, VIP6.ip, leftover.ip}
    assert Vip("10.60.9.9", 24, "old0", "old0:7") in removal.removed
    assert Vip("10.60.0.100", 32, "eth0") in removal.removed
    assert vip_addrs(lab, "r2") == {}
    assert not lab.has_addr("r2", leftover.ip, "old0")
    assert lab.has_addr("r2", "10.60.0.12")
    # nothing found: nothing to do; VIPs we hold are never treated as leftovers
    await worker.call_method(mgr, "acquire", [VIP4])
    removal = await worker.call_method(mgr, "cleanup_leftovers", [VIP4, VIP6])
    assert removal.removed == set() and removal.absent == set()
    assert set(vip_addrs(lab, "r2")) == {VIP4.ip}
    await worker.call_method(mgr, "release")
