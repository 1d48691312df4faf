"""Heartbeat over two real links between two network namespaces: link failures and recovery.

Each router is a child process (this file run as a script) inside its own namespace,
joined to the other by two veth pairs: "pub" (10.201.1.0/24) and "priv" (10.201.2.0/24).
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time

import pytest

from agent.heartbeat import HeartbeatConfig, HeartbeatService, LocalState

PREFIX = "pehb-"  # namespaces of this test module: pehb-<pid>-<router>
KEY = b"netns-test-key-0123456789abcdef"
KEEPALIVE = 0.05
DEADTIME = 0.4
LINKS = {"pub": "10.201.1.", "priv": "10.201.2."}

pytestmark = pytest.mark.netns


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def remove_leftovers() -> None:
    """Delete namespaces of earlier runs of this test whose process is gone."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in names.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-")[0]
        alive = pid.isdigit() and os.path.exists(f"/proc/{pid}")
        if not alive or int(pid) == os.getpid():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def namespaces():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    remove_leftovers()
    a, b = f"{PREFIX}{os.getpid()}-a", f"{PREFIX}{os.getpid()}-b"
    try:
        for ns in (a, b):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for link, net in LINKS.items():
            ip("link", "add", f"{link}-a", "netns", a, "type", "veth",
               "peer", "name", f"{link}-b", "netns", b)  # fmt: skip
            for ns, side, host in ((a, "a", "1"), (b, "b", "2")):
                ip("-n", ns, "addr", "add", f"{net}{host}/24", "dev", f"{link}-{side}")
                ip("-n", ns, "link", "set", f"{link}-{side}", "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Child:
    """A router process in a namespace; remembers its latest status line and its events."""

    def __init__(self, proc):
        self.proc = proc
        self.status = {}
        self.events = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        async for line in self.proc.stdout:
            msg = json.loads(line)
            if "event" in msg:
                self.events.append(msg["event"])
            else:
                self.status = msg

    def errors(self, name="ENETUNREACH"):
        return self.status.get("errors", {}).get(name, 0)


async def spawn(ns: str, me: str, other: str, host: str, peer_host: str) -> Child:
    config = {
        "cluster": "lbns",
        "node": me,
        "port": 45539,
        "keepalive": KEEPALIVE,
        "deadtime": DEADTIME,
        "local_addresses": [net + host for net in LINKS.values()],
        "peers": {other: [net + peer_host for net in LINKS.values()]},
    }
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, sys.executable, __file__, json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    return Child(proc)


async def until(pred, what: str, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


async def test_links_down_peer_dead_link_up_alive(namespaces):
    a_ns, b_ns = namespaces
    a = await spawn(a_ns, "ra", "rb", "1", "2")
    b = await spawn(b_ns, "rb", "ra", "2", "1")
    try:
        await until(lambda: a.status.get("alive") == ["rb"], "ra sees rb")
        await until(lambda: b.status.get("alive") == ["ra"], "rb sees ra")
        assert a.events == ["PeerAlive", "PeerStatus"] and b.events == a.events

        # One link down: the other one carries the heartbeat, nobody dies.
        ip("-n", a_ns, "link", "set", "pub-a", "down")
        base = a.errors()
        await until(lambda: a.errors() > base + 2 * DEADTIME / KEEPALIVE, "sends fail a while")
        pub, priv = LINKS["pub"] + "1", LINKS["priv"] + "1"
        assert b.status["silent"][pub] > DEADTIME  # nothing came over pub for that long
        assert b.status["silent"][priv] < DEADTIME
        assert "PeerDead" not in a.events + b.events
        assert a.status["alive"] == ["rb"] and b.status["alive"] == ["ra"]

        # Both links down: dead on both sides, while the failing sends are only counted.
        ip("-n", a_ns, "link", "set", "priv-a", "down")
        await until(lambda: "PeerDead" in a.events and "PeerDead" in b.events, "both dead")
        await until(lambda: a.status["alive"] == [] and b.status["alive"] == [], "none alive")
        assert a.proc.returncode is None and b.proc.returncode is None

        # A link comes back: alive again, the service survived the errors.
        ip("-n", a_ns, "link", "set", "priv-a", "up")
        await until(lambda: a.status["alive"] == ["rb"] and b.status["alive"] == ["ra"], "back")
        assert a.events[-1] == "PeerAlive" and b.events[-1] == "PeerAlive"
        assert a.status["dropped"] == 0 and b.status["dropped"] == 0
    finally:
        for child in (a, b):
            with contextlib.suppress(ProcessLookupError):
                child.proc.terminate()
            await child.proc.wait()
            child.reader.cancel()


def child_main(config_json: str) -> None:
    """Run one router: print its changes and, every keepalive, its status as JSON lines."""
    config = HeartbeatConfig(**json.loads(config_json))
    (peer,) = config.peers

    def say(**msg):
        print(json.dumps(msg), flush=True)

    async def main():
        svc = HeartbeatService(
            config, KEY, lambda: LocalState("backup"),
            on_change=lambda c: say(event=type(c).__name__),
        )  # fmt: skip
        async with svc:
            while True:
                c, view = svc.counters(), svc.table.view(peer)
                say(
                    alive=sorted(svc.alive_peers()),
                    errors=c.send_errors,
                    dropped=sum(c.dropped.values()),
                    silent={a: svc.now() - t for a, t in view.links.items()} if view else {},
                )
                await asyncio.sleep(KEEPALIVE)

    asyncio.run(main())


if __name__ == "__main__":
    child_main(sys.argv[1])
