"""The nf_tables ruleset generation of a network namespace, over a raw netlink socket.

The kernel bumps the generation with every committed nftables transaction, in any table.
Asking for it costs a netlink round trip (tens of microseconds), where listing a large table
costs a few hundred milliseconds; so ``read`` lists only when the generation moved.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator

from agent.dataplane.netns_socket import netlink_socket, netns_path

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NFT_MSG_NEWGEN = 15
NFTA_GEN_ID = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2


def _open_in(path: str | None) -> socket.socket:
    """A netfilter netlink socket in namespace ``path`` (None: ours)."""
    return netlink_socket(NETLINK_NETFILTER, path)


class Generation:
    """Reads the ruleset generation of one namespace; ``get()`` is None when it can't."""

    def __init__(self, netns: str | None = None) -> None:
        self._path = netns_path(netns)
        self._sock: socket.socket | None = None
        self._seq = 0

    def get(self) -> int | None:
        try:
            if self._sock is None:
                self._sock = _open_in(self._path)
                self._sock.settimeout(1.0)
                self._sock.bind((0, 0))
            return self._ask(self._sock)
        except OSError:
            self.close()
            return None

    def _ask(self, sock: socket.socket) -> int:
        self._seq += 1
        msg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
        request = struct.pack("=IHHII", 20, msg_type, NLM_F_REQUEST, self._seq, 0)
        sock.send(request + struct.pack("=BBH", socket.AF_UNSPEC, 0, 0))
        while True:
            reply = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(reply):
                length, rtype, _flags, seq, _pid = struct.unpack_from("=IHHII", reply, offset)
                body = reply[offset + 16 : offset + length]
                offset += (length + 3) & ~3
                if seq != self._seq or length < 16:
                    continue
                if rtype == NLMSG_ERROR:
                    errno = -struct.unpack_from("=i", body)[0]
                    raise OSError(errno, f"GETGEN: {os.strerror(errno)}")
                if rtype == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
                    gen = gen_id(body[4:])
                    if gen is None:
                        raise OSError(0, "GETGEN reply without a generation id")
                    return gen

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type without the nested/byte-order flags, payload) of each netlink attribute in
    ``data``; stops at a malformed one."""
    at = 0
    while at + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, at)
        if size < 4:
            return
        yield kind & 0x3FFF, data[at + 4:at + size]
        at += (size + 3) & ~3


def gen_id(data: bytes) -> int | None:
    """The generation in a NEWGEN message's attributes (after its nfgenmsg), if any."""
    for kind, payload in attrs(data):
        if kind == NFTA_GEN_ID and len(payload) >= 4:
            return struct.unpack_from("!I", payload)[0]
    return None


class Elsewhere:
    """Generations made by this process's commits to tables other than the data plane's
    (the VIP fence's licence renewals): the data plane's table did not change with them.

    At 40,000 real servers a listing of the data plane's table is seconds of CPU, and the
    active's fence moves the generation every few seconds: without this, the drift check
    listed the whole table after every renewal. A writer records the generation the
    kernel told it its commit made (:meth:`mark`), or else one it read ``before`` and
    ``after`` its commit with ``after == before + 1`` (:meth:`add`): then no other commit
    came in between. A foreign commit makes the reader list, as it should."""

    KEPT = 1024

    def __init__(self) -> None:
        self._gens: dict[int, None] = {}  # insertion-ordered: the oldest go first

    def add(self, before: int | None, after: int | None) -> None:
        if before is not None and after == before + 1:
            self.mark(after)

    def mark(self, gen: int) -> None:
        self._gens[gen] = None
        while len(self._gens) > self.KEPT:
            del self._gens[next(iter(self._gens))]

    def count(self, start: int, end: int) -> int:
        """How many generations in (start, end] are of such commits."""
        if end - start > self.KEPT:
            return 0
        return sum(1 for gen in range(start + 1, end + 1) if gen in self._gens)


_ELSEWHERE: dict[str | None, Elsewhere] = {}


def elsewhere(netns: str | None = None) -> Elsewhere:
    """The record of namespace ``netns`` (None: ours, where the agent's fence writes; each
    namespace counts its generations apart)."""
    found = _ELSEWHERE.get(netns)
    if found is None:
        found = _ELSEWHERE[netns] = Elsewhere()
    return found


def generation_now(netns: str | None = None) -> int | None:
    """The ruleset generation of ``netns`` (None: ours), read once."""
    gen = Generation(netns)
    try:
        return gen.get()
    finally:
        gen.close()


def ours_between(start: int, end: int, netns: str | None = None) -> int:
    """How many generations in (start, end] were this process's commits to other tables."""
    return elsewhere(netns).count(start, end)
