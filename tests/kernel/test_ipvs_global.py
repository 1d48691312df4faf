"""Connection timeouts and the connection-sync daemon, checked with ipvsadm."""

from __future__ import annotations

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
