"""The data plane as plain values: what a backend holds or should hold, and the diff between.

Both backends (IPVS, nftables) read the kernel into a :data:`Table` and apply a list of
:data:`Op` computed by :func:`diff`. Nothing here touches the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Protocol = Literal["tcp", "udp", "fwmark"]
Forward = Literal["masq", "route", "tunnel"]


@dataclass(frozen=True, order=True, slots=True)
class ServiceKey:
    """Identity of a virtual service: (protocol, address, port) or a firewall mark."""

    protocol: Protocol
    address: str = ""  # IPv4 or IPv6 text form; "" for fwmark services
    port: int = 0  # 0 for fwmark services (and for IPVS "all ports" persistence)
    fwmark: int = 0
    family: int = 4  # 4 or 6

    def __str__(self) -> str:
        if self.protocol == "fwmark":
            return f"fwmark:{self.fwmark}/ipv{self.family}"
        host = f"[{self.address}]" if self.family == 6 else self.address
        return f"{self.protocol}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Maglev:
    """What a Maglev (``mh``) table is computed from besides the live real servers
    (agent/dataplane/maglev.py): the same on every router, so every router computes the
    same table. The nftables backend programs it; IPVS's mh has its own (fixed) ones."""

    size: int  # table size, a prime (maglev.table_size of the configured servers)
    seed: int  # the cluster's hash seed, 0..2**32-1
    base: tuple[tuple[DestKey, int], ...] = ()  # configured real servers, weights; sorted


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What can change on a service without re-creating it."""

    scheduler: str = "wlc"
    persistent: int = 0  # persistence timeout in seconds; 0 = off
    netmask: str = "255.255.255.255"  # persistence granularity (pmask); IPv6: prefix length
    flags: frozenset[str] = frozenset()  # scheduler flags (ipvsadm -b): mh-fallback, mh-port
    maglev: Maglev | None = None  # mh: its table's inputs (None: IPVS, or not mh)


@dataclass(frozen=True, order=True, slots=True)
class DestKey:
    """Identity of a real server inside a service."""

    address: str
    port: int


@dataclass(frozen=True, slots=True)
class DestSpec:
    """What can change on a real server without re-creating it."""

    weight: int = 1
    forward: Forward = "masq"


@dataclass(frozen=True, slots=True)
class Service:
    """One virtual service with its real servers."""

    spec: ServiceSpec = field(default_factory=ServiceSpec)
    dests: Mapping[DestKey, DestSpec] = field(default_factory=dict)


Table = Mapping[ServiceKey, Service]


@dataclass(frozen=True, slots=True)
class AddService:
    key: ServiceKey
    spec: ServiceSpec


@dataclass(frozen=True, slots=True)
class EditService:
    key: ServiceKey
    spec: ServiceSpec


@dataclass(frozen=True, slots=True)
class DelService:
    key: ServiceKey


@dataclass(frozen=True, slots=True)
class AddDest:
    service: ServiceKey
    key: DestKey
    spec: DestSpec


@dataclass(frozen=True, slots=True)
class EditDest:
    service: ServiceKey
    key: DestKey
    spec: DestSpec


@dataclass(frozen=True, slots=True)
class DelDest:
    service: ServiceKey
    key: DestKey


Op = AddService | EditService | DelService | AddDest | EditDest | DelDest


def diff(have: Table, want: Table) -> list[Op]:
    """Return the minimal ordered changes that turn ``have`` into ``want``.

    Order: real servers leave before services are deleted or edited, services are added
    before their real servers. A service that is deleted takes its real servers with it,
    so no ``DelDest`` is emitted for them. A real server whose forwarding method changes
    is edited in place (IPVS allows it), never removed and re-added.
    """
    ops: list[Op] = []
    for key in sorted(have.keys() - want.keys()):
        ops.append(DelService(key))
    # (the data plane keeps unchanged services as the same objects: DesiredTables)
    for key in sorted(k for k in have.keys() & want.keys() if have[k] is not want[k]):
        old, new = have[key], want[key]
        for dkey in sorted(old.dests.keys() - new.dests.keys()):
            ops.append(DelDest(key, dkey))
        if old.spec != new.spec:
            ops.append(EditService(key, new.spec))
        for dkey in sorted(old.dests.keys() & new.dests.keys()):
            if old.dests[dkey] != new.dests[dkey]:
                ops.append(EditDest(key, dkey, new.dests[dkey]))
        for dkey in sorted(new.dests.keys() - old.dests.keys()):
            ops.append(AddDest(key, dkey, new.dests[dkey]))
    for key in sorted(want.keys() - have.keys()):
        new = want[key]
        ops.append(AddService(key, new.spec))
        for dkey in sorted(new.dests):
            ops.append(AddDest(key, dkey, new.dests[dkey]))
    return ops
