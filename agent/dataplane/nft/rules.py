"""libnftables JSON for our table: base chains, dispatch maps and per-service chains. Pure.

Layout of table ``inet <name>`` (one table for IPv4 and IPv6; NAT in ``inet`` works on
kernels >= 5.2)::

    map fwm4/fwm6 { mark : verdict }                          fwmark services
    map svc4/svc6 { addr . l4proto . port : verdict }         tcp/udp services on one port
    map any4/any6 { addr . l4proto : verdict }                tcp/udp services on all ports
    set rs4/rs6 { addr . port }                               NAT real servers (guard.py)
    chain prerouting, output (nat, dstnat): (prerouting) the reply guard: drop a non-SYN
        TCP packet opening a connection from a real server endpoint; then drop a non-SYN TCP
        packet opening a connection to an address not ours (NONLOCAL); then
        one vmap lookup per map -> goto service chain
    chain postrouting (nat, srcnat): masquerade our DNATed connections when full NAT is on
    chain svc4_tcp_10_0_0_1_80 { dnat ... map {ranges : server}; reject comment SPEC }
    (mh: dnat ... jhash ip saddr [. th sport] mod SIZE seed S map {slot : server, ...})

nft 1.0.6's JSON parser cannot declare a named map keyed by ``numgen``/``jhash`` (no
``typeof``) nor with address . port data, so a service's ranges live in an anonymous map
inside its DNAT rule: a change to a service replaces that rule, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.dataplane.nft import guard, traffic
from agent.dataplane.nft.layout import (
    ServiceRule,
    chain_name,
    dispatch_map,
    layout,
    spec_comment,
)
from agent.dataplane.table import Service, ServiceKey

FAMILY = "inet"
NAT_PRIO_DST = -100
NAT_PRIO_SRC = 100
DISPATCH_ORDER = ("fwm4", "fwm6", "svc4", "svc6", "any4", "any6")  # IPVS: fwmark first
Json = dict[str, Any]


@dataclass(frozen=True)
class Config:
    """What shapes the rules besides the services themselves."""

    table: str = "piranha"
    ct_mark: int = 1 << 30  # ct mark bit set on connections we DNAT (0: don't mark)
    full_nat: bool = False  # masquerade connections we DNATed (needs ct_mark)


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def _ip(family: int) -> str:
    return "ip" if family == 4 else "ip6"


def dispatch_types() -> dict[str, Any]:
    """Key type of each dispatch map, as nft lists it."""
    types: dict[str, Any] = {}
    for fam in (4, 6):
        addr = f"ipv{fam}_addr"
        types[f"fwm{fam}"] = "mark"
        types[f"svc{fam}"] = [addr, "inet_proto", "inet_service"]
        types[f"any{fam}"] = [addr, "inet_proto"]
    return types


def _dispatch_rule_expr(name: str) -> list[Json]:
    kind, fam = name[:3], int(name[3])
    if kind == "fwm":
        proto = "ipv4" if fam == 4 else "ipv6"
        match = {"match": {"op": "==", "left": _meta("nfproto"), "right": proto}}
        return [match, {"vmap": {"key": _meta("mark"), "data": f"@{name}"}}]
    parts = [_payload(_ip(fam), "daddr"), _meta("l4proto")]
    if kind == "svc":
        parts.append(_payload("th", "dport"))
    return [{"vmap": {"key": {"concat": parts}, "data": f"@{name}"}}]


#: Before the dispatch in prerouting: a TCP packet without SYN that opens a connection
#: (conntrack picks up mid-stream flows) to an address that is not ours is dropped. That
#: is a connection this router does not know, sent here by a stale ARP entry (say, to a
#: router rebooted after a crash, while the VIP is elsewhere or nowhere): a real server
#: picked now would not know it and would reset it. Dropped, it leaves no conntrack entry
#: behind (one would clash with the synced entry committed when this router takes over),
#: and the client retransmits until the VIP's holder, which has the state, gets it. New
#: connections (SYN) are still balanced, so a router that just released its VIPs serves
#: the ones that reach it until the clients' ARP moves.
NONLOCAL = "piranha:nonlocal"


def nonlocal_expr() -> list[Json]:
    """``meta l4proto tcp tcp flags & syn == 0 fib daddr type != local counter drop``."""
    flags = {"payload": {"protocol": "tcp", "field": "flags"}}
    return [
        {"match": {"op": "==", "left": _meta("l4proto"), "right": "tcp"}},
        {"match": {"op": "==", "left": {"&": [flags, "syn"]}, "right": 0}},
        {"match": {"op": "!=", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                   "right": "local"}},
        {"counter": None},
        {"drop": None},
    ]


def base_rule_comments(cfg: Config) -> dict[str, list[str]]:
    """Comments of the base rules, chain by chain, in order (read checks them)."""
    dispatch = [f"piranha:{name}" for name in DISPATCH_ORDER]
    return {
        "prerouting": [*guard.COMMENTS, NONLOCAL, *dispatch],
        "output": dispatch,
        "postrouting": ["piranha:fullnat"] if cfg.full_nat else [],
        traffic.CHAIN: [comment for comment, _ in traffic.rules()],
    }


BASE_CHAINS = {
    "prerouting": ("nat", "prerouting", NAT_PRIO_DST),
    "output": ("nat", "output", NAT_PRIO_DST),
    "postrouting": ("nat", "postrouting", NAT_PRIO_SRC),
    traffic.CHAIN: ("filter", "forward", 0),  # kernel traffic counters (traffic.py)
}


def _fullnat_expr(cfg: Config) -> list[Json]:
    mark = {"&": [{"ct": {"key": "mark"}}, cfg.ct_mark]}
    return [
        {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
        {"match": {"op": "==", "left": mark, "right": cfg.ct_mark}},
        {"masquerade": None},
    ]


def base_commands(cfg: Config) -> list[Json]:
    """Create what is missing of the table, maps and base chains; rewrite base rules.

    ``add`` of an existing table/map/chain is a no-op, and only the three base chains are
    flushed, so services (their chains and dispatch elements) are not touched.
    """
    tbl = {"family": FAMILY, "table": cfg.table}
    cmds: list[Json] = [{"add": {"table": {"family": FAMILY, "name": cfg.table}}}]
    types = dispatch_types()
    for name in DISPATCH_ORDER:
        cmds.append({"add": {"map": {**tbl, "name": name, "type": types[name], "map": "verdict"}}})
    cmds += guard.create_commands(cfg.table)
    cmds += traffic.create_commands(cfg.table)
    counting = dict(traffic.rules())
    comments = base_rule_comments(cfg)
    for chain, (ctype, hook, prio) in BASE_CHAINS.items():
        spec = {"type": ctype, "hook": hook, "prio": prio, "policy": "accept"}
        cmds.append({"add": {"chain": {**tbl, "name": chain, **spec}}})
        cmds.append({"flush": {"chain": {**tbl, "name": chain}}})
        for comment in comments[chain]:
            name = comment.removeprefix("piranha:")
            if name == "fullnat":
                expr = _fullnat_expr(cfg)
            elif comment == NONLOCAL:
                expr = nonlocal_expr()
            elif name.startswith("guard"):
                expr = guard.rule_expr(int(name[-1]))
            elif comment in counting:
                expr = counting[comment]
            else:
                expr = _dispatch_rule_expr(name)
            rule = {**tbl, "chain": chain, "comment": comment, "expr": expr}
            cmds.append({"add": {"rule": rule}})
    return cmds


# ---------------------------------------------------------------- services


def dispatch_key(key: ServiceKey) -> Any:
    """The service's key in its dispatch map."""
    if key.protocol == "fwmark":
        return key.fwmark
    if key.port:
        return {"concat": [key.address, key.protocol, key.port]}
    return {"concat": [key.address, key.protocol]}


