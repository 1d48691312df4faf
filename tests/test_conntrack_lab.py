"""Established connections survive a change of director with nftables + conntrackd: a real
lab (three routers running pulse, nftables DNAT, conntrackd over the routers' private
link, two real servers whose gateway is nat_router), long-lived TCP connections through the
VIP with scheduler wrr (issue 10's failing case: 17 of 40 survived a crash without sync).

The real servers run the lab's line echo (lvslab/echo.py, port 7): a connection asks
``?`` first to learn its real server, then every line must come back as sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.failover_kit import (
    KEEP,
    Cluster,
    measured,
    prefix,
    remove_dead_labs,
    subnets,
    wait_for,
)

from lvslab import Lab, Topology, netns
from lvslab.config_file import lab_lvs_cf
from lvslab.echo import ECHO_PORT
from lvslab.services import default_agent_cmd

pytestmark = pytest.mark.netns

TAG = "s"
CONNECTIONS = 20
EVERY = 0.1  # seconds between the lines of a connection

CLIENT = """
import json, signal, socket, sys, threading, time
vip, port, n, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
results = [None] * n
def conn(i, sock):
    f, seq, server, stall, error, at = sock.makefile("rb"), 0, None, 0.0, None, None
    try:
        sock.sendall(b"?\\n")  # the lab's echo answers with the real server's name
        server = f.readline().decode().strip()
        while not stop.is_set():
            sent = time.monotonic()
            line = b"%d %d\\n" % (i, seq)
            sock.sendall(line)
            reply = f.readline()
            if not reply:
                raise ConnectionError("closed by the far end")
            if reply != line:
                raise ConnectionError("wrong answer %r" % reply)
            stall = max(stall, time.monotonic() - sent)
            seq += 1
            time.sleep(max(0.0, sent + every - time.monotonic()))
    except (OSError, ConnectionError) as exc:
        error, at = "%s: %s" % (type(exc).__name__, exc), time.monotonic()
    results[i] = {"server": server, "lines": seq, "stall": stall, "error": error, "at": at}
socks = [socket.create_connection((vip, port), timeout=30) for _ in range(n)]
threads = [threading.Thread(target=conn, args=(i, s)) for i, s in enumerate(socks)]
for t in threads:
    t.start()
print("ready", flush=True)
stop.wait()
for t in threads:
    t.join(40)
print(json.dumps(results), flush=True)
"""


def sync_config(path: Path, sync: bool) -> Path:
    """The lab's lvs.cf with ``syncdaemon`` and its echo virtual scheduled by wrr (weights
    1 and 2)."""
    public, private = subnets(TAG)
    topo = Topology(prefix(TAG), public, private, 3, 2)
    text = lab_lvs_cf(topo).replace("heartbeat = 1\n",
                                    f"heartbeat = 1\nsyncdaemon = {int(sync)}\n")
    head, echo = text.split("virtual echo {", 1)
    echo = echo.replace("scheduler = wlc", "scheduler = wrr", 1)
    echo = echo.replace("weight = 1", "weight = 2").replace("weight = 2", "weight = 1", 1)
    path.write_text(f"{head}virtual echo {{{echo}")
    return path


@contextlib.contextmanager
def sync_lab(sync: bool, agent_cmd: list[str] | None = None) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    if shutil.which("conntrackd") is None:
        pytest.fail("conntrackd missing: run the README's test command (make test)")
    remove_dead_labs()
    keep = KEEP / str(os.getpid()) / f"lab-{TAG}"
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    public, private = subnets(TAG)
    with Lab(prefix(TAG), public, private, routers=3, servers=2,
             config=sync_config(keep / "lvs.cf", sync), agent_cmd=agent_cmd) as lab:
        try:
            cluster = Cluster(lab)
            cluster.wait_healthy()
            yield cluster
        finally:
            shutil.copytree(lab.state_dir, keep, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("etcd-data", "*.key", "*.ctl"))


def started(proc: subprocess.Popen[bytes], what: str, within: float = 30) -> None:
    ready, _, _ = select.select([proc.stdout], [], [], within)
    line = proc.stdout.readline() if ready and proc.stdout else b""
    assert line.strip() == b"ready", f"{what} did not start: {line!r}"


def conntrackd_pid(c: Cluster, router: str) -> int | None:
    for pid in netns.ns_pids(c.lab.ns(router)):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "conntrackd":
                return pid
    return None


def echo_once(c: Cluster) -> str:
    """One new connection through the VIP: the answering server's name."""
    proc = c.lab.exec("client", sys.executable, "-c",
                      "import socket,sys; s=socket.create_connection((sys.argv[1], "
                      "int(sys.argv[2])), 3); s.sendall(b'?\\n'); "
                      "print(s.makefile().readline().strip())", c.vip, ECHO_PORT)
    return proc.stdout.strip()


