"""Weighted Maglev hashing: the lookup table from slot to real server. Pure, no I/O.

Maglev (Eisenbud et al., NSDI 2016, section 3.4) gives every real server a permutation of
the table's slots (an offset and a skip, from a hash of the server's identity); the servers
take turns, each claiming its most preferred slot still free, until the table is full. A
flow is hashed to a slot; the slot names its server. The table is a function of its inputs
only, so every router that has the same inputs sends a flow to the same server:

- the **base**: the real servers the configuration defines, with their configured weights;
- the **live** weights: the servers that serve now and their weights (health, admin
  overrides, dynamic weights; a sorry server too);
- the table size (a prime, :func:`table_size`) and a 32-bit seed (the cluster's, from etcd).

Nothing local enters it: servers are taken in sorted order of their identities
(``"address:port"``), hashes are keyed BLAKE2b (never ``hash()``, which is randomised per
process), floats come only from correctly rounded IEEE operations, and no clock or dict
order is involved.

Two stages (docs/nftables-backend.md, "Maglev"):

1. The **base table**: Maglev over the base. Servers take turns in proportion to their
   weights (the next turn goes to the server whose ``(turns taken + 1) / weight`` is
   lowest, lowest identity on ties) and each stops at its exact share of the slots (largest
   remainder; a positive weight gets at least one slot). It changes only with the
   configuration.
2. The **live table**: a live server keeps the base slots it claimed first, as many as its
   live share asks for (at most all of them). The slots left over, those of servers that
   are down, drained or lighter than configured, are *orphans*: each one rehashes into the
   base table, as IPVS's mh-fallback rehashes a flow, and goes to the winner of a weighted
   rendezvous among the servers its rehashes name, at rates by what each is still owed.

So a server going down moves exactly its own slots and the orphans it held, and coming back
moves them back; a weight change moves the slots the new shares ask for. While every
configured server serves at its configured weight, the table is the base table and shares
are exact to a slot; with orphans, their spread is random (binomial), so shares are right
on average. Plain Maglev over the live servers keeps shares exact but moves other flows
too. Configuration changes re-make the base, and plain Maglev's disruption then applies:
it falls as the table grows per server (about 2.2 % of all flows beyond the necessary at
100 slots per server, 0.85 % at 400: docs/benchmarks.md, "Maglev"), hence
:data:`SLOTS_PER_SERVER`.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from cluster.mh_table import MAX_SERVERS as MAX_SERVERS  # re-exported: the table's sizes
from cluster.mh_table import SIZES as SIZES
from cluster.mh_table import SLOTS_PER_SERVER as SLOTS_PER_SERVER
from cluster.mh_table import table_size as table_size

SEED_BITS = 32
_PERSON = b"piranha-maglev"  # blake2b personalisations: these hashes are ours alone
_FALLBACK = b"piranha-mh-fb"
#: Slots of the base table an orphaned slot rehashes to (see ``_place``).
CANDIDATES = 8

Weights = Mapping[str, int]


def check_seed(seed: int) -> int:
    """``seed`` if it is a usable seed (``0 <= seed < 2**32``), else ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << SEED_BITS:
        raise ValueError(f"Maglev seed must be an integer 0..2**{SEED_BITS}-1, not {seed!r}")
    return seed


