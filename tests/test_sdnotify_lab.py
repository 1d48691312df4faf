"""pulse as deploy/systemd/pulse.service runs it, in a two-router lab.

* Only the unit's capabilities (CapabilityBoundingSet=, with no-new-privileges, through
  util-linux ``setpriv``): the routers elect, float the VIP and serve through it.
* sd_notify over a real NOTIFY_SOCKET (what Type=notify and WatchdogSec= rely on): READY=1
  once it has joined, STATUS= on role changes, WATCHDOG=1 every half WATCHDOG_USEC from its
  main loop, none while it is stopped (SIGSTOP: systemd would restart it), STOPPING=1 on
  SIGTERM.
"""

from __future__ import annotations

import array
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lvslab import Lab
from lvslab.services import default_agent_cmd

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "systemd" / "pulse.service"

pytestmark = pytest.mark.netns

WATCHDOG_USEC = 1_000_000  # a ping every 0.5 s


@dataclass(frozen=True)
class Message:
    at: float  # monotonic, when received
    pid: int  # the sender, from SCM_CREDENTIALS (as systemd reads it)
    fields: tuple[str, ...]


class NotifySocket:
    """A unix datagram socket as systemd binds it (credentials passed), read by a thread."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[Message] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        size = struct.calcsize("3i")
        while not self._stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(size))
            except TimeoutError:
                continue
            pid = -1
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = array.array("i", payload[:size])[0]
            self.messages.append(Message(time.monotonic(), pid,
                                         tuple(data.decode().splitlines())))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def of(self, pid: int, since: float = 0.0) -> list[Message]:
        return [m for m in list(self.messages) if m.pid == pid and m.at >= since]

    def pings(self, pid: int, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [m.at for m in self.of(pid, since) if "WATCHDOG=1" in m.fields and m.at < until]

    def first(self, pid: int, field: str, within: float) -> Message:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for m in self.of(pid):
                if any(f.startswith(field) for f in m.fields):
                    return m
            time.sleep(0.05)
        raise AssertionError(f"no {field} from pid {pid} within {within} s: "
                             f"{[m.fields for m in self.of(pid)]}")


def wait_for(cond: Callable[[], object], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {limit}s waiting for {what}")


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


def unit_capabilities() -> list[str]:
    """The unit's CapabilityBoundingSet=, as setpriv names them (net_admin, ...)."""
    (line,) = [x for x in UNIT.read_text().splitlines()
               if x.startswith("CapabilityBoundingSet=")]
    return [c.removeprefix("CAP_").lower() for c in line.split("=", 1)[1].split()]


def confined_agent_cmd() -> list[str]:
    """The lab's agent with the unit's capabilities only (root keeps no others)."""
    caps = ",".join(["-all", *(f"+{c}" for c in unit_capabilities())])
    return ["setpriv", f"--bounding-set={caps}", "--inh-caps=-all", "--no-new-privs", "--",
            *default_agent_cmd("nftables")]


def test_unit_capabilities_are_the_needed_ones() -> None:
    assert sorted(unit_capabilities()) == ["net_admin", "net_bind_service", "net_raw"]


def owner(lab: Lab) -> str | None:
    owners = [r for r in lab.routers if lab.vip in lab.exec(r, "ip", "-br", "addr").stdout]
    return owners[0] if len(owners) == 1 else None


def test_pulse_speaks_sd_notify(notify: NotifySocket, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    n = os.getpid() % 20
    with Lab(f"sdn{n}", f"10.{210 + n}.0.0/24", f"10.{210 + n}.1.0/24", routers=2,
             servers=1, agent_cmd=confined_agent_cmd()) as lab:
        wait_for(lambda: owner(lab) is not None, 30, "an active router")
        for router in lab.routers:  # the unit's capabilities, no more
            status = Path(f"/proc/{lab.pid(router)}/status").read_text()
            (bnd,) = [x for x in status.splitlines() if x.startswith("CapBnd:")]
            assert int(bnd.split()[1], 16) == (1 << 10) | (1 << 12) | (1 << 13), bnd
        # Served through the VIP (once the first health checks put the servers in).
        served = lambda: lab.exec("client", "curl", "-sf", "-m", "2",  # noqa: E731
                                  f"http://{lab.vip}/").returncode == 0
        try:
            wait_for(served, 30, "a request served through the VIP")
        except AssertionError:
            logs = {r: lab.log_path(r).read_text()[-3000:] for r in lab.routers}
            raise AssertionError(f"not served through the VIP; router logs: {logs}") from None
        first = owner(lab)
        other = "r2" if first == "r1" else "r1"
        # The other router again, now under "systemd": its own pid may be watched.
        lab.kill(other)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
        pid = lab.start_agent(other)
        monkeypatch.delenv("NOTIFY_SOCKET")
        monkeypatch.delenv("WATCHDOG_USEC")

        ready = notify.first(pid, "READY=1", 30)
        assert "STATUS=backup (term" in "\n".join(ready.fields), ready
        assert [m for m in notify.of(pid) if m.at < ready.at
                and "WATCHDOG=1" in m.fields] == []  # no pings before READY
        # Before READY: only keep-alives that extend the start timeout, and status.
        assert all(f.startswith(("EXTEND_TIMEOUT_USEC=", "STATUS="))
                   for m in notify.of(pid) if m.at < ready.at for f in m.fields)

        # Pings every half WATCHDOG_USEC, never a gap systemd would call a hang.
        time.sleep(3.0)
        pings = notify.pings(pid, since=ready.at)
        assert len(pings) >= 4, pings
        gaps = [b - a for a, b in zip([ready.at, *pings], pings, strict=False)]
        assert max(gaps) < WATCHDOG_USEC / 1e6, gaps

        # A stopped agent stops pinging (systemd would restart it); it resumes after.
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        time.sleep(2.5)
        resumed = time.monotonic()
        os.kill(pid, signal.SIGCONT)
        # (a ping sent just before the stop may be read a little later)
        assert notify.pings(pid, since=stopped + 0.3, until=resumed) == []
        wait_for(lambda: notify.pings(pid, since=resumed), 2.0, "pings after SIGCONT")

        # A role change is a STATUS= line.
        lab.kill(first)
        status = notify.first(pid, "STATUS=active", 30)
        assert "term" in status.fields[-1]
        wait_for(lambda: owner(lab) == other, 10, f"{other} holds the VIP")

        # SIGTERM: STOPPING=1, then it hands over and exits cleanly.
        os.kill(pid, signal.SIGTERM)
        stopping = notify.first(pid, "STOPPING=1", 10)
        wait_for(lambda: not lab.alive(other), 10, f"{other} exited")
        assert all("WATCHDOG=1" not in m.fields for m in notify.of(pid, stopping.at + 2.0))
