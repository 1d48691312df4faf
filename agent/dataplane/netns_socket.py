"""A netlink socket inside another network namespace (for tests and for driving a
namespace from outside). Sockets keep the namespace they were made in, so a short-lived
thread enters the namespace (setns changes only the calling thread), makes it and ends."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000


def netns_path(netns: str | None) -> str | None:
    """Path of a named (``ip netns add``) namespace, or the path given, or None."""
    if netns is None or "/" in netns:
        return netns
    return f"/run/netns/{netns}"


def netlink_socket(protocol: int, netns: str | None = None) -> socket.socket:
    """A raw netlink socket of ``protocol``, in ``netns`` (a name or a path; None: ours)."""
    return in_netns(netns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol))


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """``fn()`` run inside ``netns`` (a name or a path; None: here), on a short-lived thread:
    what it opens (sockets, /proc/sys/net files) belongs to that namespace."""
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

    thread = threading.Thread(target=enter_and_run, name="netns-socket")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]
