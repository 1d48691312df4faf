"""The lab's hosts, networks and addresses: a pure description, saved in state.json.

Two LANs, each a bridge in its own namespace: ``public`` (etcd, routers' eth0, client)
and ``private`` (routers' eth1, real servers). Addresses are offsets in each subnet:

    public   .1 host link   .2.. etcd members   .11.. routers   .21.. real servers (direct)
             .50 client   .100 VIP
    private  .11.. routers   .21.. real servers   .254 nat_router (real servers' gateway)

``network`` is the forwarding the lab is built for: ``nat`` (the real servers' default
route is nat_router, held by the active router) or ``direct`` (direct routing: each real
server also sits on the public LAN, holds the VIP on ``lo`` without answering ARP for it,
and answers the client directly).

``etcd_members`` (1, 3 or 5) is the size of the lab's etcd cluster, each member a host of
its own: ``etcd1``..``etcdN`` at .2, .3, ... A one-member lab calls its member ``etcd``
(at .2), as labs did before there were clusters, so older state files still describe it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from .netns import LabError

PUBLIC, PRIVATE = "public", "private"
DEFAULT_PREFIX = "lab"
DEFAULT_PUBLIC = "10.77.0.0/24"
DEFAULT_CLUSTER = "default"
ETCD_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_MEMBERS = (1, 3, 5)
METRICS_PORT = 9100
MAX_ROUTERS = 9
MAX_SERVERS = 29
HOST_IF = "host"  # the root namespace's veth is "<prefix>-host"

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
# The namespaces a lab of a prefix may own: nothing else is touched by ``down``.
HOST_RE = r"(etcd\d*|client|public|private|r\d+|rs\d+)"

_OFFSETS = {"etcd": 2, "client": 50, "vip": 100, "host": 1, "gateway": 254}
NETWORKS = ("nat", "direct")


@dataclass(frozen=True)
class Iface:
    """One interface of a host: its name inside the host, its LAN and address."""

    name: str
    lan: str
    address: str


@dataclass(frozen=True)
class Host:
    name: str
    role: str  # etcd | router | server | client
    ifaces: tuple[Iface, ...]
    gateway: str | None = None

    def address(self, lan: str | None = None) -> str:
        """The host's address on ``lan`` (default: its first interface's)."""
        for iface in self.ifaces:
            if lan in (None, iface.lan):
                return iface.address
        raise LabError(f"{self.name} has no address on the {lan} LAN")


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix):
        raise LabError(f"bad lab prefix {prefix!r}: use 1-10 lowercase letters/digits, "
                       "starting with a letter")
    return prefix


def _subnet(text: str, what: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise LabError(f"bad {what} subnet {text!r}: {exc}") from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 24:
        raise LabError(f"bad {what} subnet {text!r}: need an IPv4 network of /24 or larger")
    return net


def next_subnet(public: str) -> str:
    """The /24 right after ``public``'s first /24: the default private LAN."""
    net = _subnet(public, "public")
    return str(ipaddress.ip_network(f"{net.network_address + 256}/24"))


