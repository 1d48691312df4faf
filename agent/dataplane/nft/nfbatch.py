"""Raw nf_tables netlink batches: framing, ACKs and one socket to send them on.

libnftables reads the namespace's whole ruleset into its cache before any command that
adds or removes set elements (nft 1.0.6: even for a set of another table). With the data
plane holding 40,000 real servers that is 0.3-0.4 s per transaction, whatever its size.
Set elements of fixed shapes are therefore written as raw batches instead: the VIP
fence's licence (agent/vip/fence_netlink.py) and the data plane's reply guard and traffic
sets (elements.py). Builders here are pure; :class:`BatchWriter` sends.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence

from agent.dataplane.nft.netlink import NFT_MSG_NEWGEN, gen_id

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFPROTO_INET, NFPROTO_NETDEV = 1, 5
NLM_F_REQUEST, NLM_F_ACK, NLM_F_ECHO, NLM_F_CREATE = 0x1, 0x4, 0x8, 0x400
NLMSG_ERROR = 2
SO_SNDBUFFORCE = 32  # asm-generic/socket.h (CAP_NET_ADMIN: past net.core.wmem_max)
NLA_F_NESTED = 0x8000
# nf_tables.h attribute numbers
LIST_TABLE, LIST_SET, LIST_ELEMENTS = 1, 2, 3  # NFTA_SET_ELEM_LIST_*
LIST_ELEM = 1  # NFTA_LIST_ELEM
ELEM_KEY, ELEM_TIMEOUT = 1, 4  # NFTA_SET_ELEM_*
DATA_VALUE = 1  # NFTA_DATA_VALUE
#: Elements per message: a netlink message must stay well under the socket's buffers.
ELEMENTS_PER_MESSAGE = 1024
#: Bytes of elements per message: they go in one attribute, whose length is 16 bits (a
#: dispatch element naming its chain is about 90 bytes: 1024 of them do not fit).
ELEMENT_BYTES = 60_000

Message = tuple[int, int, int, bytes]  # (nft message type, flags, nfgen family, attributes)


def attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    if size > 0xFFFF:
        raise ValueError(f"netlink attribute {kind} of {size} bytes: at most 65,535")
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def message(kind: int, flags: int, seq: int, family: int, body: bytes = b"",
            res_id: int = 0) -> bytes:
    nfgen = struct.pack("=BBH", family, 0, socket.htons(res_id))
    return struct.pack("=IHHII", 16 + len(nfgen) + len(body), kind, flags, seq, 0) + nfgen + body


def element(key: bytes, extra: bytes = b"") -> bytes:
    """One set element: its key (and further attributes, e.g. a timeout)."""
    if not extra and len(key) % 4 == 0:  # the common case, 170,000 times a big plan
        head = _HEADS.get(len(key))
        if head is None:
            size = len(key)
            head = _HEADS[size] = struct.pack("=HHHHHH", 12 + size, LIST_ELEM | NLA_F_NESTED,
                                              8 + size, ELEM_KEY | NLA_F_NESTED,
                                              4 + size, DATA_VALUE)
        return head + key
    return attr(LIST_ELEM | NLA_F_NESTED,
                attr(ELEM_KEY | NLA_F_NESTED, attr(DATA_VALUE, key)) + extra)


_HEADS: dict[int, bytes] = {}  # key size -> the three attribute headers of its element


def elements_message(kind: int, family: int, table: str, set_name: str,
                     elements: Sequence[bytes] = ()) -> Message:
    """NEWSETELEM / DELSETELEM of ``elements`` (DELSETELEM of none: flush the set)."""
    flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if kind == NFT_MSG_NEWSETELEM else 0)
    body = attr(LIST_TABLE, table.encode() + b"\0") + attr(LIST_SET, set_name.encode() + b"\0")
    if elements:
        body += attr(LIST_ELEMENTS | NLA_F_NESTED, b"".join(elements))
    return (kind, flags, family, body)


def batch(messages: Sequence[Message], seq: int) -> tuple[bytes, list[int]]:
    """One atomic transaction of ``messages``, and the sequence numbers that must be ACKed."""
    subsys = NFNL_SUBSYS_NFTABLES << 8
    out = [message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, socket.AF_UNSPEC,
                   res_id=NFNL_SUBSYS_NFTABLES)]
    acked: list[int] = []
    for kind, flags, family, body in messages:
        seq += 1
        out.append(message(subsys | kind, flags, seq, family, body))
        if flags & NLM_F_ACK:
            acked.append(seq)
    out.append(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, socket.AF_UNSPEC,
                       res_id=NFNL_SUBSYS_NFTABLES))
    return b"".join(out), acked


def acks(data: bytes) -> dict[int, int]:
    """{sequence number: errno (0: done)} of the NLMSG_ERROR messages in ``data``."""
    return _read(data)[0]


def generation(data: bytes) -> int | None:
    """The generation a NEWGEN message in ``data`` announces (None: there is none)."""
    return _read(data)[1]


def _read(data: bytes) -> tuple[dict[int, int], int | None]:
    found: dict[int, int] = {}
    gen = None
    at = 0
    while at + 16 <= len(data):
        size, kind, _, seq, _ = struct.unpack_from("=IHHII", data, at)
        if size < 16:
            break
        if kind == NLMSG_ERROR and size >= 20:
            found[seq] = -struct.unpack_from("=i", data, at + 16)[0]
        elif kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
            gen = gen_id(data[at + 20:at + size])
        at += (size + 3) & ~3
    return found, gen


class BatchWriter:
    """Sends batches on one NETLINK_NETFILTER socket of this network namespace."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.settimeout(timeout)
        self._sndbuf = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        self._sock.bind((0, 0))
        self._seq = int.from_bytes(os.urandom(3), "big") << 4
        self.generation: int | None = None  # of the last batch sent with echo, if known

    def send(self, messages: Sequence[Message], *, echo: bool = False) -> str | None:
        """Carry out ``messages`` as one transaction; None on success, else the kernel's
        complaint (the first error: the kernel then takes none of the batch).

        ``echo``: the kernel echoes the messages and tells the generation its commit made
        (:attr:`generation`; for small batches: each message comes back)."""
        self.generation = None
        if not messages:
            return None
        if echo:
            messages = [(kind, flags | NLM_F_ECHO, family, body)
                        for kind, flags, family, body in messages]
        data, wanted = batch(messages, self._seq)
        self._seq = (self._seq + len(messages) + 2) & 0x7FFFFFFF
        try:
            if len(data) + 4096 > self._sndbuf:  # one batch is one send, so it must fit
                self._sndbuf = 2 * len(data) + 4096
                self._sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, self._sndbuf)
            self._sock.send(data)
            pending = set(wanted)
            while pending:
                found, gen = _read(self._sock.recv(1 << 20))
                if gen is not None:
                    self.generation = gen
                for seq, code in found.items():
                    if seq in pending and code:
                        return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
                    pending.discard(seq)
        except OSError as exc:  # timeouts included
            return f"netlink: {exc}"
        return None

    def close(self) -> None:
        self._sock.close()