@pytest.mark.parametrize("sync", [True, False], ids=["conntrackd", "baseline-no-sync"])
def test_connections_survive_a_crash_and_a_switchover_with_wrr(sync: bool) -> None:
    """With sync every connection survives; without it (the baseline, which shows this
    test can fail) a mid-stream packet on the new active is scheduled afresh."""
    with sync_lab(sync) as c:
        for r in c.routers if sync else ():
            wait_for(lambda r=r: c.metrics(r).get("lvs_ctsync_up") == 1.0, 20,
                     what=f"conntrackd up on {r}")
        client = None
        try:
            seen: set[str] = set()
            wait_for(lambda: seen.add(echo_once(c)) or seen >= set(c.lab.servers), 30,
                     what="both real servers' echo through the VIP")
            client = c.lab.popen("client", sys.executable, "-c", CLIENT, c.vip, ECHO_PORT,
                                 CONNECTIONS, EVERY, stdout=subprocess.PIPE)
            started(client, "the echo client")
            time.sleep(1.0)  # lines flow; conntrackd syncs the states

            kill_at = 0.0
            first = c.wait_healthy()
            crash_at = time.monotonic()
            c.lab.kill(first, link_down=True)  # a crash: links down, SIGKILL...
            for pid in netns.ns_pids(c.lab.ns(first)):  # ...of everything it ran
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            second = c.wait_one_holder(other_than=first)
            crash_gap = time.monotonic() - crash_at
            time.sleep(3.0)

            third = next(r for r in c.routers if r not in (first, second))
            switch_at = time.monotonic()
            proc = c.lvsctl("switchover", "--to", third)
            assert proc.returncode == 0, proc.stderr
            wait_for(lambda: c.one_holder() == third, what=f"{third} to hold the VIPs")
            switch_gap = time.monotonic() - switch_at
            time.sleep(3.0)

            if sync:  # conntrackd dies on the active: restarted; new connections work
                kill_at = time.monotonic()
                restarts = c.metrics(third).get("lvs_ctsync_restarts_total", 0.0)
                pid = conntrackd_pid(c, third)
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                assert echo_once(c) in c.lab.servers
                wait_for(lambda: c.metrics(third).get("lvs_ctsync_restarts_total")
                         == restarts + 1 and c.metrics(third).get("lvs_ctsync_up") == 1.0, 20,
                         what="conntrackd restarted on the active")
                time.sleep(1.0)
        finally:
            for r in c.routers:  # kept with the lab's logs, for a post-mortem
                table = c.lab.exec(r, "conntrack", "-L", timeout=10).stdout
                (c.lab.state_dir / f"conntrack-{r}.txt").write_text(table)
            results = []
            if client is not None:
                client.send_signal(signal.SIGTERM)
                out, _ = client.communicate(timeout=60)
                results = json.loads(out.decode().strip().splitlines()[-1])
        survived = [r for r in results if r["error"] is None]
        stall = max(r["stall"] for r in survived) if survived else 0.0
        servers = {r["server"] for r in results}
        errors = [f"{r['server']} {r['error']} at crash+{r['at'] - crash_at:.3f}s"
                  for r in results if r["error"]]
        measured(f"wrr crash+switchover, {'conntrackd' if sync else 'no sync'}",
                 switch_after=switch_at - crash_at,
                 kill_after=(kill_at - crash_at) if sync else -1.0,
                 connections=len(results),
                 survived=len(survived), longest_stall=stall, crash_gap=crash_gap,
                 switch_gap=switch_gap, servers="+".join(sorted(map(str, servers))))
        assert len(results) == CONNECTIONS
        assert servers == set(c.lab.servers)  # wrr spread them over both real servers
        if not sync:  # about 5 in 9 survive each change: all 20 of them, never
            assert len(survived) < CONNECTIONS
            assert "lvs_ctsync_up" not in c.metrics(second)
            return
        assert errors == []
        assert all(r["lines"] > (crash_gap + switch_gap + 6) / EVERY / 2 for r in results)
        m2, m3 = c.metrics(second), c.metrics(third)
        assert m2.get('lvs_ctsync_commits_total{result="ok"}') == 1.0
        assert m3.get('lvs_ctsync_commits_total{result="ok"}') == 1.0
        assert m3.get("lvs_ctsync_commit_entries", 0) >= CONNECTIONS


REFUSING = """#!/bin/sh
# conntrackd, but every daemon start gets a config it refuses (its client calls pass)
if [ "$#" -eq 2 ] && [ "$1" = "-C" ]; then
    printf 'Sync {\\n    NoSuchOption 1\\n}\\n' > "$2.refused"
    exec conntrackd -C "$2.refused"
fi
exec conntrackd "$@"
"""


@pytest.mark.parametrize("fault", ["missing", "refused"])
def test_a_broken_conntrackd_never_stops_the_routers_serving(fault: str,
                                                            tmp_path: Path) -> None:
    """conntrackd not installed, or refusing its config, on every router: counted and
    exported, and the cluster serves new connections and fails over as without sync."""
    program = "/nonexistent/conntrackd"
    if fault == "refused":
        program = str(tmp_path / "conntrackd")
        Path(program).write_text(REFUSING)
        Path(program).chmod(0o755)
    with sync_lab(True, [*default_agent_cmd(), "--conntrackd", program]) as c:
        for r in c.routers:
            wait_for(lambda r=r: c.metrics(r).get("lvs_ctsync_failures_total", 0) >= 1,
                     20, what=f"conntrackd's failure counted on {r}")
            assert c.metrics(r).get("lvs_ctsync_up") == 0.0
        wait_for(lambda: echo_once(c) in c.lab.servers, 30, what="a new connection")
        first = c.wait_healthy()
        c.lab.kill(first, link_down=True)
        second = c.wait_one_holder(other_than=first)
        wait_for(lambda: echo_once(c) in c.lab.servers, 30,
                 what="a new connection after the failover")
        wait_for(lambda: c.metrics(second).get('lvs_ctsync_commits_total{result="skipped"}')
                 == 1.0, 10, what="the takeover without state, counted")
        log = c.lab.log_path(second).read_text(errors="replace")
        assert ("not found (install the Debian package conntrackd)" if fault == "missing"
                else "NoSuchOption") in log
