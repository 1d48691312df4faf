"""The VIP guardian: an agent killed while holding VIPs loses them at once, not after
their kernel lifetime; a clean stop leaves nothing for the guardian to do."""

import os
import signal
import time

import pytest
from support import netlab

from agent.vip import Vip

pytestmark = pytest.mark.netns

VIP4 = Vip("10.61.0.100", 24, "eth0", "eth0:1")
VIP6 = Vip("fd61::100", 64, "eth0")
LIFETIME = 30  # far longer than the test waits: only the guardian can remove them in time


@pytest.fixture
async def lab():
    async with netlab.Lab("vgd") as lab:
        lab.add_bridge()
        lab.add_ns("r1")
        lab.connect("r1", addrs=["10.61.0.11/24", "fd61::11/64"])
        yield lab


def present(lab) -> set[str]:
    return {a["local"] for a in lab.addresses("r1")} & {VIP4.ip, VIP6.ip}


async def agent(lab):
    worker = await lab.worker("r1")
    mgr = await worker.keep("agent.vip:VipManager", lifetime=LIFETIME)
    guardian = await worker.keep("agent.vip.guardian:Guardian")
    await worker.call_method(guardian, "start")
    await worker.call_method(guardian, "hold", [VIP4, VIP6])
    await worker.call_method(mgr, "acquire", [VIP4, VIP6])
    return worker, mgr, guardian


async def test_killed_agent_loses_its_vips_at_once(lab):
    worker, _, _ = await agent(lab)
    assert present(lab) == {VIP4.ip, VIP6.ip}
    start = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGKILL)
    await worker.proc.wait()
    await netlab.wait_for(lambda: not present(lab), within=5, what="VIPs removed")
    assert time.monotonic() - start < LIFETIME / 3


async def test_clean_stop_leaves_the_guardian_nothing_to_remove(lab):
    worker, mgr, guardian = await agent(lab)
    await worker.call_method(mgr, "release")
    await worker.call_method(guardian, "close")
    assert not await worker.call_method(guardian, "running")
    # An address added afterwards (e.g. by a new agent) is not the old guardian's business.
    lab.run("r1", "ip", "addr", "add", f"{VIP4.ip}/24", "dev", "eth0")
    os.kill(worker.proc.pid, signal.SIGKILL)
    await worker.proc.wait()
    time.sleep(0.5)
    assert present(lab) == {VIP4.ip}
