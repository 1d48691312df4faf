"""The data plane service in a namespace of its own: a configuration the backend cannot
express is refused with a clear error and the running table stays; then a valid one applies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from support import netlab

from agent.dataplane.desired import Health
from agent.dataplane.service import DataPlane
from cluster import lvscf

pytestmark = pytest.mark.netns

CFG = """serial_no = 1
primary = 10.0.0.2
network = {network}
virtual web {{
    address = 10.0.0.100 eth0:1
    server a {{
        address = {server}
    }}
}}
"""


@contextlib.asynccontextmanager
async def running(lab: netlab.Lab, before: Callable[[], object] = lambda: None,
                  ) -> AsyncIterator[tuple[DataPlane, asyncio.Task[None]]]:
    """A data plane (nftables) of namespace ``r`` of ``lab``, running; ``before()`` is done
    before it starts."""
    plane = DataPlane("nftables", netns=lab.add_ns("r"))
    before()
    plane.start()
    task = asyncio.create_task(plane.run())
    try:
        yield plane, task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        plane.close()


def config(network: str, server: str):
    cfg = lvscf.parse(CFG.format(network=network, server=server), "t.cf").config
    assert cfg is not None
    return cfg


async def test_refused_configuration_keeps_the_running_table(caplog) -> None:
    with netlab.Lab("dps") as lab:
        async with running(lab) as (plane, task):
            up = {("web", "a"): Health("up")}
            good = config("nat", "10.0.1.1")
            plane.update(good, up, {}, active=True)
            await asyncio.wait_for(plane.applied.wait(), 10)
            kept = dict(await plane.backend.read())
            assert len(kept) == 1
            caplog.set_level(logging.ERROR)
            # IPv6 real server behind an IPv4 VIP: fine for IPVS tunnelling, not for nftables.
            plane.update(config("tunnel", "fd00::1"), up, {}, active=True)
            async with asyncio.timeout(10):
                while plane.refused == 0:
                    await asyncio.sleep(0.02)
            assert "cannot program this configuration" in caplog.text
            assert not task.done()
            assert dict(await plane.backend.read()) == kept
            plane.applied.clear()
            plane.update(good.model_copy(update={"serial_no": 2}), {}, {}, active=True)
            await asyncio.wait_for(plane.applied.wait(), 10)
            assert all(not s.dests for s in (await plane.backend.read()).values())


async def test_the_hash_seed_and_midstream_sysctl_follow_the_mh_service(caplog) -> None:
    cfg = lvscf.parse(CFG.format(network="nat", server="10.0.1.1").replace(
        "    server a", "    scheduler = mh\n    server a"), "t.cf").config
    with netlab.Lab("dps") as lab:
        def loose_off() -> None:
            lab.sysctl("r", "net.netfilter.nf_conntrack_tcp_loose", 0)

        async with running(lab, loose_off) as (plane, _task):
            caplog.set_level(logging.WARNING)
            up = {("web", "a"): Health("up")}
            plane.update(cfg, up, {}, active=True, seed=11)
            await asyncio.wait_for(plane.applied.wait(), 10)
            (service,) = (await plane.backend.read()).values()
            assert service.spec.maglev.seed == 11
            loose = lab.run("r", "sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose")
            assert loose.stdout.strip() == "1"  # mh: a new active takes flows mid-stream
            assert "nf_conntrack_tcp_loose was 0, now 1" in caplog.text
            plane.applied.clear()
            plane.update(cfg, up, {}, active=True, seed=12)
            await asyncio.wait_for(plane.applied.wait(), 10)
            (service,) = (await plane.backend.read()).values()
            assert service.spec.maglev.seed == 12
            assert "hash seed 11 -> 12" in caplog.text
            plane.applied.clear()  # no stateless scheduler left: the old value comes back
            plane.update(config("nat", "10.0.1.1"), up, {}, active=True, seed=12)
            await asyncio.wait_for(plane.applied.wait(), 10)
            loose = lab.run("r", "sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose")
            assert loose.stdout.strip() == "0"


async def test_nftables_never_holds_preemption_back_for_the_ipvs_sync_daemon() -> None:
    """syncdaemon = 1 means the IPVS daemon: on nftables nothing is received that way, so
    the IPVS warmth measure reports "nothing to wait for" (conntrackd reports its own)."""
    with netlab.Lab("dpw") as lab:
        async with running(lab) as (plane, _task):
            assert plane.warmth.warm_at() == float("inf")  # nothing known yet
            cfg = config("nat", "10.0.1.1").model_copy(update={"syncdaemon": True})
            plane.update(cfg, {}, {}, active=False)
            await asyncio.wait_for(plane.applied.wait(), 10)
            async with asyncio.timeout(5):
                while plane.warmth.state == "unknown":
                    await asyncio.sleep(0.02)
            assert plane.warmth.state == "off" and plane.warmth.warm_at() == float("-inf")


async def test_quiet_waits_for_the_pass_under_way() -> None:
    """``quiet()`` (what health publication waits for) returns at once while no pass runs,
    waits while one is due or under way (here: waiting for the backend, which the test
    holds), and returns when it ends; its limit bounds the wait."""
    with netlab.Lab("dpq") as lab:
        async with running(lab) as (plane, task):
            good = config("nat", "10.0.1.1")
            await asyncio.wait_for(plane.quiet(), 1)  # idle
            async with plane.backend._lock:  # the backend busy: the pass waits for it
                plane.update(config("nat", "10.0.1.1"), {("web", "a"): Health("up")}, {},
                             active=True)
                waiting = asyncio.create_task(plane.quiet())
                await asyncio.sleep(0.5)
                assert not waiting.done() and not plane.applied.is_set()
                await asyncio.wait_for(plane.quiet(limit=0.1), 1)  # bounded: returns anyway
                assert not waiting.done()
            await asyncio.wait_for(waiting, 10)
            assert plane.applied.is_set()
            # Only the pass under way is waited for, not each that follows it back to back
            # (passes held at will here: inputs arriving all the time must not hold
            # publication back for the whole limit).
            gate = asyncio.Event()

            async def held_pass() -> None:
                await gate.wait()
                gate.clear()

            plane._pass = held_pass  # type: ignore[method-assign]
            plane.update(good, {}, {}, active=True)
            waiting = asyncio.create_task(plane.quiet())
            await asyncio.sleep(0.05)
            plane.update(good, {}, {}, active=True)  # due while the first is under way
            gate.set()  # the first ends
            await asyncio.wait_for(waiting, 1)
            assert not plane._idle.is_set()  # the second is under way (held)
            gate.set()
            await asyncio.wait_for(plane.quiet(), 1)
            assert plane._idle.is_set()
            assert not task.done()
