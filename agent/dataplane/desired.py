"""What the data plane should hold, from the config, the health checks and admin overrides.

Pure functions, no I/O: Piranha's ``lvs`` (which virtual services exist, how they forward)
and ``nanny`` (which real servers get traffic, at what weight) as one function,
:func:`desired_table`. The rules are in docs/dataplane.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from agent.dataplane import maglev
from agent.dataplane.table import (
    DestKey,
    DestSpec,
    Forward,
    Maglev,
    Service,
    ServiceKey,
    ServiceSpec,
)
from cluster.health import NOT_CHECKED, Health, ServerKey
from cluster.model import LvsConfig, Server, Virtual

AdminState = Literal["drain", "disable"]
SyncRole = Literal["master", "backup"]

ADMIN_STATES: tuple[str, ...] = ("drain", "disable")
FORWARDING: Mapping[str, Forward] = {"nat": "masq", "direct": "route", "tunnel": "tunnel"}
MAX_WEIGHT = 65535
HOST_MASK = {4: "255.255.255.255", 6: "128"}


def desired_table(
    cfg: LvsConfig,
    health: Mapping[ServerKey, Health],
    admin: Mapping[ServerKey, str],
    seed: int = 0,
) -> dict[ServiceKey, Service]:
    """The virtual services this router should program, with their real servers.

    ``health`` and ``admin`` are keyed by :class:`ServerKey` (virtual, server); a server missing
    from ``health`` has never been checked ("unknown": not serving). ``admin`` values are
    "drain" or "disable" (ValueError for anything else: validate where they come from).
    ``seed``: the cluster's hash seed (``mh`` tables; cluster.documents.HashSeed).
    """
    if cfg.service != "lvs":
        return {}
    forward = FORWARDING[cfg.network]
    table: dict[ServiceKey, Service] = {}
    for virtual in cfg.virtuals:
        if virtual.active:
            dests = virtual_dests(virtual, forward, health, admin)
            table[service_key(virtual)] = Service(service_spec(virtual, forward, seed), dests)
    return table


class DesiredTables:
    """:func:`desired_table`, recomputed only for the virtuals whose inputs changed.

    A virtual's inputs are the health and admin entries of its servers (compared by
    identity first: the health core keeps an entry's object until it changes), the
    forwarding method and the seed; a new config starts afresh. An unchanged virtual keeps
    its :class:`Service` object, so the reconciler's diff skips it by identity: one health
    change among 40,000 real servers costs milliseconds, not the 0.3 s of a full rebuild.
    """

    def __init__(self) -> None:
        self._cfg: LvsConfig | None = None
        self._refs: dict[str, tuple[ServerKey, ...]] = {}
        self._memo: dict[str, tuple[object, tuple[tuple[object, ...], tuple[object, ...] | None],
                                    ServiceKey, Service]] = {}

    def table(self, cfg: LvsConfig, health: Mapping[ServerKey, Health],
              admin: Mapping[ServerKey, str], seed: int = 0) -> dict[ServiceKey, Service]:
        """The same table :func:`desired_table` returns (ValueError the same way)."""
        if cfg is not self._cfg:
            self._cfg, self._memo = cfg, {}
            self._refs = {v.name: tuple(ServerKey(v.name, s.name) for s in v.servers)
                          for v in cfg.virtuals}
        if cfg.service != "lvs":
            return {}
        forward = FORWARDING[cfg.network]
        table: dict[ServiceKey, Service] = {}
        memo: dict[str, tuple[object, tuple[tuple[object, ...], tuple[object, ...] | None],
                              ServiceKey, Service]] = {}
        for virtual in cfg.virtuals:
            if not virtual.active:
                continue
            refs = self._refs[virtual.name]
            inputs = (tuple(map(health.get, refs)),
                      tuple(map(admin.get, refs)) if admin else None)
            old = self._memo.get(virtual.name)
            # (tuples compare item by item, identity first: C speed)
            if old is not None and old[0] == seed and old[1][0] == inputs[0] \
                    and _no_change(old[1][1], inputs[1]):
                entry = old
            else:
                dests = virtual_dests(virtual, forward, health, admin)
                entry = (seed, inputs, service_key(virtual),
                         Service(service_spec(virtual, forward, seed), dests))
            memo[virtual.name] = entry
            table[entry[2]] = entry[3]
        self._memo = memo
        return table


def _no_change(was: tuple[object, ...] | None, now: tuple[object, ...] | None) -> bool:
    """The admin flags of a virtual's servers are the same (None: no flags anywhere)."""
    return was == now or (not any(was or ()) and not any(now or ()))


def service_key(virtual: Virtual) -> ServiceKey:
    """fwmark services are keyed by mark and the VIP's family, others by proto, VIP, port."""
    ip = virtual.address.ip
    if virtual.fwmark is not None:
        return ServiceKey("fwmark", fwmark=virtual.fwmark, family=ip.version)
    return ServiceKey(virtual.protocol, str(ip), virtual.port, family=ip.version)


def service_spec(virtual: Virtual, forward: Forward = "masq", seed: int = 0) -> ServiceSpec:
    """Scheduler, persistence and its netmask (pmask; the host mask when not given), the
    scheduler flags, and for ``mh`` what its Maglev table is computed from."""
    mask = HOST_MASK[virtual.address.ip.version]
    if virtual.pmask is not None:
        mask = str(virtual.pmask)
    table = maglev_spec(virtual, forward, seed) if virtual.scheduler == "mh" else None
    return ServiceSpec(virtual.scheduler, virtual.persistent, mask, virtual.sched_flags, table)


