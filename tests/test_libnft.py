"""libnftables in-process: a context that ran a big command is replaced after it (its
cache of the ruleset, every element it read, would stay resident until the next command:
about 70 MB at 40,000 real servers), and the new context works as the old one did."""

from __future__ import annotations

import json

import pytest
from support import netlab

from agent.dataplane.nft.libnft import RENEW_AFTER

pytestmark = pytest.mark.netns


def big_map(n: int) -> str:
    """A transaction of one map with ``n`` elements (text, as `nft -f` takes)."""
    elements = ", ".join(f"10.{i // 250 % 250}.{i % 250}.1 . {1000 + i % 60000} : accept"
                         for i in range(n))
    return ("table inet libnft_t {\n map m { type ipv4_addr . inet_service : verdict; "
            f"elements = {{ {elements} }} }}\n}}\n")


def scenario(n: int) -> dict[str, object]:
    """Run in the namespace: a small command, a big one, a listing, what each left."""
    from agent.dataplane.nft.libnft import LibNft

    lib = LibNft.load()
    assert lib is not None
    out: dict[str, object] = {}
    rc, _, err = lib.run("add table inet libnft_small")
    out["small"] = (rc, lib.renewed)
    text = big_map(n)
    rc, _, err = lib.run(text)
    out["big"] = (rc, lib.renewed, len(text), err)
    rc, listed, err = lib.run("list map inet libnft_t m")
    elems = [i["map"]["elem"] for i in json.loads(listed)["nftables"] if "map" in i]
    out["listed"] = (rc, lib.renewed, len(elems[0]) if elems else 0, len(listed))
    rc, _, err = lib.run("add element inet libnft_t m { 10.99.0.1 . 80 : drop }")
    out["after"] = (rc, lib.renewed, err)
    lib.close()
    return out


async def test_a_big_command_renews_the_context_and_the_next_one_works() -> None:
    with netlab.Lab("lnft") as lab:
        lab.add_ns("r")
        got = await lab.call("r", "test_libnft:scenario", 4000)
    assert tuple(got["small"]) == (0, 0)  # small: the context (and its cache) is kept
    rc, renewed, size, err = got["big"]
    assert size > RENEW_AFTER and (rc, renewed, err) == (0, 1, "")
    rc, renewed, elements, size = got["listed"]
    assert (rc, elements) == (0, 4000) and size > RENEW_AFTER and renewed == 2  # a big answer
    assert tuple(got["after"]) == (0, 2, "")  # the new context writes


def resident_mb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 >> 20


def left_resident(n: int) -> tuple[int, int]:
    """Run in the namespace: MB resident before, and after a big transaction and three
    listings of it (each freeing a context whose cache holds every element), then the
    C heap given back."""
    from agent.dataplane.nft.libnft import LibNft

    lib = LibNft.load()
    assert lib is not None
    before = resident_mb()
    assert lib.run(big_map(n))[0] == 0
    for _ in range(3):
        assert lib.run("list map inet libnft_t m")[0] == 0
    assert lib.give_back() and not lib.give_back()  # once, then nothing to give back
    after = resident_mb()
    lib.close()
    return before, after


async def test_the_freed_cache_goes_back_to_the_system() -> None:
    # Measured with 40,000 elements: 33 -> 39 MB; without the C heap handed back after
    # the context is freed, 33 -> 116 MB (glibc keeps the freed pages).
    with netlab.Lab("lnfr") as lab:
        lab.add_ns("r")
        before, after = await lab.call("r", "test_libnft:left_resident", 40000)
    assert after - before < 30, (before, after)
