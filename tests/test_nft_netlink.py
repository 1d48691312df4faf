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
