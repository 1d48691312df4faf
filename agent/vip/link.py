"""Raw AF_PACKET sockets for sending whole Ethernet frames, one per interface.

A socket belongs to the network namespace of the thread that creates it, so create links
from the agent running inside the router's namespace. Sending never blocks: a full device
queue is an error the caller counts, never a stall.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from .arp import mac_text

log = logging.getLogger(__name__)

ARPHRD_ETHER = 1


class LinkError(OSError):
    """An interface cannot be used for sending frames."""


@dataclass(frozen=True)
class RawLink:
    """A send-only packet socket bound to one Ethernet interface."""

    name: str
    sock: socket.socket
    mac: bytes
    ipv6_forwarding: bool  # the NA Router flag follows this (as keepalived does)

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def close(self) -> None:
        self.sock.close()

    def __str__(self) -> str:
        return f"{self.name} ({mac_text(self.mac)})"


def open_link(name: str) -> RawLink:
    """Open a packet socket on ``name`` and read its MAC; :class:`LinkError` if unusable."""
    # protocol 0: the socket receives nothing, it only sends
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    try:
        sock.bind((name, 0))
        sock.setblocking(False)
        _ifname, _proto, _pkttype, hatype, mac = sock.getsockname()
    except OSError as exc:
        sock.close()
        raise LinkError(
            exc.errno, f"cannot open a packet socket on {name!r}: {exc.strerror}"
        ) from exc
    if hatype != ARPHRD_ETHER or len(mac) != 6:
        sock.close()
        raise LinkError(0, f"interface {name!r} is not Ethernet (hardware type {hatype})")
    return RawLink(name, sock, bytes(mac), _ipv6_forwarding(name))


def _ipv6_forwarding(name: str) -> bool:
    # /proc/sys/net shows the namespace of the reader, which is ours
    try:
        return Path(f"/proc/sys/net/ipv6/conf/{name}/forwarding").read_text().strip() == "1"
    except OSError:
        return False


class Links:
    """Open :class:`RawLink` s by interface name, re-opened after an error."""

    def __init__(self) -> None:
        self._links: dict[str, RawLink] = {}

    def get(self, name: str) -> RawLink:
        link = self._links.get(name)
        if link is None:
            link = self._links[name] = open_link(name)
            log.debug("opened packet socket on %s", link)
        return link

    def drop(self, name: str) -> None:
        """Forget ``name`` (it may have gone or changed MAC); the next :meth:`get` re-opens."""
        link = self._links.pop(name, None)
        if link is not None:
            link.close()

    def close(self) -> None:
        for name in list(self._links):
            self.drop(name)
