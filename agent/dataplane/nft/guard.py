"""The reply guard: a real server's mid-stream reply never opens a connection. Pure.

After a change of director without state sync (``sh``/``mh``), the new active picks up
established connections from their next packet. If the real server's reply reaches it
before the client's next packet, conntrack opens an entry in the wrong direction (real
server -> client, not NATed); the client's packet to the VIP then clashes with it, the
client sees the server's own address and resets the connection. The guard drops a TCP
packet without SYN that would open a new connection from a NAT real server endpoint; the
server retransmits, and by then the client's packet has opened the right entry.

Sets ``rs4``/``rs6`` (address . port of every ``masq`` real server of a tcp or fwmark
service, port > 0) and one base rule per family in ``prerouting``, after the dispatch
lookups. Direct routing and tunnel servers never send replies through the director.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any

from agent.dataplane.table import DestKey, Service, ServiceKey

Endpoint = tuple[int, str, int]  # (family, address, port)
Json = dict[str, Any]
SETS = {4: "rs4", 6: "rs6"}
COMMENTS = ("piranha:guard4", "piranha:guard6")


def set_type(family: int) -> list[str]:
    """The key type of the family's endpoint set, as nft lists it."""
    return [f"ipv{family}_addr", "inet_service"]


def endpoints(services: Mapping[ServiceKey, Service]) -> frozenset[Endpoint]:
    """Every endpoint whose mid-stream replies the guard stops from opening entries."""
    found: set[Endpoint] = set()
    for key, service in services.items():
        if key.protocol == "udp":
            continue
        for dest in service.dests:
            if dest.port:  # route and tunnel are DNAT here too (masq used)
                found.add((key.family, dest.address, dest.port))
    return frozenset(found)


def rule_expr(family: int) -> list[Json]:
    """``ct state new tcp flags != syn ip saddr . tcp sport @rs4 counter drop``."""
    ip = "ip" if family == 4 else "ip6"
    pair = {
        "concat": [
            {"payload": {"protocol": ip, "field": "saddr"}},
            {"payload": {"protocol": "tcp", "field": "sport"}},
        ]
    }
    return [
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}},
        {
            "match": {
                "op": "!",
                "left": {"payload": {"protocol": "tcp", "field": "flags"}},
                "right": "syn",
            }
        },
        {"match": {"op": "==", "left": pair, "right": f"@{SETS[family]}"}},
        {"counter": None},
        {"drop": None},
    ]


def _elem(endpoint: Endpoint) -> Json:
    return {"concat": [endpoint[1], endpoint[2]]}


def commands(table: str, have: frozenset[Endpoint] | None, want: frozenset[Endpoint]) -> list[Json]:
    """Turn the sets from ``have`` (None: unknown, so flush first) into ``want``."""
    if have is None:
        return delta_commands(table, (), want, flush=True)
    return delta_commands(table, have - want, want - have)


def delta_commands(table: str, gone: Iterable[Endpoint], new: Iterable[Endpoint], *,
                   flush: bool = False) -> list[Json]:
    """Remove ``gone`` from the sets and add ``new`` (``flush``: empty the sets first)."""
    tbl = {"family": "inet", "table": table}
    cmds: list[Json] = []
    for family, name in SETS.items():
        where = {**tbl, "name": name}
        dead = sorted(e for e in gone if e[0] == family)
        born = sorted(e for e in new if e[0] == family)
        if flush:
            cmds.append({"flush": {"set": where}})
        if dead:
            cmds.append({"delete": {"element": {**where, "elem": [_elem(e) for e in dead]}}})
        if born:
            cmds.append({"add": {"element": {**where, "elem": [_elem(e) for e in born]}}})
    return cmds


def held_elsewhere(endpoint: Endpoint, services: Mapping[ServiceKey, Service],
                   skip: Container[ServiceKey]) -> bool:
    """True if a service not in ``skip`` still puts ``endpoint`` in the guard."""
    family, address, port = endpoint
    dest = DestKey(address, port)
    return any(dest in service.dests for key, service in services.items()
               if key.family == family and key.protocol != "udp" and key not in skip)


def create_commands(table: str) -> list[Json]:
    """Create the sets if missing (``add`` of an existing set is a no-op)."""
    tbl = {"family": "inet", "table": table}
    return [
        {"add": {"set": {**tbl, "name": name, "type": set_type(family)}}}
        for family, name in SETS.items()
    ]


def set_problems(sets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Sets missing or of the wrong type (the base is then rewritten)."""
    return [
        f"reply guard set {name} missing or wrong"
        for family, name in SETS.items()
        if (sets.get(name) or {}).get("type") != set_type(family)
    ]


def parse_sets(
    sets: Mapping[str, Mapping[str, Any]],
) -> tuple[frozenset[Endpoint] | None, list[str]]:
    """The endpoints our (well-typed) sets hold, and the junk found; None when there is
    junk, so that the sets are rewritten."""
    found: set[Endpoint] = set()
    problems: list[str] = []
    for family, name in SETS.items():
        for elem in _elements(sets[name].get("elem", [])):
            try:
                address, port = elem["concat"]
                found.add((family, str(address), int(port)))
            except (ValueError, KeyError, TypeError):
                problems.append(f"junk element in reply guard set {name}: {elem!r}")
    return (None if problems else frozenset(found)), problems


def _elements(elems: Iterable[Any]) -> Iterable[Any]:
    for elem in elems:
        yield elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
