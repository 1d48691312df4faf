"""Kernel traffic counters per virtual service and per real server. Pure.

Counters live on set elements (sets declared with ``counter``: a lookup that matches an
element counts the packet on it), so the kernel keeps them per element and one listing of
a set reads them all; a real server's counters survive every change that keeps its
element, and no rule is rewritten for them. Base chain ``traffic`` (filter, forward hook)
looks every forwarded packet of a connection we DNATed up by its conntrack tuple::

    set tv4 { type ipv4_addr . inet_proto . inet_service . ct_dir . ct_state; counter }
        virtual: VIP . proto . port . direction . state (original new = a connection,
        original established = packets in, reply established = packets out)
    set ti4, to4, tn4 { type ipv4_addr . inet_proto . inet_service . ipv4_addr
        . inet_service; counter }   real server: VIP . proto . port . server . its port,
        original direction (in), reply direction (out), original new (connections)
    chain traffic { type filter hook forward priority filter;
        meta nfproto ipv4 meta l4proto tcp ct original ip daddr . meta l4proto
            . ct original proto-dst . ct direction . ct state @tv4
        meta nfproto ipv4 meta l4proto tcp ct direction original
            ct original ip daddr . meta l4proto . ct original proto-dst
            . ct reply ip saddr . ct reply proto-src @ti4
        ... (reply: @to4; ct state new, original: @tn4; udp; ip6) }

nft 1.0.6 needs the ``meta l4proto`` match to type ``ct original proto-dst`` inside a
concatenation (hence one rule per protocol), and a concatenated type holds at most five
fields (hence three real-server sets, not one keyed by direction). Counted: tcp and udp
services on one port (not fwmark, not all-ports services), and their real servers with a
port, whatever their forwarding method: this backend DNATs them all (``route`` and
``tunnel`` fall back to ``masq``), so their replies pass the director. Packets of
connections the router forwards only: a client on the router itself is not counted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from agent.dataplane.stats import ServiceTraffic, Traffic
from agent.dataplane.table import DestKey, Service, ServiceKey

Json = dict[str, Any]
#: ("v", family, vip, proto, port) for a virtual service;
#: ("r", family, vip, proto, port, server, server port) for one of its real servers.
Counted = tuple[Any, ...]
CHAIN = "traffic"
VS_STATES = (("original", "new"), ("original", "established"), ("reply", "established"))
RS_SETS = ("ti", "to", "tn")  # in (original), out (reply), new connections (original new)


def set_names(family: int) -> tuple[str, ...]:
    return (f"tv{family}", *(f"{s}{family}" for s in RS_SETS))


SETS = {name: family for family in (4, 6) for name in set_names(family)}


def key_shape(name: str) -> tuple[str, ...]:
    """The kinds of the key fields of one of our sets (elements.py encodes them)."""
    if name.startswith("tv"):
        return ("addr", "proto", "port", "dir", "state")
    return ("addr", "proto", "port", "addr", "port")


def set_type(name: str) -> list[str]:
    """The key type of one of our sets, as nft lists it."""
    addr = f"ipv{SETS[name]}_addr"
    if name.startswith("tv"):
        return [addr, "inet_proto", "inet_service", "ct_dir", "ct_state"]
    return [addr, "inet_proto", "inet_service", addr, "inet_service"]


def counted(services: Mapping[ServiceKey, Service]) -> frozenset[Counted]:
    """What the sets should hold for these services."""
    found: set[Counted] = set()
    for key, service in services.items():
        if key.protocol not in ("tcp", "udp") or not key.port:
            continue
        vs = (key.family, key.address, key.protocol, key.port)
        found.add(("v", *vs))
        for dest in service.dests:
            if dest.port:  # every forwarding method is DNAT here (route, tunnel: masq used)
                found.add(("r", *vs, dest.address, dest.port))
    return frozenset(found)


def elements(item: Counted) -> list[tuple[str, tuple[Any, ...]]]:
    """(set, element key) pairs of one counted item."""
    if item[0] == "v":
        _, family, vip, proto, port = item
        return [(f"tv{family}", (vip, proto, port, d, s)) for d, s in VS_STATES]
    _, family, vip, proto, port, server, sport = item
    return [(f"{s}{family}", (vip, proto, port, server, sport)) for s in RS_SETS]


def _key_expr(family: int, virtual: bool) -> Json:
    ip = "ip" if family == 4 else "ip6"
    parts: list[Json] = [
        {"ct": {"key": f"{ip} daddr", "dir": "original"}},
        {"meta": {"key": "l4proto"}},
        {"ct": {"key": "proto-dst", "dir": "original"}},
    ]
    if virtual:
        parts += [{"ct": {"key": "direction"}}, {"ct": {"key": "state"}}]
    else:
        parts += [{"ct": {"key": f"{ip} saddr", "dir": "reply"}},
                  {"ct": {"key": "proto-src", "dir": "reply"}}]
    return {"concat": parts}


def rules() -> list[tuple[str, list[Json]]]:
    """(comment, expressions) of every rule of chain ``traffic``, in order."""
    out: list[tuple[str, list[Json]]] = []
    for family in (4, 6):
        nfproto = {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}},
                             "right": f"ipv{family}"}}
        for proto in ("tcp", "udp"):
            head = [nfproto, {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}},
                                        "right": proto}}]
            orig = {"match": {"op": "==", "left": {"ct": {"key": "direction"}},
                              "right": "original"}}
            reply = {"match": {"op": "==", "left": {"ct": {"key": "direction"}},
                               "right": "reply"}}
            new = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}
            for name, extra in ((f"tv{family}", []), (f"ti{family}", [orig]),
                                (f"to{family}", [reply]), (f"tn{family}", [new, orig])):
                lookup = {"match": {"op": "==", "left": _key_expr(family, name[1] == "v"),
                                    "right": f"@{name}"}}
                out.append((f"piranha:{name}{proto}", [*head, *extra, lookup]))
    return out


def create_commands(table: str) -> list[Json]:
    """Create the sets if missing (``add`` of an existing set is a no-op)."""
    tbl = {"family": "inet", "table": table}
    return [{"add": {"set": {**tbl, "name": name, "type": set_type(name),
                             "stmt": [{"counter": None}]}}} for name in SETS]


def _elem(key: tuple[Any, ...]) -> Json:
    return {"concat": list(key)}


def commands(table: str, have: frozenset[Counted] | None,
             want: frozenset[Counted]) -> list[Json]:
    """Turn the sets from ``have`` (None: unknown, so flush first) into ``want``. Elements
    that stay are not touched: their counters carry on."""
    if have is None:
        return delta_commands(table, (), want, flush=True)
    return delta_commands(table, have - want, want - have)


def delta_commands(table: str, gone: Iterable[Counted], new: Iterable[Counted], *,
                   flush: bool = False) -> list[Json]:
    """Remove the items ``gone`` and add ``new`` (``flush``: empty every set first)."""
    tbl = {"family": "inet", "table": table}
    cmds: list[Json] = ([{"flush": {"set": {**tbl, "name": name}}} for name in SETS]
                        if flush else [])
    dead: dict[str, list[tuple[Any, ...]]] = {}
    born: dict[str, list[tuple[Any, ...]]] = {}
    for item in _sorted(gone):
        for name, key in elements(item):
            dead.setdefault(name, []).append(key)
    for item in _sorted(new):
        for name, key in elements(item):
            born.setdefault(name, []).append(key)
    for name in SETS:
        where = {**tbl, "name": name}
        if name in dead:
            cmds.append({"delete": {"element": {**where, "elem": [_elem(k) for k in dead[name]]}}})
        if name in born:
            cmds.append({"add": {"element": {**where, "elem": [_elem(k) for k in born[name]]}}})
    return cmds


def _sorted(items: Iterable[Counted]) -> list[Counted]:
    """In a stable order (items of one kind have fields of the same types)."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)


