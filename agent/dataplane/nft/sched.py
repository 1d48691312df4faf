"""Which nftables selector stands in for each IPVS scheduler, and what is lost on the way.

nftables can pick a real server per new connection by a random number (``numgen random``)
or by a hash of the source or destination address (``jhash``); the chosen value is looked
up in ranges sized by weight, or for ``mh`` in a Maglev table. Connection-counting
schedulers (lc, wlc, sed, nq, ...) have no counterpart: they fall back to the nearest
selector and say so in a warning that names the scheduler. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from agent.dataplane.table import DestKey, DestSpec, ServiceKey, ServiceSpec

Hash = Literal["random", "saddr", "daddr"]
Shares = Literal["weighted", "equal", "highest"]


@dataclass(frozen=True)
class Selector:
    """How a service picks a real server: what is hashed and how weights become shares."""

    hash: Hash
    shares: Shares  # weighted: by weight; equal: every live server alike; highest: one gets all
    warnings: tuple[str, ...] = ()
    sport: bool = False  # the source port is hashed too (mh-port)
    maglev: bool = False  # the hash indexes a Maglev table (mh), not ranges sized by weight


# Schedulers nftables expresses with the same meaning (only the hash function differs).
_NATIVE: dict[str, tuple[Hash, Shares]] = {
    "rr": ("random", "equal"),
    "wrr": ("random", "weighted"),
    "sh": ("saddr", "weighted"),
    "dh": ("daddr", "equal"),  # IPVS dh ignores weights other than 0
    "fo": ("random", "highest"),
    "mh": ("saddr", "weighted"),  # a Maglev table (agent/dataplane/maglev.py)
}

# Schedulers that need connection counts or lookup tables: the nearest selector, and why.
_FALLBACK: dict[str, tuple[Hash, Shares, str]] = {
    "lc": ("random", "equal", "random choice (no connection counts in nftables)"),
    "wlc": ("random", "weighted", "weighted random (no connection counts in nftables)"),
    "sed": ("random", "weighted", "weighted random (no connection counts in nftables)"),
    "nq": ("random", "weighted", "weighted random (no connection counts in nftables)"),
    "ovf": ("random", "highest", "highest weight only, like fo (no overflow counts)"),
    "lblc": ("daddr", "weighted", "weighted destination hash (no locality tables)"),
    "lblcr": ("daddr", "weighted", "weighted destination hash (no locality tables)"),
}

#: mh's flags: mh-port (hash the source port too) and mh-fallback (always in effect: the
#: table holds only servers that take connections; docs/nftables-backend.md, "Maglev").
MH_FLAGS = frozenset({"mh-fallback", "mh-port"})

HOST_MASKS = frozenset(
    {"255.255.255.255", "128", "/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}
)


def selector(spec: ServiceSpec) -> Selector:
    """The selector for ``spec``, with warnings for anything IPVS would do differently."""
    warnings: list[str] = []
    if spec.scheduler in _NATIVE:
        hash_, shares = _NATIVE[spec.scheduler]
    elif spec.scheduler in _FALLBACK:
        hash_, shares, nearest = _FALLBACK[spec.scheduler]
        warnings.append(f"scheduler {spec.scheduler!r} not available in nftables: {nearest}")
    else:
        hash_, shares = "random", "weighted"
        warnings.append(f"scheduler {spec.scheduler!r} unknown: using weighted random")
    maglev = spec.scheduler == "mh"
    sport = maglev and "mh-port" in spec.flags
    for flag in sorted(spec.flags - MH_FLAGS if maglev else spec.flags):
        warnings.append(f"scheduler flag {flag!r} not supported by nftables: ignored")
    if spec.persistent > 0:
        hash_ = "saddr"
        warnings.append(
            f"persistence {spec.persistent}s emulated by source-address hashing: "
            "no timeout, clients move when real servers or weights change"
        )
        if sport:
            sport = False
            warnings.append("mh-port ignored with persistence: the source address alone "
                            "is hashed, so that a client sticks to its real server")
        if spec.netmask not in HOST_MASKS:
            warnings.append(
                f"persistence netmask {spec.netmask} not supported by nft 1.0 jhash: "
                "hashing the whole source address"
            )
    return Selector(hash_, shares, tuple(warnings), sport, maglev)


def effective_weights(dests: Mapping[DestKey, DestSpec], shares: Shares) -> dict[DestKey, int]:
    """Weight each real server gets in the ranges (0 = parked: no new connections)."""
    live = sorted(d for d, s in dests.items() if s.weight > 0)
    if shares == "equal":
        return {d: (1 if d in live else 0) for d in dests}
    if shares == "highest":
        best = min(live, key=lambda d: (-dests[d].weight, d), default=None)
        return {d: (1 if d == best else 0) for d in dests}
    return {d: max(s.weight, 0) for d, s in dests.items()}


def port_rewrites(key: ServiceKey) -> bool:
    """True when the DNAT sets the port too (tcp/udp service on one port)."""
    return key.protocol != "fwmark" and key.port != 0


def dest_warnings(key: ServiceKey | None, dests: Mapping[DestKey, DestSpec]) -> list[str]:
    """Per real server differences: forwarding method and ports that cannot be honoured."""
    warnings = []
    for dkey in sorted(dests):
        spec = dests[dkey]
        if spec.forward != "masq":
            warnings.append(
                f"real server {dkey.address}:{dkey.port}: forwarding {spec.forward!r} "
                "not possible with nftables DNAT: using masq"
            )
        if key is not None and not port_rewrites(key) and dkey.port not in (0, key.port):
            warnings.append(
                f"real server {dkey.address}:{dkey.port}: {key} keeps the client's "
                "destination port (port rewrite needs a single-port service)"
            )
    return warnings


def fallbacks(
    spec: ServiceSpec,
    dests: Mapping[DestKey, DestSpec] | None = None,
    key: ServiceKey | None = None,
) -> list[str]:
    """Everything this backend does differently from IPVS for a service, as sentences."""
    warnings = list(selector(spec).warnings)
    if dests:
        warnings.extend(dest_warnings(key, dests))
    return warnings
