"""A netlink socket, or a sysctl, inside another network namespace (for tests and for
driving a namespace from outside). Sockets keep the namespace they were made in, and
``/proc/sys/net`` shows the namespace of the thread that opens it, so a short-lived thread
enters the namespace (setns changes only the calling thread), does the job and ends."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000


def netns_path(netns: str | None) -> str | None:
    """Path of a named (``ip netns add``) namespace, or the path given, or None."""
    if netns is None or "/" in netns:
        return netns
    return f"/run/netns/{netns}"


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """``fn()`` run in ``netns`` (a name or a path; None: ours, in this thread)."""
    path = netns_path(netns)
    if path is None:
        return fn()
    result: list[T | BaseException] = []

    def enter_and_run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=enter_and_run, name="netns")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]  # type: ignore[return-value]


def netlink_socket(protocol: int, netns: str | None = None) -> socket.socket:
    """A raw netlink socket of ``protocol``, in ``netns`` (a name or a path; None: ours)."""
    return in_netns(netns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol))


def ensure_sysctls(netns: str | None, wanted: Mapping[str, str]) -> dict[str, str]:
    """Set each sysctl (``net.ipv4.vs.sloppy_tcp``) of ``netns`` that differs from the value
    wanted; returns {name: value it had} for those it changed. OSError (FileNotFoundError:
    the kernel has no such setting here) for the first one it cannot read or write."""

    def converge() -> dict[str, str]:
        changed = {}
        for name, value in wanted.items():
            path = Path("/proc/sys", *name.split("."))
            old = path.read_text().strip()
            if old != value:
                path.write_text(value)
                changed[name] = old
        return changed

    return in_netns(netns, converge)