def _selector_expr(rule: ServiceRule, family: int) -> Json:
    if rule.hash == "random":
        return {"numgen": {"mode": "random", "mod": rule.mod}}
    field = "saddr" if rule.hash == "saddr" else "daddr"
    expr = _payload(_ip(family), field)
    if rule.sport:
        expr = {"concat": [expr, _payload("th", "sport")]}
    return {"jhash": {"mod": rule.mod, "seed": rule.seed, "expr": expr}}


def _elements(rule: ServiceRule) -> list[list[Any]]:
    elems = []
    for slot in rule.slots:
        val: Any = slot.lo if slot.lo == slot.hi else {"range": [slot.lo, slot.hi]}
        data: Any = slot.address if slot.port is None else {"concat": [slot.address, slot.port]}
        if slot.comment:
            val = {"elem": {"val": val, "comment": slot.comment}}
        elems.append([val, data])
    return elems


def dnat_expr(cfg: Config, key: ServiceKey, rule: ServiceRule) -> list[Json]:
    """Statements of the DNAT rule: [l4proto match,] [ct mark |= bit,] dnat to map."""
    expr: list[Json] = []
    if rule.l4proto:
        expr.append({"match": {"op": "==", "left": _meta("l4proto"), "right": rule.l4proto}})
    if cfg.ct_mark:
        value = {"|": [{"ct": {"key": "mark"}}, cfg.ct_mark]}
        expr.append({"mangle": {"key": {"ct": {"key": "mark"}}, "value": value}})
    mapping = {"map": {"key": _selector_expr(rule, key.family), "data": {"set": _elements(rule)}}}
    expr.append({"dnat": {"family": _ip(key.family), "addr": mapping}})
    return expr


