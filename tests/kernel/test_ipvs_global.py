"""Connection timeouts and the connection-sync daemon, checked with ipvsadm."""

from __future__ import annotations

import asyncio

import pytest

from agent.dataplane.ipvs import IpvsBackend, SyncDaemon, Timeouts

pytestmark = pytest.mark.ipvs


async def test_timeouts(backend: IpvsBackend, witness) -> None:
    await backend.set_timeouts(900, 120, 300)
    assert await backend.timeouts() == Timeouts(900, 120, 300)
    assert "Timeout (tcp tcpfin udp): 900 120 300" in witness.run("ipvsadm -L --timeout")
    await backend.set_timeouts(None, 60, None)  # None leaves a value alone
    assert await backend.timeouts() == Timeouts(900, 60, 300)
    with pytest.raises(ValueError, match="udp"):
        await backend.set_timeouts(None, None, -1)


async def test_sync_daemon_start_switch_stop(backend: IpvsBackend, witness) -> None:
    witness.run("ip link add sync0 type veth peer name sync1 && ip link set sync0 up"
                 " && ip link set sync1 up")
    await backend.sync_daemon("master", "sync0", 7)
    assert await backend.sync_daemons() == [SyncDaemon("master", "sync0", 7)]
    shown = witness.run("ipvsadm -L --daemon")
    assert "master sync daemon (mcast=sync0, syncid=7" in shown
    await backend.sync_daemon("master", "sync0", 7)  # idempotent
    assert await backend.sync_daemons() == [SyncDaemon("master", "sync0", 7)]
    await backend.sync_daemon("backup", "sync1", 9)  # failover: master stops, backup runs
    shown = witness.run("ipvsadm -L --daemon")
    assert "backup sync daemon (mcast=sync1, syncid=9" in shown
    assert "master" not in shown
    await backend.sync_daemon(None, "", 0)
    assert await backend.sync_daemons() == []
    assert witness.run("ipvsadm -L --daemon").strip() == ""
    with pytest.raises(ValueError, match="syncid"):
        await backend.sync_daemon("master", "sync0", 256)


async def test_sloppy_tcp_and_sctp_for_stateless_schedulers(backend: IpvsBackend, witness) -> None:
    """A new active takes up mh/sh connections mid-stream: the namespace's own sysctls."""
    witness.run("echo 0 > /proc/sys/net/ipv4/vs/sloppy_tcp"
                " && echo 0 > /proc/sys/net/ipv4/vs/sloppy_sctp")
    wanted = backend.midstream_sysctls({"tcp", "udp"})
    assert wanted == {"net.ipv4.vs.sloppy_tcp": "1"}
    assert await backend.set_sysctls(wanted) == {"net.ipv4.vs.sloppy_tcp": "0"}
    assert witness.run("cat /proc/sys/net/ipv4/vs/sloppy_tcp").strip() == "1"
    assert witness.run("cat /proc/sys/net/ipv4/vs/sloppy_sctp").strip() == "0"  # not asked
    assert await backend.set_sysctls(wanted) == {}  # already so: nothing changed
    assert await backend.set_sysctls(backend.midstream_sysctls({"sctp"})) == {
        "net.ipv4.vs.sloppy_sctp": "0"}
    assert witness.run("cat /proc/sys/net/ipv4/vs/sloppy_sctp").strip() == "1"
    assert await backend.set_sysctls({"net.ipv4.vs.sloppy_tcp": "0"}) == {
        "net.ipv4.vs.sloppy_tcp": "1"}  # put back, as the data plane does when mh goes
    assert witness.run("cat /proc/sys/net/ipv4/vs/sloppy_tcp").strip() == "0"


async def test_sync_refresh_makes_syncs_periodic(backend: IpvsBackend, witness) -> None:
    """Each connection is re-sent at most every N s (not by packet counts), so a returning
    backup learns every busy connection within a bounded time (the preemption gate)."""
    await backend.sync_refresh(2)
    assert witness.run("sysctl -n net.ipv4.vs.sync_refresh_period").strip() == "2"
    assert witness.run("sysctl -n net.ipv4.vs.sync_threshold").split() == ["3", "0"]
    assert await backend.sysctl("sync_refresh_period") == "2"
    await backend.sync_refresh(0)  # the kernel's defaults again
    assert witness.run("sysctl -n net.ipv4.vs.sync_threshold").split() == ["3", "50"]
    with pytest.raises(ValueError, match="refresh"):
        await backend.sync_refresh(-1)


async def test_data_plane_reports_warmth_of_its_sync_daemon(netns: str, witness) -> None:
    """A backup's table is warm sync_warmup after its daemon started; a master's always."""
    from agent.dataplane.service import DataPlane
    from cluster import lvscf

    witness.run("ip link add sync0 type veth peer name sync1 && ip link set sync0 up")
    text = ("serial_no = 1\nprimary = 10.0.0.2\nsyncdaemon = 1\nsyncd_iface = sync0\n"
            "sync_warmup = 6\nvirtual web {\n address = 10.0.0.100 eth0:1\n}\n")
    cfg = lvscf.parse(text, "t.cf").config
    assert cfg is not None
    plane = DataPlane("ipvs", netns=netns)
    plane.start()
    task = asyncio.create_task(plane.run())
    try:
        plane.update(cfg, {}, {}, active=False)
        await wait(lambda: plane.warmth.state == "backup")
        assert plane.warmth.warm_at() == pytest.approx(plane.warmth.since + 6)
        assert "backup sync daemon (mcast=sync0" in witness.run("ipvsadm -L --daemon")
        assert witness.run("sysctl -n net.ipv4.vs.sync_refresh_period").strip() == "2"
        plane.update(cfg, {}, {}, active=True)
        await wait(lambda: plane.warmth.state == "master")
        assert plane.warmth.warm_at() == float("-inf")
        assert "master sync daemon (mcast=sync0" in witness.run("ipvsadm -L --daemon")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        plane.close()


async def wait(cond, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not cond():
            await asyncio.sleep(0.02)
