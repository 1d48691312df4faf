"""The fence: no frame claims a VIP unless the licence lives (agent/vip/fence.py).

Real namespaces on a bridge; the client asks with arping and records every claim. The VIP
stays on r1's interface throughout (as when the agent and its guardian are frozen): only
the fence decides, for the kernel's answers and for our own gratuitous ARP alike.
"""

import time

import pytest
from support import arpwatch, netlab

from agent.vip import Vip
from agent.vip.manager import UNLICENSED

pytestmark = pytest.mark.netns

VIP = Vip("10.62.0.100", 24, "eth0")


@pytest.fixture
async def lab():
    async with netlab.Lab("vfn") as lab:
        lab.add_bridge()
        lab.add_ns("r1")
        lab.add_ns("client")
        lab.connect("r1", addrs=["10.62.0.11/24"])
        lab.connect("client", addrs=["10.62.0.50/24"])
        lab.run("r1", "ip", "addr", "add", f"{VIP.ip}/24", "dev", "eth0")
        yield lab


def answers(lab) -> bool:
    """Does anyone answer an ARP request for the VIP (one try, 0.3 s)?"""
    proc = lab.run("client", "arping", "-c", "1", "-w", "0.3", "-I", "eth0", VIP.ip,
                   check=False)
    return proc.returncode == 0


async def test_the_kernel_claims_a_guarded_vip_only_until_the_licence_ends(lab):
    assert answers(lab)  # unguarded: the kernel answers
    worker = await lab.worker("r1")
    fence = await worker.keep("agent.vip:ArpFence")
    assert await worker.call_method(fence, "guard", [VIP])
    assert not answers(lab)  # guarded, not licensed
    until = await worker.call("time:monotonic") + 1.5
    assert await worker.call_method(fence, "license", [VIP], until)
    assert answers(lab)
    await netlab.wait_for(lambda: not answers(lab), within=3, what="the licence to run out")
    assert time.monotonic() <= until + 1.0  # ran out by itself, nobody revoked it
    await worker.call_method(fence, "license", [VIP], await worker.call("time:monotonic") + 30)
    assert answers(lab)
    assert await worker.call_method(fence, "revoke")
    assert not answers(lab)
    await worker.call_method(fence, "remove")
    assert answers(lab)  # tables gone: back to the kernel's default


async def test_vip_manager_adds_and_announces_nothing_without_a_licence(lab):
    lab.run("r1", "ip", "addr", "del", f"{VIP.ip}/24", "dev", "eth0")
    worker = await lab.worker("r1")
    mgr = await worker.keep("agent.vip:VipManager", lifetime=5, licence=_never)
    result = await worker.call_method(mgr, "acquire", [VIP])
    assert set(result.failed) == {VIP} and not result.added
    assert VIP.ip not in {a["local"] for a in lab.addresses("r1")}
    assert not await worker.call_method(mgr, "licensed")
    assert await worker.call_method(mgr, "renew") == {VIP: UNLICENSED}


def _never() -> float:
    return float("-inf")


async def test_our_own_gratuitous_arp_is_fenced_too(lab, tmp_path):
    """A process stopped between its licence check and its send (the check-to-act window)
    cannot claim the VIP once the licence has run out: the egress hook drops the frame."""
    record = tmp_path / "claims.jsonl"
    watcher = await arpwatch.start(lab, "client", "eth0", record)
    worker = await lab.worker("r1")
    fence = await worker.keep("agent.vip:ArpFence")
    sender = await worker.keep("agent.vip.sender:GratuitousSender")
    assert await worker.call_method(fence, "guard", [VIP])
    assert await worker.call_method(sender, "send", [VIP]) == 0  # dropped on egress
    licensed = await worker.call("time:monotonic")
    await worker.call_method(fence, "license", [VIP], licensed + 30)
    assert await worker.call_method(sender, "send", [VIP]) == 2  # request and reply forms
    await netlab.wait_for(lambda: len(_garps(record)) == 2, within=5, what="the two GARPs")
    await arpwatch.stop(watcher)
    assert len(_garps(record)) == 2  # none of the first send's frames left r1


def _garps(path):
    return [e for e in arpwatch.read_events(path) if e.ip == VIP.ip and e.target == VIP.ip]



