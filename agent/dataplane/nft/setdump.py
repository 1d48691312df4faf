"""The elements of one nftables set and their counters, dumped over raw netlink.

`nft list set` (libnftables) reads the ruleset's cache first, and starts its listing again
whenever the ruleset's generation moves: at 100,000 real servers the traffic sets hold
400,000 elements and the VIP fence's renewals kept the listing from ever finishing; at
40,000 one listing took a child process 230 MB. A dump (``NFT_MSG_GETSETELEM`` with
``NLM_F_DUMP``) reads one set and nothing else. If a commit lands during it the kernel
marks the dump interrupted (``NLM_F_DUMP_INTR``) and it is read again, a few times at
most; after that what was read is used (counters, not state: an element missed is one
scrape without it). Parsing is pure; :func:`dump` does the I/O.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

from agent.dataplane.netns_socket import netlink_socket
from agent.dataplane.nft import nfbatch
from agent.dataplane.nft.netlink import attrs

NFT_MSG_GETSETELEM = 13
NFT_MSG_NEWSETELEM = 12
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLM_F_DUMP_INTR = 0x10
NLMSG_ERROR, NLMSG_DONE = 2, 3
ELEM_EXPR, ELEM_EXPRESSIONS = 7, 11  # NFTA_SET_ELEM_*
EXPR_NAME, EXPR_DATA = 1, 2  # NFTA_EXPR_*
COUNTER_BYTES, COUNTER_PACKETS = 1, 2  # NFTA_COUNTER_*
TRIES = 3  # dumps of one set while commits keep interrupting it
BUFFER = 1 << 20

Element = tuple[bytes, int | None, int | None]  # (key, packets, bytes); None: no counter


class DumpError(OSError):
    """The kernel refused the dump (no such set: errno ENOENT)."""


def request(table: str, set_name: str, seq: int, family: int = nfbatch.NFPROTO_INET) -> bytes:
    """The dump request for the elements of ``set_name`` in ``table``."""
    body = (nfbatch.attr(nfbatch.LIST_TABLE, table.encode() + b"\0")
            + nfbatch.attr(nfbatch.LIST_SET, set_name.encode() + b"\0"))
    kind = (nfbatch.NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM
    return nfbatch.message(kind, nfbatch.NLM_F_REQUEST | NLM_F_DUMP, seq, family, body)


def _counter(expr: bytes) -> tuple[int, int] | None:
    """(packets, bytes) of one expression, if it is a counter."""
    fields = dict(attrs(expr))
    if fields.get(EXPR_NAME, b"").rstrip(b"\0") != b"counter":
        return None
    data = dict(attrs(fields.get(EXPR_DATA, b"")))
    try:
        return (struct.unpack("!Q", data[COUNTER_PACKETS])[0],
                struct.unpack("!Q", data[COUNTER_BYTES])[0])
    except (KeyError, struct.error):
        return None


def element(payload: bytes) -> Element | None:
    """One ``NFTA_LIST_ELEM``: its key and counter (None: no key)."""
    key: bytes | None = None
    counted: tuple[int, int] | None = None
    for kind, value in attrs(payload):
        if kind == nfbatch.ELEM_KEY:
            key = dict(attrs(value)).get(nfbatch.DATA_VALUE)
        elif kind == ELEM_EXPR:
            counted = _counter(value)
        elif kind == ELEM_EXPRESSIONS:
            for _, expr in attrs(value):
                counted = counted or _counter(expr)
    if key is None:
        return None
    return (key, *counted) if counted is not None else (key, None, None)


def parse(data: bytes, seq: int) -> tuple[list[Element], bool, bool]:
    """The elements in the replies ``data`` to request ``seq``: (elements, done, the dump
    was interrupted). :class:`DumpError` if the kernel refused it."""
    found: list[Element] = []
    done = interrupted = False
    at = 0
    while at + 16 <= len(data):
        size, kind, flags, got, _ = struct.unpack_from("=IHHII", data, at)
        if size < 16:
            break
        body = data[at + 16:at + size]
        at += (size + 3) & ~3
        if got != seq:
            continue
        interrupted = interrupted or bool(flags & NLM_F_DUMP_INTR)
        if kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", body)[0]
            if code:
                raise DumpError(code, os.strerror(code))
            done = True
        elif kind == (nfbatch.NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM:
            for attr_kind, value in attrs(body[4:]):  # after the nfgenmsg
                if attr_kind != nfbatch.LIST_ELEMENTS:
                    continue
                for _, payload in attrs(value):
                    elem = element(payload)
                    if elem is not None:
                        found.append(elem)
    return found, done, interrupted


def dump(sock: socket.socket, table: str, set_name: str, seq: int = 1) -> list[Element]:
    """Every element of the set, read whole (dumped again if a commit interrupted it,
    :data:`TRIES` times at most). :class:`DumpError` (ENOENT) if there is no such set."""
    found: list[Element] = []
    for _ in range(TRIES):
        seq += 1
        sock.send(request(table, set_name, seq))
        found = []
        done = interrupted = False
        while not done:
            elems, done, cut = parse(sock.recv(BUFFER), seq)
            found += elems
            interrupted = interrupted or cut
        if not interrupted:
            break
    return found


def open_socket() -> socket.socket:
    """A netfilter netlink socket of this namespace, with room for big dump replies."""
    sock = netlink_socket(nfbatch.NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        sock.settimeout(10.0)
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


# -- keys back to values -----------------------------------------------------------------

_PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", 132: "sctp"}
_DIRS = {0: "original", 1: "reply"}
_STATES = {1: "invalid", 2: "established", 4: "related", 8: "new", 64: "untracked"}


def fields(key: bytes, shape: tuple[str, ...], family: int) -> tuple[object, ...]:
    """A concatenated key's fields, as nft lists them (the inverse of elements.key for
    the traffic and guard sets): addresses as text, protocols and ct values by name,
    ports as numbers. ValueError if ``key`` is not of that shape."""
    width = 4 if family == 4 else 16
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    out: list[object] = []
    at = 0
    for kind in shape:
        size = width if kind == "addr" else 4
        part = key[at:at + size]
        if len(part) != size:
            raise ValueError(f"key of {len(key)} bytes: too short for {shape}")
        at += size
        if kind == "addr":
            out.append(socket.inet_ntop(af, part))
        elif kind == "port":
            out.append(struct.unpack_from("!H", part)[0])
        elif kind == "proto":
            out.append(_PROTOCOLS.get(part[0], part[0]))
        elif kind == "dir":
            out.append(_DIRS.get(part[0], part[0]))
        elif kind == "state":
            state = int.from_bytes(part, sys.byteorder)
            out.append(_STATES.get(state, state))
        else:
            raise ValueError(f"unknown field kind {kind!r}")
    if at != len(key):
        raise ValueError(f"key of {len(key)} bytes: too long for {shape}")
    return tuple(out)
