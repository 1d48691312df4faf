"""Kernel traffic per virtual service and per real server, read at scrape time.

One read of the kernel's counters per scrape at most, cached :data:`CACHE` seconds, or
:data:`SPREAD` times as long as the read took (a read of 3 s at 40,000 real servers is then
reused for 15 s: at most a sixth of a core, whoever scrapes): IPVS over netlink (one service
dump and one real-server dump per service), nftables from counters on set elements
(agent/dataplane/nft/traffic.py). Labelled with the names of lvs.cf.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from cluster.model import LvsConfig

from ..dataplane.desired import FORWARDING, dest_port, service_key
from ..dataplane.stats import Counters, ServiceTraffic, Traffic
from ..dataplane.table import DestKey, ServiceKey
from .families import counters, gauges

if TYPE_CHECKING:
    from ..pulse import Pulse

log = logging.getLogger(__name__)
CACHE = 1.0
SPREAD = 5.0
#: (series suffix, Traffic field, help)
COUNTERS = (
    ("connections", "connections", "connections scheduled"),
    ("packets_in", "packets_in", "packets from clients"),
    ("packets_out", "packets_out", "packets to clients"),
    ("bytes_in", "bytes_in", "bytes from clients"),
    ("bytes_out", "bytes_out", "bytes to clients"),
)


class TrafficCache:
    """The newest kernel read, kept :data:`CACHE` seconds; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._keep = CACHE
        self._value: Counters | None = None
        self._servers = True  # the value has the real servers' counters
        self.errors = 0

    def get(self, backend: object, *, servers: bool = True) -> Counters | None:
        """The counters, read again if stale; ``servers=False``: the services' totals are
        enough (no series per real server), and only they are kept."""
        read = getattr(backend, "traffic", None)
        if read is None:
            return None
        with self._lock:
            now = self._clock()
            if now - self._at >= self._keep or (servers and not self._servers):
                self._value = None  # gone before the next is read: one read held at a time
                self._servers = servers
                try:
                    value = read(servers=servers)
                    if not servers:  # (whatever the backend gave)
                        value = {key: ServiceTraffic(st.total) for key, st in value.items()}
                    self._value = value
                except Exception as exc:  # a scrape must not fail for it: counted, logged
                    self.errors += 1
                    self._value = None
                    log.warning("cannot read the kernel's traffic counters: %s", exc)
                # a failed read backs off as long as a slow one (it timed out, say: at
                # 100,000 real servers nft's listing of the sets kept starting over)
                self._keep = max(CACHE, SPREAD * (self._clock() - now))
                self._at = now
            return self._value


def names(cfg: LvsConfig, *, servers: bool = True,
          ) -> tuple[dict[ServiceKey, str], dict[tuple[ServiceKey, DestKey], str]]:
    """Which virtual each kernel service is, and (``servers``) which real server each
    destination (the first configured one where several share an address and port)."""
    forward = FORWARDING[cfg.network]
    virtuals: dict[ServiceKey, str] = {}
    named: dict[tuple[ServiceKey, DestKey], str] = {}
    for virtual in cfg.virtuals:
        key = service_key(virtual)
        virtuals.setdefault(key, virtual.name)
        for server in virtual.servers if servers else ():
            dest = DestKey(str(server.address), dest_port(virtual, server, forward))
            named.setdefault((key, dest), server.name)
    return virtuals, named


def collect(p: Pulse, cache: TrafficCache | None = None) -> Iterator[object]:
    cache = cache or _CACHE
    if p.config is None or p.dataplane.backend is None:
        return
    from .health import per_server_series

    per_server = per_server_series(p)
    read = cache.get(p.dataplane.backend, servers=per_server)
    if read is None:
        return
    yield from families(read, p.config, per_server=per_server)


def families(read: Counters, cfg: LvsConfig, *, per_server: bool = True) -> Iterator[object]:
    """The ``lvs_virtual_*`` and ``lvs_real_server_*`` traffic families of one read."""
    virtuals, servers = names(cfg, servers=per_server)  # (40,000 names: only if shown)
    vrows: list[tuple[str, Traffic]] = []
    srows: list[tuple[str, str, Traffic]] = []
    for key, st in sorted(read.items()):
        virtual = virtuals.get(key)
        if virtual is None:
            continue  # not ours (another IPVS user), or a leftover about to go
        vrows.append((virtual, st.total))
        for dest, t in sorted(st.dests.items()) if per_server else ():
            server = servers.get((key, dest))
            if server is not None:
                srows.append((virtual, server, t))
    yield from _families("lvs_virtual", "virtual service", ["virtual"],
                         [([v], t) for v, t in vrows])
    if not per_server:
        return
    yield from _families("lvs_real_server", "real server", ["virtual", "server"],
                         [([v, s], t) for v, s, t in srows])
    for field, what in (("active", "established"), ("inactive", "not established")):
        rows = [([v, s], getattr(t, field)) for v, s, t in srows
                if getattr(t, field) is not None]
        if rows:
            yield gauges(f"lvs_real_server_{field}_connections",
                         f"connections {what} now (IPVS)", ["virtual", "server"], rows)


def _families(prefix: str, what: str, labels: list[str],
              rows: list[tuple[list[str], Traffic]]) -> Iterator[object]:
    for suffix, field, doc in COUNTERS:
        samples = [(values, getattr(t, field)) for values, t in rows
                   if getattr(t, field) is not None]
        if samples or not rows:
            yield counters(f"{prefix}_{suffix}", f"{doc}, per {what} (kernel)", labels,
                           samples)


_CACHE = TrafficCache()