async def test_licences_are_written_as_netlink_batches_with_the_time_left(lab):
    """license/revoke go as raw nf_tables batches (fence_netlink.py: libnftables would list
    the data plane's whole table first), and leave the kernel's sets as `nft -f` would."""
    worker = await lab.worker("r1")
    fence = await worker.keep("agent.vip:ArpFence")
    assert await worker.call_method(fence, "writer") == "netlink"
    assert await worker.call_method(fence, "guard", [VIP])
    assert await worker.call_method(fence, "license", [VIP],
                                    await worker.call("time:monotonic") + 30)
    listing = lab.run("r1", "nft", "list", "set", "netdev", "piranha_fence", "licensed4").stdout
    assert f"{VIP.ip} timeout 30s" in listing or f"{VIP.ip} timeout 29s" in listing, listing
    assert await worker.call_method(fence, "license", [VIP],
                                    await worker.call("time:monotonic") + 2)  # shorter: replaced
    listing = lab.run("r1", "nft", "list", "set", "netdev", "piranha_fence", "licensed4").stdout
    assert "timeout 2s" in listing or "timeout 1s9" in listing, listing
    assert await worker.call_method(fence, "revoke")
    listing = lab.run("r1", "nft", "list", "set", "netdev", "piranha_fence", "licensed4").stdout
    assert VIP.ip not in listing
    lab.run("r1", "nft", "delete", "table", "netdev", "piranha_fence")
    assert not await worker.call_method(fence, "license", [VIP],
                                        await worker.call("time:monotonic") + 5)  # no table
    assert await worker.call_method(fence, "guard", [VIP])  # set up again: licences work
    assert await worker.call_method(fence, "license", [VIP],
                                    await worker.call("time:monotonic") + 5)
    assert await worker.call_method(fence, "guard", [VIP])  # anew: the licence is gone ...
    assert await worker.call_method(fence, "license", [VIP],
                                    await worker.call("time:monotonic") + 5)
    listing = lab.run("r1", "nft", "list", "set", "netdev", "piranha_fence", "licensed4").stdout
    assert VIP.ip in listing  # ... and written again, not taken as still in the kernel


async def test_a_renewal_is_skipped_while_another_write_runs_unless_it_must_go(lab):
    """A renewal writes only when the kernel's licence is down to half of ours; WRITERS held
    by a data-plane write, a due renewal with time left in the kernel is skipped (counted);
    any other licence, and a revocation, is written at once all the same, never late."""
    worker = await lab.worker("r1")
    out = await worker.call("support.fence_turns:renewals", VIP)
    assert out["first_waited"] < 0.5 and out["first_writes"] >= 2  # guard + licence
    assert out["kept"] == 1  # a renewal the kernel's licence covers writes nothing
    assert out["renewal_waited"] < 0.5 and out["renewal_ok"] == 1.0 and out["deferred"] == 1
    assert out["short_waited"] < 0.5 and out["deferred_after"] == 1
    assert 0 < out["short_timeout_ms"] <= 300  # the kernel's licence is the short one now
    assert out["revoke_waited"] < 0.3 and out["errors"] == 0


async def test_a_licence_renewal_is_recorded_as_a_commit_to_another_table(lab):
    """The data plane's reader skips generations the fence recorded (at 40,000 real servers
    it listed its whole table after every renewal); a commit by anyone else is not one."""
    worker = await lab.worker("r1")
    fence = await worker.keep("agent.vip:ArpFence")
    assert await worker.call_method(fence, "guard", [VIP])
    now = "agent.dataplane.nft.netlink:generation_now"
    ours = "agent.dataplane.nft.netlink:ours_between"
    g0 = await worker.call(now)
    assert await worker.call_method(fence, "license", [VIP],
                                    await worker.call("time:monotonic") + 30)
    g1 = await worker.call(now)
    assert g1 == g0 + 1 and await worker.call(ours, g0, g1) == 1
    lab.run("r1", "nft", "add", "table", "netdev", "someone_else")
    g2 = await worker.call(now)
    assert g2 == g1 + 1 and await worker.call(ours, g1, g2) == 0


async def test_a_renewal_is_recorded_even_when_another_commit_follows_it_at_once(lab):
    """The generation a renewal made comes from the kernel (echo), not from reading it
    before and after: a commit of someone else's between the write and that second read
    left the renewal unrecorded, and the data plane listed its whole table again."""
    worker = await lab.worker("r1")
    out = await worker.call("support.fence_turns:renewal_amid_another_commit", VIP)
    assert out == {"ok": 1, "commits": 2, "ours": 1}

