"""The nf_tables ruleset generation of a network namespace, over a raw netlink socket.

The kernel bumps the generation with every committed nftables transaction, in any table.
Asking for it costs a netlink round trip (tens of microseconds), where listing a large table
costs a few hundred milliseconds; so ``read`` lists only when the generation moved.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import threading

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NFT_MSG_NEWGEN = 15
NFTA_GEN_ID = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
CLONE_NEWNET = 0x40000000


def netns_path(netns: str | None) -> str | None:
    """Path of a named (``ip netns add``) namespace, or the path given, or None."""
    if netns is None or "/" in netns:
        return netns
    return f"/run/netns/{netns}"


def _open_in(path: str | None) -> socket.socket:
    """A netfilter netlink socket in namespace ``path`` (None: ours).

    Sockets stay in the namespace they were made in, so a short-lived thread enters the
    namespace (setns changes only the calling thread), makes the socket and ends.
    """
    if path is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    result: list[socket.socket | BaseException] = []

    def enter_and_open() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER))
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=enter_and_open, name="nft-netns")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


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
                    return _gen_id(body[4:])

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _gen_id(attrs: bytes) -> int:
    offset = 0
    while offset + 4 <= len(attrs):
        length, atype = struct.unpack_from("=HH", attrs, offset)
        if length < 4:
            break
        if atype & 0x3FFF == NFTA_GEN_ID:
            return struct.unpack_from("!I", attrs, offset + 4)[0]
        offset += (length + 3) & ~3
    raise OSError(0, "GETGEN reply without a generation id")
