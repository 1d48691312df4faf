"""Parse ``nft -j list table inet <name>`` back into services, and find what is broken. Pure.

A service is reported only if the kernel really serves it as described: its dispatch
element points at its chain, the chain's live generation parses, and its DNAT rule is
exactly what :func:`.layout.layout` makes of the recovered settings. Anything else is
left out (so ``diff`` adds it again) and named in ``problems``. If a base chain, base rule
or dispatch map is wrong, no service is reported: ``apply`` then rewrites the base and
every service, which also covers ``nft flush ruleset``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.dataplane.nft import guard, traffic
from agent.dataplane.nft.layout import (
    SEED,
    ServiceRule,
    Slot,
    chain_name,
    layout,
    service_from_rule,
    spec_from_comment,
)
from agent.dataplane.nft.rules import (
    BASE_CHAINS,
    DISPATCH_ORDER,
    REJECT_EXPR,
    Config,
    base_rule_comments,
    dispatch_types,
)
from agent.dataplane.table import Service, ServiceKey, ServiceSpec


@dataclass(frozen=True)
class KernelState:
    """What our table holds, as far as apply and compaction need to know."""

    services: Mapping[ServiceKey, Service] = field(default_factory=dict)
    chains: frozenset[str] = frozenset()  # service chains present in the kernel
    stale: frozenset[str] = frozenset()  # service chains holding dead generations
    stray: frozenset[str] = frozenset()  # service chains nothing points at
    broken: frozenset[ServiceKey] = frozenset()  # dispatched, but not as we would write it
    guard: frozenset[guard.Endpoint] | None = None  # reply guard sets (None: rewrite them)
    traffic: frozenset[traffic.Counted] | None = None  # traffic sets (None: rewrite them)
    base_ok: bool = False
    problems: tuple[str, ...] = ()
    sets_tidy: bool = False
    """The guard and traffic sets are known to match ``services`` exactly (False: not
    known; then the next plan computes them from all services, and compaction repairs)."""

    @property
    def untidy(self) -> bool:
        """True if compaction has something to do (dead rules, orphans, guard drift)."""
        return bool(self.stale or self.stray or self.broken) or (
            self.base_ok and not self.sets_tidy)


MISSING = KernelState(problems=("table missing",))


def parse_listing(doc: Mapping[str, Any] | None, cfg: Config) -> KernelState:
    """The state of table ``cfg.table`` from nft's JSON listing (None: no such table)."""
    if doc is None:
        return MISSING
    maps: dict[str, dict] = {}
    sets: dict[str, dict] = {}
    chains: dict[str, dict] = {}
    rules: dict[str, list[dict]] = {}
    for item in doc.get("nftables", []):
        if not isinstance(item, dict):
            continue
        if "map" in item and item["map"].get("table") == cfg.table:
            maps[item["map"]["name"]] = item["map"]
        elif "set" in item and item["set"].get("table") == cfg.table:
            sets[item["set"]["name"]] = item["set"]
        elif "chain" in item and item["chain"].get("table") == cfg.table:
            chains[item["chain"]["name"]] = item["chain"]
        elif "rule" in item and item["rule"].get("table") == cfg.table:
            rules.setdefault(item["rule"]["chain"], []).append(item["rule"])
    problems = (_base_problems(maps, chains, rules, cfg) + guard.set_problems(sets)
                + traffic.set_problems(sets))
    service_chains = frozenset(name for name in chains if name.startswith("svc"))
    if problems:
        return KernelState(chains=service_chains, problems=tuple(problems))
    services: dict[ServiceKey, Service] = {}
    stale: set[str] = set()
    referenced: set[str] = set()
    broken: set[ServiceKey] = set()
    for map_name in DISPATCH_ORDER:
        for key, target in _dispatch_entries(map_name, maps[map_name], problems):
            referenced.add(target)
            name = chain_name(key)
            if target != name or name not in chains:
                problems.append(f"{key}: dispatch points at {target!r}, not at its chain")
                broken.add(key)
                continue
            try:
                service, dead = _parse_chain(key, rules.get(name, []), cfg)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                problems.append(f"{key}: {exc}")
                broken.add(key)
                continue
            services[key] = service
            if dead:
                stale.add(name)
    stray = service_chains - referenced
    problems += [f"chain {name} is unreachable (no dispatch element)" for name in sorted(stray)]
    held, junk = guard.parse_sets(sets)
    problems += junk
    want = guard.endpoints(services)
    if held is not None and held != want:
        problems.append(
            f"reply guard sets: {len(want - held)} endpoints missing, {len(held - want)} extra"
        )
    counting, junk = traffic.parse_sets(sets)
    problems += junk
    wanted = traffic.counted(services)
    if counting is not None and counting != wanted:
        problems.append(f"traffic sets: {len(wanted - counting)} items missing, "
                        f"{len(counting - wanted)} extra")
    return KernelState(
        services=services,
        chains=service_chains,
        stale=frozenset(stale),
        stray=stray,
        broken=frozenset(broken),
        guard=held,
        traffic=counting,
        base_ok=True,
        problems=tuple(problems),
        sets_tidy=held == want and counting == wanted,
    )


# ---------------------------------------------------------------- base


def _base_problems(
    maps: dict[str, dict], chains: dict[str, dict], rules: dict[str, list[dict]], cfg: Config
) -> list[str]:
    problems = []
    types = dispatch_types()
    for name in DISPATCH_ORDER:
        found = maps.get(name)
        if found is None or found.get("type") != types[name] or found.get("map") != "verdict":
            problems.append(f"dispatch map {name} missing or wrong")
    expected = base_rule_comments(cfg)
    for name, (ctype, hook, prio) in BASE_CHAINS.items():
        chain = chains.get(name)
        have = (chain or {}).get("type"), (chain or {}).get("hook"), (chain or {}).get("prio")
        if have != (ctype, hook, prio):
            problems.append(f"base chain {name} missing or wrong")
        elif [r.get("comment") for r in rules.get(name, [])] != expected[name]:
            problems.append(f"base rules of {name} missing or wrong")
    return problems


