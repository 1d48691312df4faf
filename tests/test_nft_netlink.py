"""Which ruleset generations were this process's commits to other tables (pure)."""

from __future__ import annotations


def test_elsewhere_counts_only_commits_known_to_be_alone():
    from agent.dataplane.nft.netlink import Elsewhere

    seen = Elsewhere()
    seen.add(10, 11)  # one commit between two reads: ours
    seen.add(11, 13)  # two: one of them someone else's, so neither counts
    seen.add(None, 14)
    seen.add(13, None)
    seen.add(14, 15)
    assert seen.count(10, 11) == 1 and seen.count(10, 15) == 2 and seen.count(11, 12) == 0
    for gen in range(20, 20 + 2 * Elsewhere.KEPT):
        seen.add(gen, gen + 1)
    assert seen.count(10, 11) == 0  # the oldest went
    assert seen.count(0, 10 * Elsewhere.KEPT) == 0  # too far apart to tell: list


def test_the_generation_a_commit_made_is_read_from_the_kernel_s_echo():
    """NEWGEN (echoed to a batch sent with NLM_F_ECHO) carries the generation; ACKs are
    read from the same data, and data without NEWGEN tells none."""
    import struct

    from agent.dataplane.nft import nfbatch

    def msg(kind: int, seq: int, body: bytes) -> bytes:
        return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body

    newgen = msg(10 << 8 | 15, 7, struct.pack("=BBH", 0, 0, 0)
                 + struct.pack("=HH", 8, 1) + (4242).to_bytes(4, "big")
                 + struct.pack("=HH", 8, 2) + (99).to_bytes(4, "big"))
    ack = msg(nfbatch.NLMSG_ERROR, 7, struct.pack("=i", 0) + b"\0" * 16)
    assert nfbatch.generation(newgen + ack) == 4242
    assert nfbatch.acks(newgen + ack) == {7: 0}
    assert nfbatch.generation(ack) is None
