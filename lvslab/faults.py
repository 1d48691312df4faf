"""Fault injection for failover tests: nftables drops in a table of our own, links down.

Every fault is one or two base chains in table ``inet labfault`` of a host's namespace
(never the agent's table), named for what they drop, so each is removable on its own:

    etcd_in / etcd_out        the router's traffic from/to every etcd member
    peers_in / peers_out      an etcd member's traffic from/to the other members
    hb_from_<peer>            heartbeats (UDP on the heartbeat port) from <peer>, both links
    hb_to_<peer>              heartbeats to <peer>, both links

``isolate`` sets every link of a host down (and ``reconnect`` up again).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from . import netns
from .build import links_up, set_links
from .netns import LabError
from .topology import Topology

TABLE = "labfault"
FAMILY = "inet"
PRIORITY = -10  # before the usual filter chains; a drop anywhere is final anyway


# ---------------------------------------------------------------- pure: rules and scripts


def _set(addrs: Iterable[str]) -> str:
    return "{ " + ", ".join(sorted(addrs)) + " }"


def etcd_chains(etcd_ips: Iterable[str]) -> dict[str, tuple[str, list[str]]]:
    """{chain: (hook, rules)} cutting a host from every etcd member."""
    ips = _set(etcd_ips)
    return {"etcd_in": ("input", [f"ip saddr {ips} drop"]),
            "etcd_out": ("output", [f"ip daddr {ips} drop"])}


def peer_chains(peer_ips: Iterable[str]) -> dict[str, tuple[str, list[str]]]:
    """{chain: (hook, rules)} cutting an etcd member from the other members."""
    ips = _set(peer_ips)
    return {"peers_in": ("input", [f"ip saddr {ips} drop"]),
            "peers_out": ("output", [f"ip daddr {ips} drop"])}


def heartbeat_rules(direction: str, peer_addrs: Iterable[str], port: int) -> list[str]:
    """Rules dropping UDP to or from ``port`` exchanged with the peer (saddr: in, daddr: out)."""
    field = "saddr" if direction == "in" else "daddr"
    peers = _set(peer_addrs)
    return [f"ip {field} {peers} udp dport {port} drop",
            f"ip {field} {peers} udp sport {port} drop"]


def hb_chains(peer: str, peer_addrs: Iterable[str], port: int, *, inbound: bool = True,
              outbound: bool = True) -> dict[str, tuple[str, list[str]]]:
    addrs = list(peer_addrs)
    out: dict[str, tuple[str, list[str]]] = {}
    if inbound:
        out[f"hb_from_{peer}"] = ("input", heartbeat_rules("in", addrs, port))
    if outbound:
        out[f"hb_to_{peer}"] = ("output", heartbeat_rules("out", addrs, port))
    return out


def add_script(chains: dict[str, tuple[str, list[str]]]) -> str:
    """An nft script installing ``chains`` (idempotent: a chain's rules are replaced)."""
    lines = [f"add table {FAMILY} {TABLE}"]
    for name, (hook, rules) in chains.items():
        lines.append(f"add chain {FAMILY} {TABLE} {name} "
                     f"{{ type filter hook {hook} priority {PRIORITY}; policy accept; }}")
        lines.append(f"flush chain {FAMILY} {TABLE} {name}")
        lines += [f"add rule {FAMILY} {TABLE} {name} {rule}" for rule in rules]
    return "\n".join(lines) + "\n"


def delete_script(names: Iterable[str]) -> str:
    lines = []
    for name in names:
        lines += [f"flush chain {FAMILY} {TABLE} {name}", f"delete chain {FAMILY} {TABLE} {name}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- shell: apply in namespaces


def chains(ns: str) -> list[str]:
    """Names of our fault chains in namespace ``ns`` (none if the table is absent)."""
    proc = netns.run_in(ns, "nft", "-j", "list", "table", FAMILY, TABLE, check=False)
    if proc.returncode != 0:
        return []
    items = json.loads(proc.stdout or "{}").get("nftables", [])
    return [item["chain"]["name"] for item in items if "chain" in item]


def install(ns: str, new: dict[str, tuple[str, list[str]]]) -> None:
    netns.run_in(ns, "nft", "-f", "-", input=add_script(new))


def remove(ns: str, names: Iterable[str]) -> None:
    """Delete the named chains that exist; the table too once it is empty."""
    present = set(chains(ns))
    gone = [n for n in names if n in present]
    if gone:
        netns.run_in(ns, "nft", "-f", "-", input=delete_script(gone))
    if present and present <= set(gone):
        netns.run_in(ns, "nft", "delete", "table", FAMILY, TABLE, check=False)


def check_router(topo: Topology, name: str) -> None:
    if topo.host(name).role != "router":
        raise LabError(f"{name} is not a router (routers: {', '.join(topo.router_names)})")


def _names(side: str | Iterable[str]) -> list[str]:
    return [side] if isinstance(side, str) else list(side)


def cut_etcd(topo: Topology, router: str) -> None:
    """Drop everything between ``router`` and every etcd member; routers still hear each
    other."""
    check_router(topo, router)
    install(topo.ns(router), etcd_chains(topo.etcd_ips))


def restore_etcd(topo: Topology, router: str) -> None:
    check_router(topo, router)
    remove(topo.ns(router), etcd_chains(topo.etcd_ips))


def check_etcd_member(topo: Topology, name: str) -> None:
    if topo.host(name).role != "etcd":
        raise LabError(f"{name} is not an etcd member (members: {', '.join(topo.etcd_names)})")


def cut_etcd_peers(topo: Topology, member: str) -> None:
    """Drop everything between etcd ``member`` and the other members (raft and all): it is a
    minority of one. Routers and the client still reach it."""
    check_etcd_member(topo, member)
    others = [topo.etcd_member_ip(m) for m in topo.etcd_names if m != member]
    if not others:
        raise LabError(f"{member} is the only etcd member: it has no peers to be cut from")
    install(topo.ns(member), peer_chains(others))


def restore_etcd_peers(topo: Topology, member: str) -> None:
    check_etcd_member(topo, member)
    remove(topo.ns(member), ["peers_in", "peers_out"])


def _pairs(topo: Topology, side_a: str | Iterable[str], side_b: str | Iterable[str]
           ) -> list[tuple[str, str]]:
    a, b = _names(side_a), _names(side_b)
    for name in a + b:
        check_router(topo, name)
    if set(a) & set(b):
        raise LabError(f"a router cannot be on both sides: {sorted(set(a) & set(b))}")
    return [(x, y) for x in a for y in b]


def partition(topo: Topology, side_a: str | Iterable[str], side_b: str | Iterable[str],
              port: int) -> None:
    """No heartbeats between any router of ``side_a`` and any of ``side_b`` (both ways,
    both links); etcd stays reachable."""
    for x, y in _pairs(topo, side_a, side_b):
        for me, peer in ((x, y), (y, x)):
            addrs = [i.address for i in topo.host(peer).ifaces]
            install(topo.ns(me), hb_chains(peer, addrs, port))


def heal(topo: Topology, side_a: str | Iterable[str], side_b: str | Iterable[str]) -> None:
    """Undo :func:`partition` (and any one-way heartbeat loss) between the two sides."""
    for x, y in _pairs(topo, side_a, side_b):
        for me, peer in ((x, y), (y, x)):
            remove(topo.ns(me), [f"hb_from_{peer}", f"hb_to_{peer}"])


def drop_heartbeats(topo: Topology, sender: str, receiver: str, port: int) -> None:
    """Asymmetric loss: ``receiver`` no longer gets heartbeats from ``sender``; the
    other direction still works."""
    _pairs(topo, sender, receiver)
    addrs = [i.address for i in topo.host(sender).ifaces]
    install(topo.ns(receiver), hb_chains(sender, addrs, port, outbound=False))


def restore_heartbeats(topo: Topology, sender: str, receiver: str) -> None:
    _pairs(topo, sender, receiver)
    remove(topo.ns(receiver), [f"hb_from_{sender}"])


def isolate(topo: Topology, host: str) -> None:
    """Every link of ``host`` down: cut from everything, as a pulled cable."""
    set_links(topo, topo.host(host), up=False)


def reconnect(topo: Topology, host: str) -> None:
    set_links(topo, topo.host(host), up=True)


def clear(topo: Topology) -> None:
    """Remove every fault: our nft tables everywhere, all links up."""
    for host in topo.hosts:
        ns = topo.ns(host.name)
        netns.run_in(ns, "nft", "delete", "table", FAMILY, TABLE, check=False)
        set_links(topo, host, up=True)


def active(topo: Topology) -> dict[str, list[str]]:
    """{host: [fault chains, and "links down" if so]} for hosts with any fault."""
    out: dict[str, list[str]] = {}
    for host in topo.hosts:
        if not netns.exists(topo.ns(host.name)):
            continue
        found = chains(topo.ns(host.name))
        if not links_up(topo, host):
            found.append("links down")
        if found:
            out[host.name] = found
    return out
