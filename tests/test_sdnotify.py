"""sd_notify (agent/sdnotify.py) over real unix datagram sockets: a path and an abstract
name, the watchdog's rules, keep-alives before READY, and sends that never fail the agent."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import Notifier, socket_address, watchdog_interval


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(1.0)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(1.0)


def test_abstract_names_start_with_a_nul() -> None:
    assert socket_address("@sys/notify") == b"\0sys/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_abstract_socket_receives_ready() -> None:
    name = f"piranha-sdnotify-test-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(1.0)
    try:
        n = Notifier("@" + name)
        n.set_ready("backup (term 0)")
        assert sock.recv(4096).decode() == "READY=1\nSTATUS=backup (term 0)"
        n.close()
    finally:
        sock.close()


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}, 7) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "7"}, 7) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 7) is None
    assert watchdog_interval({}, 7) is None


def test_from_env_takes_the_variables_away_from_children(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "x"), "WATCHDOG_USEC": "2000000", "PATH": "/bin"}
    n = Notifier.from_env(env)
    assert n.enabled and n.watchdog == 1.0
    assert env == {"PATH": "/bin"}
    n.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled and n.due_in(0.0) == float("inf")
    n.set_ready("x")
    n.tick(1e9)
    n.set_stopping()
    assert n.sent == 0


def test_keepalives_extend_the_start_then_ping_the_watchdog(
        listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    clock = Clock()
    n = Notifier(path, watchdog=0.5, clock=clock)
    n.tick(clock())
    assert received(sock) == ["EXTEND_TIMEOUT_USEC=2000000"]  # 4 keep-alive intervals
    clock.t += 0.25
    n.tick(clock())
    assert received(sock) == []  # not due yet
    assert n.due_in(clock()) == 0.25
    n.set_status("waiting for a config this router can run")
    n.set_status("waiting for a config this router can run")  # unchanged: not sent again
    n.set_ready("backup (term 3, config serial_no 5)")
    assert received(sock) == ["STATUS=waiting for a config this router can run",
                              "READY=1\nSTATUS=backup (term 3, config serial_no 5)\nWATCHDOG=1"]
    pings = 0
    for _ in range(8):  # 2 s in steps of 0.25 s: a ping every 0.5 s
        clock.t += 0.25
        n.tick(clock())
        pings += len(received(sock))
    assert pings == 4
    n.set_ready("again")  # once only
    n.set_stopping("handing over")
    n.set_stopping("handing over")
    assert received(sock) == ["STOPPING=1\nSTATUS=handing over"]
    n.close()


def test_no_watchdog_means_no_pings_after_ready(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    clock = Clock()
    n = Notifier(path, watchdog=None, clock=clock)
    n.set_ready("backup")
    clock.t += 100
    n.tick(clock())
    assert received(sock) == ["READY=1\nSTATUS=backup"]
    assert n.due_in(clock()) == float("inf")
    n.close()


def test_a_gone_or_full_socket_never_fails_the_agent(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "nobody"), watchdog=0.5)
    assert n.send("READY=1") is False and n.dropped == 1
    n.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "full")
    sock.bind(path)
    try:
        n = Notifier(path)
        results = [n.send("WATCHDOG=1") for _ in range(5000)]  # nobody reads: it fills up
        assert results[0] and not results[-1] and n.dropped > 0
        n.close()
    finally:
        sock.close()
