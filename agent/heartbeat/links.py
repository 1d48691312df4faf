"""UDP sockets of the heartbeat: one bound to each local address, never to a wildcard."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence

TOS_CS6 = 0xC0  # DSCP CS6 "network control": heartbeats should win over bulk traffic


class BindError(OSError):
    """A heartbeat socket could not be bound; the message names the address and why."""


def family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def open_sockets(addresses: Sequence[str], port: int) -> dict[str, socket.socket]:
    """Bind one non-blocking UDP socket to each of ``addresses`` on ``port``.

    All or nothing: on failure the sockets already opened are closed and
    :class:`BindError` explains which address failed.
    """
    socks: dict[str, socket.socket] = {}
    try:
        for address in addresses:
            socks[address] = _bind(address, port)
    except BaseException:
        for s in socks.values():
            s.close()
        raise
    return socks


def _bind(address: str, port: int) -> socket.socket:
    family = family_of(address)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        try:
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TOS_CS6)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, TOS_CS6)
        except OSError:
            pass  # only a priority hint
        sock.bind((address, port))
    except OSError as e:
        sock.close()
        hint = {
            errno.EADDRNOTAVAIL: "is the address configured on this host?",
            errno.EADDRINUSE: "is another pulse (or something else) already using it?",
            errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
        }.get(e.errno or 0, "")
        raise BindError(
            e.errno, f"cannot bind heartbeat socket to {address} port {port}: {e.strerror}. {hint}"
        ) from None
    return sock


def route_source(destination: str, port: int) -> str | None:
    """The source address the kernel would use to reach ``destination`` (no packet sent).

    Raises OSError (e.g. ENETUNREACH) when there is no route.
    """
    with socket.socket(family_of(destination), socket.SOCK_DGRAM) as probe:
        probe.connect((destination, port))
        return str(probe.getsockname()[0])


def pick_source(destination: str, port: int, local: Sequence[str], link: int) -> str:
    """Which of our ``local`` addresses to send from to reach ``destination``.

    The kernel's choice if it is one of ours (so the packet leaves on the right link with
    a matching source, which strict reverse-path filters need); otherwise the local address
    at the same position ``link`` as the destination in the peer's list, of the same family.
    Raises OSError if there is no route to ``destination``.
    """
    chosen = route_source(destination, port)
    if chosen in local:
        return chosen
    family = family_of(destination)
    same = [a for a in local if family_of(a) == family]
    return same[link % len(same)]