@dataclass(frozen=True)
class Topology:
    """What a lab is made of; everything else (names, addresses) is derived."""

    prefix: str = DEFAULT_PREFIX
    public: str = DEFAULT_PUBLIC
    private: str = ""  # "" means next_subnet(public)
    routers: int = 3
    servers: int = 2
    host_link: bool = False
    cluster: str = DEFAULT_CLUSTER
    network: str = "nat"  # nat | direct
    etcd_members: int = 1  # 1 | 3 | 5 (a state file without it: 1, the lab of old)

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if self.etcd_members not in ETCD_MEMBERS or isinstance(self.etcd_members, bool):
            raise LabError(f"etcd members must be 1, 3 or 5 (an odd number, so that a "
                           f"majority survives a failure), not {self.etcd_members!r}")
        if self.network not in NETWORKS:
            raise LabError(f"lab network must be {' or '.join(NETWORKS)}, not {self.network!r}")
        if not self.private:
            object.__setattr__(self, "private", next_subnet(self.public))
        pub, priv = _subnet(self.public, "public"), _subnet(self.private, "private")
        if pub.overlaps(priv):
            raise LabError(f"public {pub} and private {priv} subnets overlap")
        if not 1 <= self.routers <= MAX_ROUTERS:
            raise LabError(f"routers must be 1..{MAX_ROUTERS}, not {self.routers}")
        if not 1 <= self.servers <= MAX_SERVERS:
            raise LabError(f"real servers must be 1..{MAX_SERVERS}, not {self.servers}")

    # addresses

    def _ip(self, lan: str, offset: int) -> str:
        net = ipaddress.ip_network(self.public if lan == PUBLIC else self.private)
        return str(net.network_address + offset)

    def netmask(self, lan: str) -> str:
        return str(ipaddress.ip_network(self.public if lan == PUBLIC else self.private).netmask)

    def prefixlen(self, lan: str) -> int:
        return ipaddress.ip_network(self.public if lan == PUBLIC else self.private).prefixlen

    @property
    def etcd_names(self) -> list[str]:
        """The etcd members' host names: ``etcd`` alone, or ``etcd1``..``etcdN``."""
        if self.etcd_members == 1:
            return ["etcd"]
        return [f"etcd{i}" for i in range(1, self.etcd_members + 1)]

    def etcd_member_ip(self, member: str) -> str:
        return self._ip(PUBLIC, _OFFSETS["etcd"] + self._etcd_index(member))

    def etcd_member_url(self, member: str) -> str:
        """The client URL of one member."""
        return f"http://{self.etcd_member_ip(member)}:{ETCD_PORT}"

    def etcd_peer_url(self, member: str) -> str:
        return f"http://{self.etcd_member_ip(member)}:{ETCD_PEER_PORT}"

    @property
    def etcd_ips(self) -> list[str]:
        return [self.etcd_member_ip(m) for m in self.etcd_names]

    @property
    def etcd_urls(self) -> list[str]:
        """Every member's client URL."""
        return [self.etcd_member_url(m) for m in self.etcd_names]

    @property
    def etcd_endpoints(self) -> str:
        """Every member's client URL, comma-separated: the value of ``pulse --etcd``,
        ``lvsctl --etcd`` and ``etcdctl --endpoints``."""
        return ",".join(self.etcd_urls)

    @property
    def etcd_url(self) -> str:
        """The same as :attr:`etcd_endpoints` (for callers written before etcd clusters)."""
        return self.etcd_endpoints

    @property
    def etcd_initial_cluster(self) -> str:
        """``--initial-cluster`` of every member: ``name=peer URL,...``."""
        return ",".join(f"{m}={self.etcd_peer_url(m)}" for m in self.etcd_names)

    def _etcd_index(self, member: str) -> int:
        try:
            return self.etcd_names.index(member)
        except ValueError:
            raise LabError(f"{member!r} is not an etcd member of lab {self.prefix} "
                           f"(members: {', '.join(self.etcd_names)})") from None

    @property
    def vip(self) -> str:
        return self._ip(PUBLIC, _OFFSETS["vip"])

    @property
    def gateway(self) -> str:
        """The nat_router address: the real servers' default gateway, held by the active router."""
        return self._ip(PRIVATE, _OFFSETS["gateway"])

    @property
    def host_ip(self) -> str:
        return self._ip(PUBLIC, _OFFSETS["host"])

    # names

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def bridge_ns(self, lan: str) -> str:
        return f"{self.prefix}-{lan}"

    @property
    def host_veth(self) -> str:
        return f"{self.prefix}-{HOST_IF}"

    @property
    def router_names(self) -> list[str]:
        return [f"r{i}" for i in range(1, self.routers + 1)]

    @property
    def server_names(self) -> list[str]:
        return [f"rs{i}" for i in range(1, self.servers + 1)]

    @property
    def hosts(self) -> tuple[Host, ...]:
        out = [Host(m, "etcd", (Iface("eth0", PUBLIC, self.etcd_member_ip(m)),))
               for m in self.etcd_names]
        for i, name in enumerate(self.router_names, 1):
            out.append(Host(name, "router", (Iface("eth0", PUBLIC, self._ip(PUBLIC, 10 + i)),
                                             Iface("eth1", PRIVATE, self._ip(PRIVATE, 10 + i)))))
        for i, name in enumerate(self.server_names, 1):
            private = Iface("eth0", PRIVATE, self._ip(PRIVATE, 20 + i))
            if self.network == "direct":  # answers the client itself, on the public LAN
                public = Iface("eth1", PUBLIC, self._ip(PUBLIC, 20 + i))
                out.append(Host(name, "server", (private, public)))
            else:
                out.append(Host(name, "server", (private,), gateway=self.gateway))
        out.append(Host("client", "client",
                        (Iface("eth0", PUBLIC, self._ip(PUBLIC, _OFFSETS["client"])),)))
        return tuple(out)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts)
        raise LabError(f"no host {name!r} in lab {self.prefix} (hosts: {known})")

    def to_json(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "public": self.public, "private": self.private,
                "routers": self.routers, "servers": self.servers,
                "host_link": self.host_link, "cluster": self.cluster, "network": self.network,
                "etcd_members": self.etcd_members}

    @classmethod
    def from_json(cls, doc: Any) -> Topology:
        if not isinstance(doc, dict):
            raise LabError("topology in state file is not an object")
        try:
            return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})
        except TypeError as exc:
            raise LabError(f"bad topology in state file: {exc}") from None
