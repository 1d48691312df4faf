"""Named network namespace primitives: create, plug into a bridge, run in, kill, delete.

Thin wrappers around ``ip`` (iproute2). Every failure is a :class:`LabError` naming the
command and its output. Used by the lab (``lvslab``) and by the tests' ``netlab``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable

BRIDGE_DEV = "br0"
NETNS_DIR = "/run/netns"


class LabError(RuntimeError):
    """A lab operation failed; the message says what and why (no traceback needed)."""


def sh(
    *cmd: object,
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command (no shell); ``LabError`` with its output if ``check`` and it fails."""
    argv = [str(c) for c in cmd]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              input=input, env=env)
    except FileNotFoundError:
        raise LabError(f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)}: no answer within {timeout} s") from None
    if check and proc.returncode != 0:
        out = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise LabError(f"{' '.join(argv)} -> {proc.returncode}: {out}")
    return proc


def ns_exec(ns: str, *cmd: object) -> list[str]:
    """The argv running ``cmd`` inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns, *map(str, cmd)]


def run_in(ns: str, *cmd: object, check: bool = True, timeout: float = 30,
           input: str | None = None, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` inside namespace ``ns`` and wait at most ``timeout`` s."""
    return sh(*ns_exec(ns, *cmd), check=check, timeout=timeout, input=input, env=env)


def namespaces() -> list[str]:
    """Names of all named network namespaces."""
    out = sh("ip", "-j", "netns", "list").stdout.strip()
    return [entry["name"] for entry in json.loads(out or "[]")]


def exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def ns_pids(ns: str) -> list[int]:
    """Pids of the processes inside namespace ``ns`` (also orphans; none if it is gone)."""
    out = sh("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def pid_in(pid: int, ns: str) -> bool:
    """Whether ``pid`` is a live (non-zombie) process inside namespace ``ns``."""
    try:
        mine = os.stat(f"/proc/{pid}/ns/net")
        theirs = os.stat(os.path.join(NETNS_DIR, ns))
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and (mine.st_dev, mine.st_ino) == (
        theirs.st_dev, theirs.st_ino)


def kill_all(ns: str, sig: int = signal.SIGKILL, rounds: int = 20) -> None:
    """Kill every process in ``ns``, again while new ones show up (a forking parent)."""
    for _ in range(rounds):
        pids = ns_pids(ns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(0.02)


def add_ns(ns: str) -> str:
    """Create namespace ``ns`` with ``lo`` up; returns its name."""
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    return ns


def delete_ns(ns: str) -> None:
    """Kill the processes inside ``ns`` and delete it (with its links); no error if gone."""
    kill_all(ns)
    sh("ip", "netns", "del", ns, check=False)


def add_bridge(ns: str, dev: str = BRIDGE_DEV) -> None:
    """An STP-less bridge ``dev`` (up) inside existing namespace ``ns``."""
    sh("ip", "-n", ns, "link", "add", dev, "type", "bridge",
       "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")  # fmt: skip
    sh("ip", "-n", ns, "link", "set", dev, "up")


def plug(
    bridge_ns: str,
    port: str,
    ns: str | None,
    ifname: str,
    *,
    bridge: str = BRIDGE_DEV,
    mac: str | None = None,
    addrs: Iterable[str] = (),
) -> None:
    """A veth pair: ``port`` enslaved to ``bridge`` in ``bridge_ns``, ``ifname`` in ``ns``.

    ``ns`` None means our own namespace. ``ifname`` is brought up with ``addrs``.
    """
    where = ("netns", ns if ns is not None else str(os.getpid()))
    sh("ip", "-n", bridge_ns, "link", "add", port, "type", "veth", "peer", "name", ifname, *where)
    sh("ip", "-n", bridge_ns, "link", "set", port, "master", bridge, "up")
    if mac:
        link(ns, "set", ifname, "address", mac)
    link(ns, "set", ifname, "up")
    for addr in addrs:
        add_addr(ns, ifname, addr)


def _ip(ns: str | None) -> list[str]:
    return ["ip"] if ns is None else ["ip", "-n", ns]


def link(ns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip link ARGS`` in ``ns`` (None: our own namespace)."""
    return sh(*_ip(ns), "link", *args, check=check)


def add_addr(ns: str | None, ifname: str, cidr: str, *extra: str) -> None:
    """``ip addr add cidr dev ifname [extra]`` in ``ns`` (IPv6: with nodad)."""
    nodad = ("nodad",) if ":" in cidr else ()
    sh(*_ip(ns), "addr", "add", cidr, "dev", ifname, *nodad, *extra)


def route(ns: str | None, *args: str) -> None:
    """``ip route ARGS`` in ``ns``."""
    sh(*_ip(ns), "route", *args)


def ip_json(ns: str | None, *args: str) -> list[dict]:
    """``ip -j ARGS`` in ``ns``, parsed."""
    return json.loads(sh(*_ip(ns), "-j", *args).stdout or "[]")


def sysctl(ns: str, key: str, value: str | int) -> None:
    """Set ``key`` (e.g. ``net.ipv4.ip_forward``) inside namespace ``ns``."""
    run_in(ns, "sysctl", "-qw", f"{key}={value}")


def delete_link(ns: str | None, ifname: str) -> None:
    """Delete link ``ifname`` if it exists (a veth takes its peer along)."""
    link(ns, "del", ifname, check=False)