def _dispatch_entries(name: str, found: dict, problems: list[str]) -> list[tuple[ServiceKey, str]]:
    """(service key, goto target) of each element of dispatch map ``name``."""
    kind, family = name[:3], int(name[3])
    entries = []
    for elem in found.get("elem", []):
        try:
            key_json, verdict = elem
            if isinstance(key_json, dict) and "elem" in key_json:
                key_json = key_json["elem"]["val"]
            target = verdict["goto"]["target"]
            if kind == "fwm":
                key = ServiceKey("fwmark", fwmark=int(key_json), family=family)
            else:
                parts = key_json["concat"]
                port = int(parts[2]) if kind == "svc" else 0
                if parts[1] not in ("tcp", "udp"):
                    raise ValueError(parts[1])
                key = ServiceKey(parts[1], str(parts[0]), port, family=family)
        except (ValueError, KeyError, TypeError, IndexError):
            problems.append(f"junk element in dispatch map {name}: {elem!r}")
            continue
        entries.append((key, target))
    return entries


# ---------------------------------------------------------------- service chains


def _parse_chain(key: ServiceKey, rules: list[dict], cfg: Config) -> tuple[Service, bool]:
    """(service, has dead generations) from the rules of a service chain, in order."""
    index, spec = _settings_rule(rules)
    rule = rules[index]
    if rule.get("expr") != REJECT_EXPR:
        raise ValueError("settings rule is not the expected reject")
    head = rules[:index]
    if len(head) > 1:
        raise ValueError(f"{len(head)} rules before the settings rule")
    parsed = parse_dnat(head[0]["expr"], key, cfg) if head else None
    service = service_from_rule(spec, parsed)
    if layout(key, service) != parsed:
        raise ValueError("DNAT rule differs from what its settings and servers give")
    return service, len(rules) > index + 1


def _settings_rule(rules: list[dict]) -> tuple[int, ServiceSpec]:
    """Index and settings of the first rule whose comment is a service's settings."""
    for index, rule in enumerate(rules):
        try:
            return index, spec_from_comment(rule.get("comment"))
        except (ValueError, KeyError, TypeError):
            continue
    raise ValueError("chain has no rule with the service's settings")


def parse_dnat(expr: list[dict], key: ServiceKey, cfg: Config) -> ServiceRule:
    """The ServiceRule a DNAT rule encodes; ``ValueError`` if it is not one of ours."""
    l4proto, mark, dnat = None, 0, None
    for stmt in expr:
        if "match" in stmt and stmt["match"]["left"] == {"meta": {"key": "l4proto"}}:
            l4proto = stmt["match"]["right"]
        elif "mangle" in stmt:
            value = stmt["mangle"]["value"]["|"]
            if value[0] != {"ct": {"key": "mark"}}:
                raise ValueError("unexpected mangle statement")
            mark = value[1]
        elif "dnat" in stmt and dnat is None:
            dnat = stmt["dnat"]
        else:
            raise ValueError(f"unexpected statement {next(iter(stmt))!r}")
    if dnat is None:
        raise ValueError("no dnat statement")
    if mark != cfg.ct_mark:
        raise ValueError(f"ct mark {mark:#x} is not {cfg.ct_mark:#x}")
    if dnat.get("family") != ("ip" if key.family == 4 else "ip6"):
        raise ValueError("dnat family differs from the service's")
    mapping = dnat["addr"]["map"]
    hash_, mod, seed, sport = _parse_selector(mapping["key"])
    return ServiceRule(hash_, l4proto, _parse_slots(mapping["data"]), mod, seed, sport)


# nft lists `th sport` as `tcp sport` after a `meta l4proto tcp` match
_SPORTS = [{"payload": {"protocol": p, "field": "sport"}} for p in ("th", "tcp", "udp", "sctp")]


def _parse_selector(expr: dict) -> tuple[str, int, int, bool]:
    """(hash, mod, seed, source port hashed too) of a selector; whether they are the ones
    the service should have is for the layout check to say."""
    if "numgen" in expr:
        ng = expr["numgen"]
        if ng.get("mode") == "random" and type(ng.get("mod")) is int and not ng.get("offset"):
            return "random", ng["mod"], SEED, False
    elif "jhash" in expr:
        jh = expr["jhash"]
        mod, seed, inner = jh.get("mod"), jh.get("seed", 0), jh["expr"]
        sport = "concat" in inner
        if sport:
            inner, port = inner["concat"]
            if port not in _SPORTS:
                raise ValueError(f"unexpected selector {expr!r}")
        field = inner["payload"]["field"]
        if type(mod) is int and type(seed) is int and not jh.get("offset") and \
                field in ("saddr", "daddr"):
            return field, mod, seed, sport
    raise ValueError(f"unexpected selector {expr!r}")


def _parse_slots(data: dict) -> tuple[Slot, ...]:
    slots = []
    for key_json, target in data["set"]:
        if isinstance(key_json, dict) and "elem" in key_json:
            val, comment = key_json["elem"]["val"], key_json["elem"]["comment"]
        else:
            val, comment = key_json, ""
        lo, hi = val["range"] if isinstance(val, dict) else (val, val)
        if isinstance(target, dict):
            address, port = target["concat"]
            slots.append(Slot(int(lo), int(hi), str(address), int(port), str(comment)))
        else:
            slots.append(Slot(int(lo), int(hi), str(target), None, str(comment)))
    return tuple(sorted(slots, key=lambda s: s.lo))