def maglev_spec(virtual: Virtual, forward: Forward, seed: int) -> Maglev:
    """An ``mh`` virtual's Maglev inputs: the table size from its configured (active) real
    servers, the seed, and those servers with their configured weights, merged by
    address:port as :func:`virtual_dests` merges them. Health and admin flags play no part:
    they change the live weights, never the base (docs/nftables-backend.md, "Maglev")."""
    base: dict[DestKey, int] = {}
    for server in virtual.servers:
        if server.active:
            key = DestKey(str(server.address), dest_port(virtual, server, forward))
            base[key] = min(base.get(key, 0) + server.weight, MAX_WEIGHT)
    positive = tuple(sorted((key, w) for key, w in base.items() if w > 0))
    return Maglev(maglev.table_size(len(base)), maglev.check_seed(seed), positive)


def dest_port(virtual: Virtual, server: Server, forward: Forward) -> int:
    """The port a real server is programmed with.

    fwmark: 0 (the packet keeps its own port; a mark usually groups several ports).
    Direct routing and tunnel cannot change the port: the virtual's port (as ipvsadm
    does). NAT: the server's own port, else the virtual's.
    """
    if virtual.fwmark is not None:
        return 0
    if forward != "masq":
        return virtual.port
    return virtual.effective_port(server)


def server_weight(
    virtual: Virtual, server: Server, health: Health, admin: str | None
) -> int | None:
    """The weight of one active server in its virtual; None = not programmed at all."""
    if admin == "disable":
        return None
    if admin == "drain":
        return 0
    if admin is not None:
        raise ValueError(
            f"admin state of {virtual.name}/{server.name} must be drain or disable, "
            f"not {admin!r}"
        )
    if health.state == "up":
        weight = health.weight if health.weight is not None else server.weight
        return min(max(weight, 0), MAX_WEIGHT)
    return 0 if virtual.quiesce_server else None


def virtual_dests(
    virtual: Virtual,
    forward: Forward,
    health: Mapping[ServerKey, Health],
    admin: Mapping[ServerKey, str],
) -> dict[DestKey, DestSpec]:
    """The real servers of one virtual, merged by address:port, with the sorry server.

    Servers that land on the same address:port are one destination whose weight is the
    sum of their weights (capped); it is removed only when all of them are.
    """
    merged: dict[DestKey, int] = {}
    for server in virtual.servers:
        if not server.active:
            continue
        ref = ServerKey(virtual.name, server.name)
        weight = server_weight(virtual, server, health.get(ref, NOT_CHECKED), admin.get(ref))
        if weight is None:
            continue
        key = DestKey(str(server.address), dest_port(virtual, server, forward))
        merged[key] = min(merged.get(key, 0) + weight, MAX_WEIGHT)
    if virtual.sorry_server is not None and not any(merged.values()):
        port = 0 if virtual.fwmark is not None else virtual.port
        merged[DestKey(str(virtual.sorry_server), port)] = 1  # beside quiesced ones
    return {key: DestSpec(weight, forward) for key, weight in sorted(merged.items())}


#: Schedulers that pick a real server from the packet alone (and the configuration, the
#: health, the seed), so every router picks the same one for a flow.
STATELESS_SCHEDULERS = ("mh", "sh")


def midstream_protocols(cfg: LvsConfig) -> frozenset[str]:
    """Protocols of the active virtuals with a stateless scheduler. A router that becomes
    active must take up the mid-stream packets of their connections, which it never saw
    (IPVS ``sloppy_tcp``/``sloppy_sctp``, conntrack's ``nf_conntrack_tcp_loose``: each
    backend's ``midstream_sysctls``); other schedulers gain nothing from it, since the new
    active would pick a real server that does not know the connection."""
    if cfg.service != "lvs":
        return frozenset()
    return frozenset(v.protocol for v in cfg.virtuals
                     if v.active and v.scheduler in STATELESS_SCHEDULERS)


def timeouts(cfg: LvsConfig) -> tuple[int | None, int | None, int | None]:
    """(tcp, tcpfin, udp) connection timeouts in seconds; None = leave the kernel's."""
    if cfg.service != "lvs":
        return (None, None, None)
    values = (cfg.tcp_timeout, cfg.tcpfin_timeout, cfg.udp_timeout)
    return tuple(v or None for v in values)  # type: ignore[return-value]


def sync_daemon(cfg: LvsConfig, active: bool) -> tuple[SyncRole | None, str, int]:
    """(role, interface, syncid) of the connection-sync daemon this router should run.

    ``syncdaemon = 1``: master on the active router, backup on the others; else None.
    The interface is the link of ``syncd_iface`` (its ":label" dropped).
    """
    iface = cfg.syncd_iface.split(":", 1)[0]
    if not cfg.syncdaemon or cfg.service != "lvs":
        return (None, iface, cfg.syncd_id)
    return ("master" if active else "backup", iface, cfg.syncd_id)


#: The master's sync daemon sends a partly filled message once it is this old (the
#: kernel's IPVS_SYNC_FLUSH_TIME, 2 s) and checks every second.
SYNC_FLUSH = 3.0


def sync_refresh(cfg: LvsConfig) -> int | None:
    """``net.ipv4.vs.sync_refresh_period`` in whole seconds, None without a sync daemon.

    A quarter of ``sync_warmup`` (at least 1 s): a connection that carries a packet at least
    every ``sync_warmup - refresh - SYNC_FLUSH`` seconds reaches a new backup within the
    warm-up, so the preemption gate waits long enough (agent/dataplane/warmth.py).
    """
    if not cfg.syncdaemon or cfg.service != "lvs":
        return None
    return max(1, int(cfg.sync_warmup / 4 + 0.5))
