"""conntrackd's configuration, derived from lvs.cf. Pure: no I/O.

``syncdaemon = 1`` turns connection sync on for both data planes: the IPVS sync daemon with
IPVS, conntrackd with nftables (docs/conntrack-sync.md). conntrackd then runs on every
router of the config in FTFW mode (reliable: sequence numbers, acknowledgements,
retransmission) over the routers' sync link: the routers' ``private`` addresses if every
router has one, else their public ``address``.

FTFW is a protocol between two nodes: a receiver tracks one sequence of message numbers per
link and drops a message numbered below the last one it saw ("Packets before"). With three
routers on one multicast group the numbers of two senders interleave and a backup loses
states for good (measured: 999 of 1,000 entries). So each router runs one conntrackd per
peer, each talking unicast UDP to that peer only: a mesh of pairs. The pair of the i-th and
j-th router (config order) uses port ``3780 + syncd_id + 256 * k``, k the pair's index, so
clusters sharing a link are kept apart by ``syncd_id`` as with the IPVS sync daemon. Two
routers: one pair, port 3780 + syncd_id.

Only connections of this config are synced: the address filter accepts the networks of the
VIPs, the real servers and the sorry servers (conntrackd matches a connection's original
source and its reply source: NAT replies come from the real server, direct-routing replies
from the VIP), the protocol filter the protocols of the virtual services. Networks, not
addresses: each address's /24 (IPv6: /64), less every router's own addresses. conntrackd
reads its filter only at start, so a filter naming each real server would restart every
router's conntrackd (and resync its whole table) at each push that adds or removes one; a
new server in a network already covered changes nothing. The routers' own addresses are cut
out so traffic between routers (heartbeats, etcd, conntrackd's own sync) is never synced.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from itertools import combinations
from pathlib import Path

from cluster.model import LvsConfig, Router

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
FILTER_PREFIX = {4: 24, 6: 64}  # the network of a VIP or real server the filter accepts

BASE_PORT = 3780
PAIR_STRIDE = 256  # ports between two pairs (syncd_id is 0-255)
SOCKET_BUFFER = 1249280  # conntrackd's recommended size (its example config)
FWMARK_PROTOCOLS = ("tcp", "udp", "sctp")  # a fwmark service may carry any of them
PURGE_TIMEOUT = 60  # seconds: entries left on a demoted router expire after this (-t)
#: conntrackd's netlink event buffer: a limit, not an allocation (the kernel charges only
#: the events queued). 32 MiB holds a burst of 100,000 new connections; the 2 MiB of
#: conntrackd's example overran at that burst, lost the events and waited the 30 s of
#: ``NetlinkOverrunResync on`` for a full dump (docs/benchmarks.md, "Connection state sync").
NETLINK_BUFFER = 32 * 1024 * 1024
NETLINK_BUFFER_MAX = 128 * 1024 * 1024  # grown to on an overrun
NETLINK_OVERRUN_RESYNC = 5  # seconds from an overrun to the dump that recovers the events


class SyncConfigError(ValueError):
    """The config asks for connection sync but cannot have it (the message says why)."""


@dataclass(frozen=True)
class SyncSettings:
    """One conntrackd: this router and one peer, decided."""

    node: str
    peer_name: str
    local: IPAddress  # our address on the sync link
    peer: IPAddress  # the peer's address on it
    interface: str  # the link holding ``local``
    port: int
    protocols: tuple[str, ...]  # lower case: tcp, udp, sctp
    addresses: tuple[IPNetwork, ...]  # the filter: networks of VIPs and servers
    state_dir: Path  # control socket and lock file live here (one directory per peer)
    hash_limit: int = 524288  # 2 x nf_conntrack_max (conntrackd's advice)
    external_cache: bool = True  # False: inject into the kernel as states arrive

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "conntrackd.ctl"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "conntrackd.lock"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "conntrackd.conf"


def wanted(cfg: LvsConfig) -> bool:
    """Whether this config asks for connection sync (``syncdaemon = 1`` on an LVS config)."""
    return cfg.syncdaemon and cfg.service == "lvs"


def sync_routers(cfg: LvsConfig) -> tuple[Router, ...]:
    """The routers that take part: every active router block (or primary/backup)."""
    return tuple(r for r in cfg.effective_routers() if r.active)


def sync_address(router: Router, use_private: bool) -> IPAddress:
    return router.private if use_private and router.private is not None else router.address


def local_address(cfg: LvsConfig, node: str) -> IPAddress | None:
    """Our address on the sync link; None when there is nothing to sync with (sync off, or
    no other router). SyncConfigError if ``node`` is not a router of the config."""
    if not wanted(cfg):
        return None
    routers = cfg.effective_routers()
    me = next((r for r in routers if r.name == node), None)
    if me is None:
        raise SyncConfigError(f"connection sync: {node!r} is not a router of the config")
    peers = [r for r in sync_routers(cfg) if r.name != node]
    if not peers:
        return None
    use_private = all(r.private is not None for r in (me, *peers))
    return sync_address(me, use_private)


def pair_ports(cfg: LvsConfig) -> dict[frozenset[str], int]:
    """The UDP port of every pair of routers (both ends use it)."""
    names = [r.name for r in sync_routers(cfg)]
    ports = {frozenset(pair): BASE_PORT + cfg.syncd_id + PAIR_STRIDE * k
             for k, pair in enumerate(combinations(names, 2))}
    if ports and max(ports.values()) > 65535:
        raise SyncConfigError(f"connection sync: {len(names)} routers need "
                              f"{len(ports)} conntrackd pairs, more ports than there are")
    return ports


def settings(cfg: LvsConfig, node: str, *, interface: str, state_dir: Path,
             hash_limit: int = 524288, external_cache: bool = True,
             ) -> tuple[SyncSettings, ...]:
    """One conntrackd per peer on ``node`` (empty when there is nothing to sync).

    ``interface``: the link that holds :func:`local_address` (found by the caller);
    ``state_dir``: each peer's files go in ``state_dir/<peer>/``.
    """
    local = local_address(cfg, node)
    addresses = filter_addresses(cfg)
    me = next((r for r in cfg.effective_routers() if r.name == node), None)
    if local is None or not addresses or me is None or not me.active:
        return ()  # (a router not in use takes no part: its peers do not count it)
    others = [r for r in sync_routers(cfg) if r.name != node]
    use_private = all(r.private is not None for r in (me, *others))
    if any(sync_address(r, use_private).version != local.version for r in others):
        raise SyncConfigError("connection sync: the routers' sync addresses mix IPv4 and "
                              "IPv6")
    ports = pair_ports(cfg)
    protocols = filter_protocols(cfg)
    return tuple(
        SyncSettings(node=node, peer_name=r.name, local=local,
                     peer=sync_address(r, use_private), interface=interface,
                     port=ports[frozenset((node, r.name))], protocols=protocols,
                     addresses=addresses, state_dir=state_dir / r.name,
                     hash_limit=hash_limit, external_cache=external_cache)
        for r in others)


def filter_protocols(cfg: LvsConfig) -> tuple[str, ...]:
    """The layer-4 protocols of the virtual services (every one a fwmark may carry)."""
    found: set[str] = set()
    for v in cfg.virtuals:
        found.update(FWMARK_PROTOCOLS if v.fwmark is not None else (v.protocol,))
    return tuple(p for p in FWMARK_PROTOCOLS if p in found)


def filter_addresses(cfg: LvsConfig) -> tuple[IPNetwork, ...]:
    """The networks the filter accepts, sorted: the /24 (/64) of every VIP, real server and
    sorry server, less the routers' own addresses (the largest blocks that hold none)."""
    found: set[IPAddress] = set()
    for v in cfg.virtuals:
        found.add(v.address.ip)
        found.update(s.address for s in v.servers)
        if v.sorry_server is not None:
            found.add(v.sorry_server)
    nets = {ip_network(f"{a}/{FILTER_PREFIX[a.version]}", strict=False) for a in found}
    routers = {a for r in cfg.effective_routers() for a in (r.address, r.private)
               if a is not None}
    out: list[IPNetwork] = []
    for net in nets:
        blocks = [net]
        for r in routers:
            blocks = [piece for b in blocks
                      for piece in (b.address_exclude(ip_network(r)) if r in b else (b,))]
        out += blocks
    return tuple(sorted(out, key=lambda n: (n.version, int(n.network_address),
                                            n.prefixlen)))


