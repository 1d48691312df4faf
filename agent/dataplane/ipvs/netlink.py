"""A blocking generic-netlink socket: family lookup, requests, dumps and batches.

Batches put many requests in one ``send``: the kernel handles them in order in that call
and answers only failures, plus an acknowledgement of the last request of each chunk, so
10,000 changes cost a few dozen system calls. Not thread-safe: one owner thread.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence

from agent.dataplane.ipvs import codec as c
from agent.dataplane.netns_socket import netlink_socket

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors carry only the header of the failed request
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32
CHUNK_MESSAGES = 256  # failures of one chunk must fit in the receive buffer
CHUNK_BYTES = 128 * 1024  # below the send buffer
BUFFER = 4 * 1024 * 1024
RECV_SIZE = 64 * 1024  # netlink dump datagrams are at most 32 KiB


class FamilyNotFound(LookupError):
    """The kernel has no such generic-netlink family (module not loaded or not built)."""


def open_socket(netns: str | None = None) -> socket.socket:
    """A NETLINK_GENERIC socket, created inside ``netns`` (a name or a path) if given."""
    return netlink_socket(NETLINK_GENERIC, netns)


class GenlSocket:
    """One generic-netlink socket bound to a family (resolved at construction)."""

    def __init__(self, family_name: str, netns: str | None = None) -> None:
        self.sock = open_socket(netns)
        self._seq = 0
        self.broken = False  # a transport error happened: replace this socket
        self.lost_from: int | None = None
        self.family = c.GENL_ID_CTRL
        try:
            self._tune()
            self.sock.bind((0, 0))
            replies = self.request(*c.family_request(family_name))
        except OSError as exc:
            self.sock.close()
            if exc.errno == errno.ENOENT:
                raise FamilyNotFound(f"no generic netlink family {family_name!r}") from None
            raise
        self.family = c.get_u16(replies[0], c.CTRL_ATTR_FAMILY_ID)

    def _tune(self) -> None:
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF),
                             (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, force, BUFFER)
            except OSError:  # not root: the kernel caps the plain option at *mem_max
                self.sock.setsockopt(socket.SOL_SOCKET, plain, BUFFER)

    def close(self) -> None:
        self.sock.close()

    def _next_seq(self, count: int = 1) -> int:
        first = self._seq + 1
        self._seq += count
        return first

    def _recv(self) -> bytes:
        data = self.sock.recv(RECV_SIZE, socket.MSG_TRUNC)
        if len(data) > RECV_SIZE:
            raise OSError(errno.EMSGSIZE, "netlink datagram larger than the receive buffer")
        return data

    def request(self, cmd: int, payload: bytes) -> list[dict[int, bytes]]:
        """Send one request; return the attributes of its replies (raises OSError)."""
        return self._exchange(cmd, payload, c.NLM_F_ACK)

    def dump(self, cmd: int, payload: bytes) -> list[dict[int, bytes]]:
        """Run a dump request; return the attributes of every reply (raises OSError)."""
        return self._exchange(cmd, payload, c.NLM_F_DUMP)

    def _exchange(self, cmd: int, payload: bytes, flag: int) -> list[dict[int, bytes]]:
        """A request ends with its acknowledgement, a dump with NLMSG_DONE."""
        seq = self._next_seq()
        self.sock.send(c.message(self.family, c.NLM_F_REQUEST | flag, seq, cmd, payload))
        replies: list[dict[int, bytes]] = []
        while True:
            for kind, _flags, mseq, body in c.iter_messages(self._recv()):
                if mseq != seq:
                    continue
                if kind == c.NLMSG_DONE:
                    return replies
                if kind == c.NLMSG_ERROR:
                    code = c.error_code(body)
                    if code:
                        raise OSError(code, os.strerror(code))
                    return replies  # the acknowledgement of a request
                replies.append(c.genl_attrs(body))

    def batch(self, requests: Sequence[tuple[int, bytes]]) -> list[int]:
        """Send every (cmd, payload) in order; return the errno of each (0 = done).

        A transport failure (the socket itself) marks the rest of the batch with its
        errno, sets :attr:`broken` and :attr:`lost_from` (the first request whose outcome
        is unknown): read the kernel again.
        """
        self.lost_from = None
        results = [0] * len(requests)
        start = 0
        while start < len(requests):
            end, size = start, 0
            while end < len(requests) and end - start < CHUNK_MESSAGES and size < CHUNK_BYTES:
                size += len(requests[end][1]) + 20
                end += 1
            try:
                self._send_chunk(requests, start, end, results)
            except OSError as exc:
                self.broken = True
                self.lost_from = start
                code = exc.errno or errno.EIO
                results[start:] = [code] * (len(requests) - start)
                return results
            start = end
        return results

    def _send_chunk(
        self, requests: Sequence[tuple[int, bytes]], start: int, end: int, results: list[int]
    ) -> None:
        first = self._next_seq(end - start)
        last = first + end - start - 1
        parts = []
        for i in range(start, end):
            flags = c.NLM_F_REQUEST | (c.NLM_F_ACK if i == end - 1 else 0)
            cmd, payload = requests[i]
            parts.append(c.message(self.family, flags, first + i - start, cmd, payload))
        self.sock.send(b"".join(parts))
        while True:
            for kind, _flags, seq, body in c.iter_messages(self._recv()):
                if kind != c.NLMSG_ERROR or not first <= seq <= last:
                    continue
                results[start + seq - first] = c.error_code(body)
                if seq == last:
                    return
