"""The licence writes of the fence as one raw nf_tables netlink batch, without libnftables.

libnftables reads the kernel's whole ruleset into its cache before a command that flushes a
set, and again whenever the ruleset's generation moved (every data-plane change does): with
the nftables data plane holding 40,000 real servers, that listing took 380 ms per licence
renewal, on the agent's event loop. The licence needs two fixed messages, so we send them
ourselves (docs/benchmarks.md, "VIP fence"):

    BATCH_BEGIN
    DELSETELEM <table> licensed4             (no elements: flush the set)
    DELSETELEM <table> licensed6
    NEWSETELEM <table> licensed4 {ip timeout ms, ...}   (if any)
    NEWSETELEM <table> licensed6 {ip timeout ms, ...}   (if any)
    BATCH_END

one atomic transaction, as ``nft -f`` would make it; every message asks for an ACK and the
first error fails the write. :func:`batch` is pure (tested byte for byte against what the
kernel accepts); :class:`NetlinkWriter` sends it.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from ipaddress import ip_address

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFPROTO_NETDEV = 5
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE = 0x1, 0x4, 0x400
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
# nf_tables.h attribute numbers
LIST_TABLE, LIST_SET, LIST_ELEMENTS = 1, 2, 3  # NFTA_SET_ELEM_LIST_*
LIST_ELEM = 1  # NFTA_LIST_ELEM
ELEM_KEY, ELEM_TIMEOUT = 1, 4  # NFTA_SET_ELEM_*
DATA_VALUE = 1  # NFTA_DATA_VALUE

Licence = tuple[str, Sequence[str]]  # (set name, addresses licensed in it)


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _message(kind: int, flags: int, seq: int, family: int, body: bytes = b"",
             res_id: int = 0) -> bytes:
    nfgen = struct.pack("=BBH", family, 0, socket.htons(res_id))
    return struct.pack("=IHHII", 16 + len(nfgen) + len(body), kind, flags, seq, 0) + nfgen + body


def _element(address: str, ms: int) -> bytes:
    key = _attr(ELEM_KEY | NLA_F_NESTED, _attr(DATA_VALUE, ip_address(address).packed))
    return _attr(LIST_ELEM | NLA_F_NESTED, key + _attr(ELEM_TIMEOUT, struct.pack(">Q", ms)))


def batch(table: str, sets: Iterable[Licence], ms: int, seq: int) -> tuple[bytes, list[int]]:
    """The batch that flushes each set and adds its addresses with a timeout of ``ms``
    milliseconds (none if ``ms <= 0``), and the sequence numbers that must be ACKed."""
    sets = list(sets)
    name = _attr(LIST_TABLE, table.encode() + b"\0")
    subsys = NFNL_SUBSYS_NFTABLES << 8
    out = [_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, socket.AF_UNSPEC,
                    res_id=NFNL_SUBSYS_NFTABLES)]
    acked: list[int] = []
    for set_name, _ in sets:
        seq += 1
        out.append(_message(subsys | NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, seq,
                            NFPROTO_NETDEV, name + _attr(LIST_SET, set_name.encode() + b"\0")))
        acked.append(seq)
    for set_name, addresses in sets:
        if ms <= 0 or not addresses:
            continue
        seq += 1
        elements = b"".join(_element(a, ms) for a in sorted(addresses))
        out.append(_message(subsys | NFT_MSG_NEWSETELEM,
                            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, seq, NFPROTO_NETDEV,
                            name + _attr(LIST_SET, set_name.encode() + b"\0")
                            + _attr(LIST_ELEMENTS | NLA_F_NESTED, elements)))
        acked.append(seq)
    out.append(_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, socket.AF_UNSPEC,
                        res_id=NFNL_SUBSYS_NFTABLES))
    return b"".join(out), acked


def acks(data: bytes) -> dict[int, int]:
    """{sequence number: errno (0: done)} of the NLMSG_ERROR messages in ``data``."""
    found: dict[int, int] = {}
    at = 0
    while at + 16 <= len(data):
        size, kind, _, seq, _ = struct.unpack_from("=IHHII", data, at)
        if size < 16:
            break
        if kind == NLMSG_ERROR and size >= 20:
            found[seq] = -struct.unpack_from("=i", data, at + 16)[0]
        at += (size + 3) & ~3
    return found


class NetlinkWriter:
    """Sends licence batches on one NETLINK_NETFILTER socket of this network namespace."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.settimeout(timeout)
        self._sock.bind((0, 0))
        self._seq = int.from_bytes(os.urandom(3), "big") << 4

    def write(self, table: str, sets: Iterable[Licence], ms: int) -> str | None:
        """Carry out one licence batch; None on success, else the kernel's complaint."""
        data, wanted = batch(table, sets, ms, self._seq)
        self._seq = (self._seq + len(wanted) + 2) & 0x7FFFFFFF
        try:
            self._sock.send(data)
            pending = set(wanted)
            while pending:
                for seq, code in acks(self._sock.recv(65536)).items():
                    if seq in pending and code:
                        return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
                    pending.discard(seq)
        except OSError as exc:  # timeouts included
            return f"netlink: {exc}"
        return None

    def close(self) -> None:
        self._sock.close()
