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


def test_messages_are_cut_by_size_too_a_dispatch_element_names_its_chain():
    """2,500 new services at once: their dispatch elements (a chain name each, about 90
    bytes) do not fit 1,024 to a message: the element list is one netlink attribute, and an
    attribute's length is 16 bits. They were all sent as 1,024, and the whole apply failed."""
    from agent.dataplane.nft import rules
    from agent.dataplane.table import ServiceKey

    keys = [ServiceKey("tcp", "10.197.0.100", 10000 + i) for i in range(2500)]
    cmds = rules.add_dispatch(rules.Config(), keys)
    _, ours = elements.split(rules.Config().table, cmds)
    msgs = elements.messages(rules.Config().table, ours)
    assert len(msgs) > 3
    for _, _, _, body in msgs:
        assert len(body) < 0x10000
    sizes = [body.count(b"svc4_tcp_10_197_0_100_") for _, _, _, body in msgs]
    assert sum(sizes) == 2500
    with pytest.raises(ValueError, match="at most 65,535"):
        nfbatch.attr(1, bytes(0x10000))
