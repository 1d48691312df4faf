"""The fence's licence batch, byte by byte (agent/vip/fence_netlink.py, framed by
agent/dataplane/nft/nfbatch.py; the kernel's side is tests/test_vip_fence.py)."""

from __future__ import annotations

import socket
import struct

import pytest

from agent.dataplane.nft import nfbatch as nb
from agent.vip import fence_netlink as fn


def messages(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """(type, flags, seq, nfgen family, attributes) of each message in a batch."""
    out, at = [], 0
    while at < len(data):
        size, kind, flags, seq, _ = struct.unpack_from("=IHHII", data, at)
        assert size >= 20 and size % 4 == 0
        family = data[at + 16]
        out.append((kind, flags, seq, family, data[at + 20: at + size]))
        at += size
    assert at == len(data)
    return out


def attrs(data: bytes) -> list[tuple[int, bytes]]:
    out, at = [], 0
    while at < len(data):
        size, kind = struct.unpack_from("=HH", data, at)
        out.append((kind, data[at + 4: at + size]))
        at += (size + 3) & ~3
    return out


def test_a_licence_flushes_both_sets_then_adds_each_address_with_its_timeout():
    data, acked = fn.batch("piranha_fence", [("licensed4", ["10.0.0.2", "10.0.0.1"]),
                                             ("licensed6", ["2001:db8::1"])], 1500, 100)
    msgs = messages(data)
    kinds = [m[0] for m in msgs]
    nft = nb.NFNL_SUBSYS_NFTABLES << 8
    assert kinds == [nb.NFNL_MSG_BATCH_BEGIN, nft | nb.NFT_MSG_DELSETELEM,
                     nft | nb.NFT_MSG_DELSETELEM, nft | nb.NFT_MSG_NEWSETELEM,
                     nft | nb.NFT_MSG_NEWSETELEM, nb.NFNL_MSG_BATCH_END]
    assert [m[2] for m in msgs] == [100, 101, 102, 103, 104, 105]
    assert acked == [101, 102, 103, 104]  # every change is ACKed
    assert all(m[1] & nb.NLM_F_ACK for m in msgs[1:-1])
    assert all(m[3] == nb.NFPROTO_NETDEV for m in msgs[1:-1])
    flush = dict(attrs(msgs[1][4]))
    assert flush == {nb.LIST_TABLE: b"piranha_fence\0", nb.LIST_SET: b"licensed4\0"}
    add = dict(attrs(msgs[3][4]))
    elements = attrs(add[nb.LIST_ELEMENTS | nb.NLA_F_NESTED])
    got = []
    for _, element in elements:
        inner = dict(attrs(element))
        (_, key), = attrs(inner[nb.ELEM_KEY | nb.NLA_F_NESTED])
        got.append((socket.inet_ntoa(key), struct.unpack(">Q", inner[nb.ELEM_TIMEOUT])[0]))
    assert got == [("10.0.0.1", 1500), ("10.0.0.2", 1500)]  # sorted: one batch everywhere
    v6 = dict(attrs(msgs[4][4]))[nb.LIST_ELEMENTS | nb.NLA_F_NESTED]
    (_, element), = attrs(v6)
    (_, key), = attrs(dict(attrs(element))[nb.ELEM_KEY | nb.NLA_F_NESTED])
    assert socket.inet_ntop(socket.AF_INET6, key) == "2001:db8::1"


@pytest.mark.parametrize("ms", [0, -5])
def test_a_revocation_only_flushes(ms):
    data, acked = fn.batch("t", [("licensed4", ["10.0.0.1"]), ("licensed6", [])], ms, 7)
    kinds = [m[0] & 0xFF for m in messages(data)]
    assert kinds == [nb.NFNL_MSG_BATCH_BEGIN, nb.NFT_MSG_DELSETELEM, nb.NFT_MSG_DELSETELEM,
                     nb.NFNL_MSG_BATCH_END]
    assert acked == [8, 9]


def test_acks_read_errors_by_sequence_number():
    def error(seq: int, code: int) -> bytes:
        return struct.pack("=IHHII", 36, nb.NLMSG_ERROR, 0, seq, 0) + struct.pack("=i", code) \
            + b"\0" * 16

    data = error(5, 0) + error(6, -2) + b"\0\0"  # a torn tail is ignored
    assert nb.acks(data) == {5: 0, 6: 2}
    assert nb.acks(b"") == {}
    assert nb.acks(struct.pack("=IHHII", 8, 3, 0, 1, 0)) == {}  # a bad length stops
