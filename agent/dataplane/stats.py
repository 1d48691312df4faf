"""Kernel traffic counters as plain values, whichever backend read them (metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.dataplane.table import DestKey, ServiceKey


@dataclass(frozen=True, slots=True)
class Traffic:
    """Counters of one virtual service or real server since the kernel created it. None:
    the backend has no such counter (nftables: active/inactive connections)."""

    connections: int = 0
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int | None = None
    bytes_out: int | None = None
    active: int | None = None  # IPVS only: connections established now
    inactive: int | None = None  # IPVS only: other connections in its table


@dataclass(frozen=True, slots=True)
class ServiceTraffic:
    """A virtual service's counters and those of each of its real servers."""

    total: Traffic
    dests: Mapping[DestKey, Traffic] = field(default_factory=dict)


Counters = Mapping[ServiceKey, ServiceTraffic]