def set_problems(sets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Sets missing, of the wrong type or without counters (the base is then rewritten)."""
    return [f"traffic set {name} missing or wrong" for name in SETS
            if (sets.get(name) or {}).get("type") != set_type(name)
            or {"counter": None} not in (sets.get(name) or {}).get("stmt", [])]


def _values(elems: Iterable[Any]) -> Iterable[tuple[Any, Any]]:
    """(key, counter) of each listed element."""
    for elem in elems:
        if isinstance(elem, dict) and "elem" in elem:
            yield elem["elem"].get("val"), elem["elem"].get("counter")
        else:
            yield elem, None


def _key(value: Any) -> tuple[Any, ...]:
    parts = value["concat"]
    if len(parts) != 5:
        raise ValueError("not five fields")
    return tuple(int(p) if isinstance(p, int) else str(p) for p in parts)


def parse_sets(sets: Mapping[str, Mapping[str, Any]]) -> tuple[frozenset[Counted] | None,
                                                               list[str]]:
    """What our (well-typed) sets hold, and the junk found; None when there is junk or an
    item is incomplete (its sets are then rewritten)."""
    found: set[tuple[str, tuple[Any, ...]]] = set()
    problems: list[str] = []
    for name in SETS:
        for value, _ in _values(sets[name].get("elem", [])):
            try:
                found.add((name, _key(value)))
            except (ValueError, KeyError, TypeError):
                problems.append(f"junk element in traffic set {name}: {value!r}")
    items: set[Counted] = set()
    for name, key in found:
        family = SETS[name]
        if name.startswith("tv"):
            items.add(("v", family, *key[:3]))
        else:
            items.add(("r", family, *key))
    complete = {item for item in items if all(e in found for e in elements(item))}
    if complete != items or len(found) != sum(len(elements(i)) for i in items):
        problems.append(f"traffic sets: {len(items - complete)} items incomplete")
    return (None if problems else frozenset(items)), problems


Raw = dict[tuple[str, tuple[Any, ...]], tuple[int, int]]


def raw_counters(sets: Mapping[str, Mapping[str, Any]]) -> Raw:
    """(set, element key) -> (packets, bytes) of the listed sets (junk is skipped)."""
    raw: Raw = {}
    for name, listed in sets.items():
        if name not in SETS:
            continue
        for value, ctr in _values(listed.get("elem", [])):
            try:
                raw[(name, _key(value))] = (int(ctr["packets"]), int(ctr["bytes"]))
            except (ValueError, KeyError, TypeError):
                continue
    return raw


def dump_lines(raw: Raw) -> Iterable[str]:
    """``raw`` as tab-separated lines: set, the five key fields, packets, bytes."""
    for (name, key), (packets, nbytes) in raw.items():
        yield "\t".join(map(str, (name, *key, packets, nbytes)))


def parse_lines(text: str) -> Raw:
    """The inverse of :func:`dump_lines` (lines that do not parse are skipped)."""
    raw: Raw = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 8 or parts[0] not in SETS:
            continue
        a, proto, port, d, e, packets, nbytes = parts[1:]
        try:
            if parts[0].startswith("tv"):
                key: tuple[Any, ...] = (a, proto, int(port), d, e)
            else:
                key = (a, proto, int(port), d, int(e))
            raw[(parts[0], key)] = (int(packets), int(nbytes))
        except ValueError:
            continue
    return raw


def read_counters(sets: Mapping[str, Mapping[str, Any]]) -> dict[ServiceKey, ServiceTraffic]:
    """The counters of every complete item in the listed sets (junk is skipped)."""
    return counters(raw_counters(sets))


def counters(raw: Raw) -> dict[ServiceKey, ServiceTraffic]:
    """Per service and real server, from the raw element counters."""
    totals: dict[ServiceKey, Traffic] = {}
    dests: dict[ServiceKey, dict[DestKey, Traffic]] = {}
    for name, key in raw:
        family = SETS[name]
        if name == f"tv{family}" and key[3:] == VS_STATES[0]:
            item: Counted = ("v", family, *key[:3])
        elif name == f"ti{family}":
            item = ("r", family, *key)
        else:
            continue
        counts = [raw.get(e) for e in elements(item)]
        if any(c is None for c in counts):
            continue
        a, b, c = counts  # type: ignore[misc]
        service = ServiceKey(item[3], item[2], item[4], family=family)
        if item[0] == "v":  # new, established in, established out
            totals[service] = Traffic(a[0], a[0] + b[0], a[1] + b[1], c[0], c[1])
        else:  # in, out, new
            dests.setdefault(service, {})[DestKey(item[5], item[6])] = Traffic(
                c[0], a[0], a[1], b[0], b[1])
    return {key: ServiceTraffic(totals.get(key, Traffic()), dests.get(key, {}))
            for key in totals.keys() | dests.keys()}


def dumped(table: str, names: Iterable[str]) -> Raw:
    """The counters of our sets ``names`` in ``table``, dumped over raw netlink
    (setdump.py: no listing of the ruleset, no restart when it moves); a set that is not
    there is skipped. OSError if netlink fails otherwise."""
    import errno

    from agent.dataplane.nft import setdump

    raw: Raw = {}
    with setdump.open_socket() as sock:
        for name in names:
            try:
                found = setdump.dump(sock, table, name)
            except setdump.DumpError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # no table (yet), or a set missing: the next apply repairs it
                raise
            shape, family = key_shape(name), SETS[name]
            for key, packets, nbytes in found:
                if packets is None or nbytes is None:
                    continue
                try:
                    raw[(name, setdump.fields(key, shape, family))] = (packets, nbytes)
                except ValueError:
                    continue  # junk: not counted
    return raw


def listed(table: str, names: Iterable[str]) -> Raw | None:
    """The same through `nft list set` (libnftables, else ``nft``); None if it failed
    (said on stderr)."""
    import json
    import subprocess

    from agent.dataplane.nft.libnft import LibNft

    lib = LibNft.load()
    sets: dict[str, Any] = {}
    for name in names:
        command = f"list set inet {table} {name}"
        if lib is not None:
            rc, out, err = lib.run(command)
        else:
            proc = subprocess.run(["nft", "-j", *command.split()], capture_output=True,
                                  text=True, check=False)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        if rc != 0:
            if "No such file or directory" in err:
                continue  # no table (yet), or a set missing: the next apply repairs it
            sys.stderr.write(f"nft {command}: {err.strip() or f'status {rc}'}\n")
            return None
        for item in json.loads(out).get("nftables", []):
            if isinstance(item, dict) and "set" in item:
                sets[name] = item["set"]
    return raw_counters(sets)


def main(argv: list[str]) -> int:
    """``python -m agent.dataplane.nft.traffic TABLE SET...``: the sets' counters as
    :func:`dump_lines`, dumped over netlink (:func:`dumped`); where that fails, listed
    (:func:`listed`). The agent runs this in a child process, so that decoding 400,000
    elements (seconds) never stalls its event loop."""
    table, names = argv[0], argv[1:]
    try:
        raw: Raw | None = dumped(table, names)
    except OSError as exc:
        sys.stderr.write(f"netlink dump of the traffic sets failed ({exc}): listing them\n")
        raw = listed(table, names)
        if raw is None:
            return 1
    for line in dump_lines(raw):
        sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
