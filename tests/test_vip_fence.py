"""The kernel fence: a router answers ARP for a VIP it holds only while licensed.

Real namespaces on a bridge; the client asks with arping. The VIP stays on r1's interface
throughout (as when the agent and its guardian are frozen): only the fence decides.
"""

import time

import pytest
from support import netlab

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