def preference(identity: str, size: int, seed: int) -> tuple[int, int]:
    """(offset, skip) of a server's permutation: slots ``offset + j * skip mod size``."""
    key = check_seed(seed).to_bytes(SEED_BITS // 8, "big")
    digest = hashlib.blake2b(identity.encode(), digest_size=16, key=key, person=_PERSON).digest()
    h1, h2 = int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")
    return h1 % size, h2 % (size - 1) + 1


def shares(weights: Sequence[int], size: int) -> list[int]:
    """Split ``size`` slots in proportion to ``weights`` (largest remainder, ties to the
    lower index). A positive weight too small to earn a slot gets one, from the largest."""
    result = [0] * len(weights)
    positive = [i for i, w in enumerate(weights) if w > 0]
    if not positive:
        return result
    if len(positive) > size:
        raise ValueError(f"{len(positive)} servers cannot share {size} slots")
    total = sum(weights[i] for i in positive)
    remainders = []
    for i in positive:
        result[i], r = divmod(weights[i] * size, total)
        remainders.append((-r, i))
    for _, i in sorted(remainders)[: size - sum(result)]:
        result[i] += 1
    for i in positive:
        if result[i] == 0:
            result[i] = 1
            result[max(positive, key=lambda j: (result[j], -j))] -= 1
    return result


def build(base: Weights, live: Weights, size: int, seed: int) -> tuple[str, ...]:
    """The lookup table: ``table[slot]`` is the identity of the slot's server.

    ``base``: identity -> configured weight; ``live``: identity -> weight now (absent or 0:
    no slot; a live server need not be in the base). Empty when no live weight is
    positive. ``size``: one of :data:`SIZES` or another prime > 2.
    """
    if size < 3 or not _is_prime(size):
        raise ValueError(f"Maglev table size must be a prime > 2, not {size}")
    check_seed(seed)
    return _build(_positive(base), _positive(live), size, seed)


def _positive(weights: Weights) -> tuple[tuple[str, int], ...]:
    out = []
    for identity, weight in sorted(weights.items()):
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ValueError(f"weight of {identity!r} must be a whole number >= 0: {weight!r}")
        if weight > 0:
            out.append((identity, weight))
    return tuple(out)


@functools.lru_cache(maxsize=32)
def _build(base: tuple[tuple[str, int], ...], live: tuple[tuple[str, int], ...],
           size: int, seed: int) -> tuple[str, ...]:
    if not live:
        return ()
    configured = dict(base)
    # A live server the configuration gives no weight (a sorry server) joins the base.
    everyone = {**dict(live), **configured}
    stage1 = _base_table(tuple(sorted(everyone.items())), size, seed)
    # Per server: its live share over its base share. It keeps that fraction of its base
    # slots (at most all, the first it claimed); what it is owed beyond, per base slot, is
    # its rate in the race for the orphans.
    grow = Fraction(sum(everyone.values()), sum(w for _, w in live))
    owner: list[str | None] = [None] * size
    rate = dict.fromkeys(stage1.names, 0.0)
    for name, weight in live:
        ratio = Fraction(weight, everyone[name]) * grow
        keep = min(ratio, Fraction(1))
        claims = stage1.claims[name]
        for slot in claims[: round(keep * len(claims))]:
            owner[slot] = name
        rate[name] = float(ratio - keep)
    orphans = [slot for slot, name in enumerate(owner) if name is None]
    if orphans:
        _place(orphans, owner, [rate[n] for n in stage1.names], live, stage1, seed)
    return tuple(owner)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Stage1:
    """The base table: each slot's server (an index into ``names``), and each server's slots
    in the order it claimed them."""

    names: tuple[str, ...]
    owner: tuple[int, ...]
    claims: dict[str, tuple[int, ...]]


@functools.lru_cache(maxsize=32)
def _base_table(base: tuple[tuple[str, int], ...], size: int, seed: int) -> _Stage1:
    owner = [-1] * size
    order = _fill(owner, [preference(n, size, seed) for n, _ in base],
                  shares([w for _, w in base], size))
    names = tuple(name for name, _ in base)
    return _Stage1(names, tuple(owner), {n: tuple(order[i]) for i, n in enumerate(names)})


def _place(orphans: list[int], owner: list[str | None], rate: list[float],
           live: tuple[tuple[str, int], ...], stage1: _Stage1, seed: int) -> None:
    """Give each orphaned slot to a live server, in proportion to what each is owed.

    As IPVS's mh-fallback does for a flow, an orphan rehashes to other slots of the base
    table, :data:`CANDIDATES` of them; each names a base server. The orphan goes to the
    winner of an exponential race among them at ``rate`` (what a server is owed per base
    slot; weighted rendezvous hashing): servers receive orphans in proportion to what they
    are owed, and where one orphan lands does not depend on the other orphans. So a server
    going down moves only its own slots and the orphans that had landed on it, and coming
    back moves them back. With no candidate owed anything (nearly every server down), the
    orphan takes more candidates, then a pick by live weight.
    """
    size = len(owner)
    key = seed.to_bytes(SEED_BITS // 8, "big")
    base_owner, names = stage1.owner, stage1.names
    rounds = 64 if any(rate) else 0
    total = sum(w for _, w in live)
    for slot in orphans:
        best, winner, block = math.inf, -1, 0
        while block < rounds and (winner < 0 or block * 8 < CANDIDATES):
            digest = hashlib.blake2b(slot.to_bytes(4, "big") + block.to_bytes(2, "big"),
                                     digest_size=64, key=key, person=_FALLBACK).digest()
            block += 1
            for k in range(0, 64, 8):
                at = base_owner[int.from_bytes(digest[k : k + 4], "big") % size]
                if rate[at]:
                    race = _exp(int.from_bytes(digest[k + 4 : k + 8], "big")) / rate[at]
                    if race < best:
                        best, winner = race, at
        if winner >= 0:
            owner[slot] = names[winner]
            continue
        digest = hashlib.blake2b(slot.to_bytes(4, "big"), digest_size=8, key=key,
                                 person=_FALLBACK).digest()
        point = int.from_bytes(digest, "big") * total >> 64
        for name, weight in live:
            point -= weight
            if point < 0:
                owner[slot] = name
                break


_LN2 = 0.6931471805599453


def _exp(x: int) -> float:
    """``-ln((x + 0.5) / 2**32)``: an exponential variate from 32 random bits, computed with
    IEEE additions, multiplications and divisions only (correctly rounded on every machine,
    unlike a libm ``log``), so every router gets the same value."""
    m, e = math.frexp((x + 0.5) / 4294967296.0)  # exact; m in [0.5, 1)
    z = (m - 1.0) / (m + 1.0)  # ln m = 2 atanh z, |z| <= 1/3: 12 terms reach 1e-12
    z2, term, total = z * z, z, 0.0
    for n in range(1, 25, 2):
        total += term / n
        term *= z2
    return -(e * _LN2 + 2.0 * total)


def _fill(owner: list[int], prefs: Sequence[tuple[int, int]],
          quota: Sequence[int]) -> list[list[int]]:
    """Maglev population of the free slots (``owner[slot] < 0``): server ``i`` takes
    ``quota[i]`` of them, in turns by quota, each its most preferred free slot. Fills
    ``owner`` in place; returns each server's slots in claim order. ``sum(quota)`` must
    equal the number of free slots."""
    size = len(owner)
    position = [offset for offset, _ in prefs]
    claimed: list[list[int]] = [[] for _ in prefs]
    # Turns: lowest (taken + 1) / quota first, the index breaking ties. A float division is
    # correctly rounded on every IEEE machine, so the order is the same everywhere; rounding
    # is monotonic, and distinct fractions with denominators and numerators below 2**23
    # differ by far more than a float's precision there: the order is the exact one.
    turns = [(1 / q, i) for i, q in enumerate(quota) if q > 0]
    heapq.heapify(turns)
    while turns:
        _, i = turns[0]
        pos, skip = position[i], prefs[i][1]
        while owner[pos] >= 0:
            pos += skip
            if pos >= size:
                pos -= size
        owner[pos] = i
        position[i] = pos
        mine = claimed[i]
        mine.append(pos)
        if len(mine) < quota[i]:
            heapq.heapreplace(turns, ((len(mine) + 1) / quota[i], i))
        else:
            heapq.heappop(turns)
    return claimed


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    f = 2
    while f * f <= n:
        if n % f == 0:
            return False
        f += 1
    return True


def slot_counts(table: Sequence[str]) -> dict[str, int]:
    """How many slots each server holds."""
    counts: dict[str, int] = {}
    for name in table:
        counts[name] = counts.get(name, 0) + 1
    return counts


def moved(before: Sequence[str], after: Sequence[str]) -> float:
    """Share of the slots whose server differs between two tables of one size (an empty
    table: every slot differs from a full one)."""
    if not before and not after:
        return 0.0
    if not before or not after:
        return 1.0
    if len(before) != len(after):
        raise ValueError(f"tables differ in size: {len(before)} and {len(after)}")
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(before)


def necessary(before: Sequence[str], after: Sequence[str]) -> float:
    """The least share of slots any change from ``before`` to ``after`` must move: half the
    sum of the changes of every server's share (what one server loses another gains)."""
    if not before or not after:
        return 1.0 if before or after else 0.0
    a, b = slot_counts(before), slot_counts(after)
    size = max(len(before), len(after), 1)
    return sum(abs(a.get(n, 0) - b.get(n, 0)) for n in a.keys() | b.keys()) / 2 / size
