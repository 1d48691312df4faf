"""Guard and traffic set elements as raw netlink (agent/dataplane/nft/elements.py; the
kernel's side: test_nft_backend.py)."""

from __future__ import annotations

import sys

import pytest

from agent.dataplane.nft import elements, guard, nfbatch, traffic


def test_keys_are_fields_in_network_order_each_padded_to_four_bytes():
    assert elements.key("rs4", {"concat": ["10.0.0.1", 8080]}) == \
        bytes([10, 0, 0, 1, 0x1F, 0x90, 0, 0])
    state = (2).to_bytes(4, sys.byteorder)  # ct_state established: host order
    assert elements.key("tv4", {"concat": ["10.0.0.1", "udp", 53, "reply", "established"]}) \
        == bytes([10, 0, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0, 1, 0, 0, 0]) + state
    six = elements.key("ti6", {"concat": ["2001:db8::1", "tcp", 80, "2001:db8::2", 8080]})
    assert len(six) == 16 + 4 + 4 + 16 + 4
    with pytest.raises(ValueError, match="fields"):
        elements.key("rs4", {"concat": ["10.0.0.1"]})


def test_split_takes_only_our_sets_element_commands_of_our_table():
    cmds = [{"add": {"chain": {"family": "inet", "table": "t", "name": "c"}}},
            *guard.commands("t", None, frozenset({(4, "10.0.0.1", 80)})),
            {"add": {"element": {"family": "inet", "table": "t", "name": "tcp4",
                                 "elem": ["x"]}}},
            {"add": {"element": {"family": "inet", "table": "other", "name": "rs4",
                                 "elem": ["x"]}}},
            *traffic.commands("t", frozenset({("v", 4, "10.0.0.9", "tcp", 80)}), frozenset())]
    rest, ours = elements.split("t", cmds)
    assert [c for c in cmds if c not in ours] == rest and len(rest) == 3
    assert [next(iter(c)) for c in ours] == ["flush", "add", "flush", "delete"]
    msgs = elements.messages("t", ours)
    kinds = [m[0] for m in msgs]
    assert kinds == [nfbatch.NFT_MSG_DELSETELEM, nfbatch.NFT_MSG_NEWSETELEM,
                     nfbatch.NFT_MSG_DELSETELEM, nfbatch.NFT_MSG_DELSETELEM]
    assert all(m[2] == nfbatch.NFPROTO_INET for m in msgs)


def test_big_element_lists_are_cut_into_messages():
    many = frozenset((4, f"10.0.{i // 250}.{i % 250}", 80) for i in range(2500))
    _, ours = elements.split("t", guard.commands("t", frozenset(), many))
    msgs = elements.messages("t", ours)
    assert len(msgs) == 3  # 1024 + 1024 + 452
