"""The reusable namespace lab (tests/support/netlab.py): topology, workers, cleanup."""

import asyncio
import subprocess

import pytest
from support import netlab

pytestmark = pytest.mark.netns


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_leftovers_of_dead_runs_are_removed_and_live_ones_kept():
    dead = f"nlx{dead_pid()}-0-old"
    netlab.sh("ip", "netns", "add", dead)
    lab = netlab.Lab("nlx")
    try:
        assert dead not in netlab.namespaces()
        lab.add_ns("mine")
        assert netlab.remove_leftovers("nlx") == []  # our own pid is alive
        assert lab.ns("mine") in netlab.namespaces()
    finally:
        lab.destroy()
        netlab.delete_ns(dead)
    assert not [ns for ns in netlab.namespaces() if ns.startswith(lab.prefix)]


async def test_topology_commands_and_teardown():
    async with netlab.Lab("nlx") as lab:
        lab.add_bridge()
        lab.add_ns("a")
        lab.add_ns("b")
        lab.connect("a", mac="02:00:00:00:0a:01", addrs=["10.70.0.1/24", "fd70::1/64"])
        lab.connect("b", "uplink", addrs=["10.70.0.2/24", "fd70::2/64"])
        lab.run("a", "ping", "-c1", "-W2", "10.70.0.2")
        lab.run("a", "ping", "-c1", "-W2", "fd70::2")
        assert lab.neigh("a", "10.70.0.2") == (lab.mac("b", "uplink"), ["REACHABLE"])
        assert lab.mac("a") == "02:00:00:00:0a:01"
        assert lab.has_addr("b", "fd70::2", "uplink")
        assert not lab.has_addr("b", "10.70.0.1", "uplink")
        assert lab.neigh("a", "10.70.0.99") == (None, [])
        with pytest.raises(netlab.LabError, match="ping"):
            lab.run("a", "ping", "-c1", "-W1", "10.70.0.99")
        assert (await lab.arun("b", "cat", "/proc/sys/net/ipv4/ip_forward")).stdout == "0\n"
        lab.sysctl("b", "net.ipv4.ip_forward", 1)
        assert lab.run("b", "cat", "/proc/sys/net/ipv4/ip_forward").stdout == "1\n"
        sleeper = await lab.spawn("a", "sleep", "600")
        names = [lab.ns(n) for n in ("br", "a", "b")]
    assert sleeper.returncode is not None
    assert not set(names) & set(netlab.namespaces())


async def test_worker_runs_calls_inside_the_namespace():
    async with netlab.Lab("nlx") as lab:
        lab.add_ns("a")
        async with await lab.worker("a") as worker:
            pid = await worker.call("os:getpid")
            assert netlab.sh("ip", "netns", "identify", str(pid)).stdout.strip() == lab.ns("a")
            # calls run concurrently: a slow one does not hold up a quick one
            slow = asyncio.ensure_future(worker.call("asyncio:sleep", 1.0, "done"))
            assert await worker.call("os.path:join", "a", "b") == "a/b"
            assert not slow.done()
            assert await slow == "done"
            # kept objects and their methods
            ref = await worker.keep("collections:Counter", "abca")
            assert await worker.call_method(ref, "most_common", 1) == [("a", 2)]
            assert await worker.call("builtins:len", ref) == 3
            with pytest.raises(netlab.WorkerError) as err:
                await worker.call("ipaddress:ip_address", "junk")
            assert err.value.type_name == "ValueError"
            assert "does not appear to be an IPv4 or IPv6 address" in str(err.value)
            with pytest.raises(netlab.WorkerError, match="pickle"):
                await worker.call("threading:Lock")
            with pytest.raises(netlab.WorkerError, match="ModuleNotFoundError"):
                await worker.call("no_such_module:x")
        assert worker.proc.returncode == 0
        assert await lab.call("a", "socket:if_nametoindex", "lo") == 1