def _ip_key(address: IPAddress, what: str) -> str:
    return f"IPv{address.version}_{what}"


def render(s: SyncSettings) -> str:
    """conntrackd.conf text for ``s``."""
    ftfw = [
        "        ResendQueueSize 131072",
        f"        PurgeTimeout {PURGE_TIMEOUT}",
        "        StartupResync yes",
        f"        DisableExternalCache {'no' if s.external_cache else 'yes'}",
    ]
    link = [
        "    UDP {",
        f"        {_ip_key(s.local, 'address')} {s.local}",
        f"        {_ip_key(s.peer, 'Destination_Address')} {s.peer}",
        f"        Port {s.port}",
    ]
    link += [
        f"        Interface {s.interface}",
        f"        SndSocketBuffer {SOCKET_BUFFER}",
        f"        RcvSocketBuffer {SOCKET_BUFFER}",
        "        Checksum on",
        "    }",
    ]
    protocols = [f"            {p.upper()}" for p in s.protocols]
    addresses = [f"            {_ip_key(a.network_address, 'address')} "
                 f"{a.network_address if a.num_addresses == 1 else a}" for a in s.addresses]
    lines = [
        f"# conntrackd.conf of router {s.node}, peer {s.peer_name}: generated by pulse "
        "from lvs.cf; do not edit",
        "Sync {",
        "    Mode FTFW {",
        *ftfw,
        "    }",
        *link,
        "}",
        "General {",
        "    HashSize 32768",
        f"    HashLimit {s.hash_limit}",
        "    LogFile off",
        "    Syslog off",
        f"    LockFile {s.lock_path}",
        "    UNIX {",
        f"        Path {s.socket_path}",
        "    }",
        f"    NetlinkBufferSize {NETLINK_BUFFER}",
        f"    NetlinkBufferSizeMaxGrowth {NETLINK_BUFFER_MAX}",
        f"    NetlinkOverrunResync {NETLINK_OVERRUN_RESYNC}",
        "    Filter From Userspace {",
        "        Protocol Accept {",
        *protocols,
        "        }",
        "        Address Accept {",
        *addresses,
        "        }",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)