REJECT_EXPR: list[Json] = [{"reject": {"type": "icmpx", "expr": "port-unreachable"}}]


def _service_rules(cfg: Config, key: ServiceKey, service: Service) -> list[Json]:
    """Rule objects of a service chain, in chain order: [dnat,] reject+spec."""
    tbl = {"family": FAMILY, "table": cfg.table, "chain": chain_name(key)}
    rules = []
    rule = layout(key, service)
    if rule is not None:
        rules.append({**tbl, "expr": dnat_expr(cfg, key, rule)})
    rules.append({**tbl, "comment": spec_comment(service.spec), "expr": REJECT_EXPR})
    return rules


def build_service(cfg: Config, key: ServiceKey, service: Service, exists: bool) -> list[Json]:
    """(Re)write a service chain from scratch (see :func:`add_dispatch` for its element)."""
    chain = {"family": FAMILY, "table": cfg.table, "name": chain_name(key)}
    cmds: list[Json] = [{"add": {"chain": chain}}]
    if exists:
        cmds.append({"flush": {"chain": chain}})
    return cmds + [{"add": {"rule": rule}} for rule in _service_rules(cfg, key, service)]


def add_dispatch(cfg: Config, keys: list[ServiceKey]) -> list[Json]:
    """Point the dispatch elements of ``keys`` at their chains: one command per map.

    Adding an element that exists with the same verdict is a no-op.
    """
    by_map: dict[str, list[Any]] = {}
    for key in keys:
        goto = {"goto": {"target": chain_name(key)}}
        by_map.setdefault(dispatch_map(key), []).append([dispatch_key(key), goto])
    tbl = {"family": FAMILY, "table": cfg.table}
    return [
        {"add": {"element": {**tbl, "name": name, "elem": elems}}}
        for name, elems in sorted(by_map.items())
    ]


def insert_generation(cfg: Config, key: ServiceKey, service: Service) -> list[Json]:
    """Put a new [dnat, reject] pair at the head of an existing service chain.

    Only additions: the kernel commits these without waiting for a grace period, unlike
    any deletion. The old pair below is unreachable (dnat and reject both end the
    evaluation) and removed later by :func:`compact_service`.
    """
    rules = _service_rules(cfg, key, service)
    return [{"insert": {"rule": rule}} for rule in reversed(rules)]


def compact_service(cfg: Config, key: ServiceKey, service: Service) -> list[Json]:
    """Rewrite a service chain without its dead generations."""
    chain = {"family": FAMILY, "table": cfg.table, "name": chain_name(key)}
    return [{"flush": {"chain": chain}}] + [
        {"add": {"rule": rule}} for rule in _service_rules(cfg, key, service)
    ]


def delete_service(cfg: Config, key: ServiceKey) -> list[Json]:
    """Remove a service, whether or not its chain and dispatch element still exist.

    ``add`` first makes both exist (no-op if they do), so the deletes cannot fail.
    """
    tbl = {"family": FAMILY, "table": cfg.table}
    chain = {**tbl, "name": chain_name(key)}
    where = {**tbl, "name": dispatch_map(key)}
    goto = {"goto": {"target": chain_name(key)}}
    return [
        {"add": {"chain": chain}},
        {"add": {"element": {**where, "elem": [[dispatch_key(key), goto]]}}},
        {"delete": {"element": {**where, "elem": [dispatch_key(key)]}}},
        {"flush": {"chain": chain}},
        {"delete": {"chain": chain}},
    ]


def delete_table(cfg: Config) -> list[Json]:
    """Remove our whole table, whether or not it exists (``add`` first makes it exist)."""
    table = {"family": FAMILY, "name": cfg.table}
    return [{"add": {"table": table}}, {"delete": {"table": table}}]


def delete_dispatch(cfg: Config, key: ServiceKey) -> Json:
    """Remove the dispatch element of ``key`` (it must exist)."""
    where = {"family": FAMILY, "table": cfg.table, "name": dispatch_map(key)}
    return {"delete": {"element": {**where, "elem": [dispatch_key(key)]}}}


def delete_chain(cfg: Config, name: str) -> list[Json]:
    """Remove a chain of ours that nothing points at any more."""
    chain = {"family": FAMILY, "table": cfg.table, "name": name}
    return [{"flush": {"chain": chain}}, {"delete": {"chain": chain}}]
