"""conntrackd run by the agent, for real, in two network namespaces joined by a veth (the
sync link): the transitions (state in the kernel at takeover) and every fault (missing,
refused config, dying, sync link down), each logged, counted and survived.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.conntrack import Conntrackd, ConntrackSync, render, settings
from cluster.model import LvsConfig
from lvslab import netns

pytestmark = pytest.mark.netns

VIP, RS = "10.201.0.100", "10.200.250.21"
ADDR = {"a": "10.99.0.1", "b": "10.99.0.2"}


def ns_name(side: str) -> str:
    return f"ct{os.getpid()}{side}"


@pytest.fixture
def pair() -> Iterator[dict[str, str]]:
    """Namespaces ``a`` and ``b``, each with one end of a veth (``sync``) on 10.99.0.0/24."""
    names = {side: ns_name(side) for side in "ab"}
    for ns in netns.namespaces():  # left by a killed run
        m = re.match(r"^ct(\d+)[ab]$", ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            netns.kill_all(ns)
            netns.delete_ns(ns)
    for ns in names.values():
        if netns.exists(ns):
            netns.delete_ns(ns)
        netns.add_ns(ns)
    netns.sh("ip", "link", "add", "ctsync0", "netns", names["a"], "type", "veth", "peer",
             "name", "ctsync1", "netns", names["b"])
    for side, dev in (("a", "ctsync0"), ("b", "ctsync1")):
        netns.link(names[side], "set", dev, "name", "sync")
        netns.add_addr(names[side], "sync", f"{ADDR[side]}/24")
        netns.link(names[side], "set", "sync", "up")
    try:
        yield names
    finally:
        for ns in names.values():
            netns.kill_all(ns)
            netns.delete_ns(ns)


def lvs_config(**globals_: object) -> LvsConfig:
    return LvsConfig.model_validate({
        "syncdaemon": True,
        "routers": [{"name": "a", "address": "10.98.0.1", "private": ADDR["a"]},
                    {"name": "b", "address": "10.98.0.2", "private": ADDR["b"]}],
        "virtuals": [{"name": "web", "address": f"{VIP} eth0:1", "port": 80,
                      "servers": [{"name": "rs1", "address": RS}]}],
        **globals_})


def entries(n: int, first: int = 0) -> str:
    """``conntrack -R`` lines: n established TCP connections client -> VIP, DNATed to RS."""
    out = []
    for i in range(first, first + n):
        client, port = f"10.{150 + i // 65536}.{i // 256 % 256}.{i % 256}", 20000 + i % 40000
        out.append(f"-I -p tcp -s {client} -d {VIP} --sport {port} --dport 80 --state "
                   f"ESTABLISHED -t 600 -u ASSURED,SEEN_REPLY -g {RS} --reply-src {RS} "
                   f"--reply-dst {client} --reply-port-src 80 --reply-port-dst {port}")
    return "\n".join(out) + "\n"


def load(ns: str, text: str, tmp: Path) -> None:
    path = tmp / f"entries-{ns}.txt"
    path.write_text(text)
    netns.run_in(ns, "conntrack", "-R", str(path))


def kernel(ns: str) -> list[str]:
    proc = netns.run_in(ns, "conntrack", "-L", check=False)
    return [ln for ln in proc.stdout.splitlines() if ln.startswith("tcp")]


def external(sync: ConntrackSync, peer: str | None = None) -> int:
    """Entries in the external cache of our conntrackd paired with ``peer`` (default: the
    only one)."""
    (s,) = [s for s in sync.settings if peer in (None, s.peer_name)]
    out = subprocess.run(["ip", "netns", "exec", sync.netns or "", "conntrackd", "-C",
                          str(s.config_path), "-s", "cache"],
                         capture_output=True, text=True, check=False).stdout
    m = re.search(r"cache:external\s+active objects:\s+(\d+)", out)
    return int(m.group(1)) if m else -1


def one(sync: ConntrackSync) -> Conntrackd:
    """The daemon of a two-router cluster (once configured)."""
    (daemon,) = sync.daemons.values()
    return daemon


async def until(probe: Callable[[], object], within: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g} s waiting for {what or probe}")
        await asyncio.sleep(0.05)


def make_sync(pair: dict[str, str], side: str, tmp: Path, **kw: object) -> ConntrackSync:
    return ConntrackSync(side, tmp / side, netns=pair[side], **kw)  # type: ignore[arg-type]


async def started(sync: ConntrackSync) -> asyncio.Task[None]:
    """``sync.run()`` as a task, once its daemons exist (fast backoff and link polls)."""
    task = asyncio.create_task(sync.run())
    await asyncio.wait_for(sync.resolved.wait(), 5)
    for daemon in sync.daemons.values():
        daemon.backoff_first, daemon.link_poll = 0.2, 0.2
    return task


async def test_takeover_commits_the_synced_state_before_returning(pair, tmp_path) -> None:
    a, b = make_sync(pair, "a", tmp_path), make_sync(pair, "b", tmp_path)
    cfg = lvs_config()
    tasks = []
    for sync in (a, b):
        sync.configure(cfg)
        tasks.append(await started(sync))
    try:
        for sync in (a, b):
            assert [s.interface for s in sync.settings] == ["sync"]
        await until(lambda: one(a).up and one(b).up, what="both daemons up")
        await a.activate()  # a is the active: nothing to commit yet
        assert a.stats.commits["ok"] == 1
        load(pair["a"], entries(300), tmp_path)
        load(pair["a"], entries(5, first=1000).replace("--dport 80", "--dport 22")
             .replace(RS, "10.9.9.9"), tmp_path)  # not a connection of this config
        await until(lambda: external(b) == 300, what="300 entries in b's external cache")
        assert kernel(pair["b"]) == []
        await b.activate()
        took = b.stats.commit_seconds
        rows = kernel(pair["b"])
        assert len(rows) == 300, "the state must be in the kernel when activate() returns"
        assert all(f"src={RS} dst=10.1" in r for r in rows), rows[:2]  # the DNAT is kept
        assert b.stats.commits["ok"] == 1 and took < b.commit_bound
        assert one(b).stats.commit_entries == 300
        a.deactivate()  # graceful hand-over: a resyncs from b, its kernel entries expire
        await until(lambda: a.stats.resync_requests >= 2, what="a's resync request")
        await until(lambda: external(a) == 300, what="b's state in a's external cache")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await a.close()
        await b.close()
    assert not (tmp_path / "a" / "conntrackd.lock").exists()


async def test_missing_conntrackd_is_logged_counted_and_takeover_goes_on(
        pair, tmp_path, caplog) -> None:
    sync = make_sync(pair, "a", tmp_path, binary="/nonexistent/conntrackd")
    sync.configure(lvs_config())
    task = await started(sync)
    try:
        await until(lambda: one(sync).stats.failures >= 2, what="two failed starts")
        assert "not found (install the Debian package conntrackd)" in \
            one(sync).stats.last_error
        assert not one(sync).up
        start = time.monotonic()
        await sync.activate()
        assert time.monotonic() - start < 0.1  # no wait: the VIPs go up at once
        assert sync.stats.commits["skipped"] == 1
        assert "conntrackd: /nonexistent/conntrackd not found" in caplog.text
        assert "taking over without the connection state it holds" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sync.close()


async def test_a_config_conntrackd_refuses_is_retried_with_backoff(pair, tmp_path) -> None:
    daemon = Conntrackd(netns=pair["a"], backoff_first=0.2, backoff_max=0.4)
    daemon.configure("General {\n    NoSuchOption 1\n}\n", tmp_path / "bad.conf")
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.stats.starts >= 3, what="three attempts")
        assert not daemon.up and daemon.stats.failures >= 2 and daemon.stats.restarts >= 2
        assert "refused to start (exit status 1): parsing config file in line (2), symbol " \
            "'NoSuchOption': syntax error" in daemon.stats.last_error
        assert daemon.stats.last_error_at > 0
        # the right config: it runs at once, without waiting for the backoff
        (good,) = settings(lvs_config(), "a", interface="sync", state_dir=tmp_path / "a")
        daemon.configure(render(good), good.config_path)
        await until(lambda: daemon.up, what="conntrackd up with a good config")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await daemon.close()


async def test_a_dying_conntrackd_is_restarted_and_its_stale_lock_removed(
        pair, tmp_path, caplog) -> None:
    sync = make_sync(pair, "a", tmp_path)
    sync.configure(lvs_config())
    task = await started(sync)
    try:
        daemon = one(sync)
        await until(lambda: daemon.up, what="conntrackd up")
        pid = daemon.pid
        assert pid is not None
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER  # not SCHED_RR 99
        os.kill(pid, signal.SIGKILL)  # leaves its lock file behind
        await until(lambda: daemon.stats.restarts == 1 and daemon.up,
                    what="a new conntrackd")
        assert daemon.pid != pid
        assert "died (killed by signal 9)" in daemon.stats.last_error
        assert daemon.stats.failures == 1
        assert "removed the stale lock file" in caplog.text
        await sync.activate()  # and it works
        assert sync.stats.commits["ok"] == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sync.close()


async def test_sync_link_down_is_counted_never_more(pair, tmp_path) -> None:
    sync = make_sync(pair, "a", tmp_path)
    sync.configure(lvs_config())
    task = await started(sync)
    try:
        daemon = one(sync)
        await until(lambda: daemon.stats.link_up, what="link seen up")
        netns.link(pair["a"], "set", "sync", "down")
        await until(lambda: daemon.stats.link_down == 1, what="link down counted")
        assert daemon.up and daemon.stats.failures == 0
        netns.link(pair["a"], "set", "sync", "up")
        await until(lambda: daemon.stats.link_up, what="link up again")
        assert daemon.stats.link_down == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sync.close()


async def test_a_commit_past_the_bound_does_not_hold_the_takeover(pair, tmp_path) -> None:
    sync = make_sync(pair, "a", tmp_path, commit_bound=0.3)
    sync.configure(lvs_config())
    task = await started(sync)
    try:
        await until(lambda: one(sync).up, what="conntrackd up")
        pid = one(sync).pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # a hung daemon: the commit gets no answer
        try:
            start = time.monotonic()
            await sync.activate()
            assert 0.3 <= time.monotonic() - start < 0.6
            assert sync.stats.commits["timeout"] == 1
            sync.active = False
            start = time.monotonic()
            await sync.activate(until=lambda: start + 0.1)  # the licence ends before the bound
            assert 0.1 <= time.monotonic() - start < 0.3
            await sync.activate(until=lambda: start - 1)  # no licence: no wait at all
            assert time.monotonic() - start < 0.4
            assert sync.stats.commits["timeout"] == 3
        finally:
            os.kill(pid, signal.SIGCONT)
        await until(lambda: sync.stats.commit_seconds_max >= 0.3, what="the commit's end")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sync.close()
