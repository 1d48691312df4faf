"""From the cluster config to this router's view of it: peers, VIPs, timers (pure).

Whether a config can run at all is decided once, by :func:`cluster.runnable.run_problems`;
only what depends on this router (its name, the cluster name) is refused here besides.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network

from cluster.model import AddrDev, LvsConfig, Router
from cluster.runnable import run_problems
from cluster.timing import Timing, timing_from

from .heartbeat import HeartbeatConfig
from .vip import AnnounceConfig, Vip


class TopologyError(ValueError):
    """This router cannot run with this configuration (the message says why)."""


@dataclass(frozen=True)
class RouterPlan:
    """Everything the pulse loop derives from (config, node name)."""

    me: Router
    peers: tuple[Router, ...]
    timing: Timing
    heartbeat: HeartbeatConfig
    vips: tuple[Vip, ...]
    announce: AnnounceConfig | None
    preempt: bool


def _prefixlen(addr: AddrDev, nmask: object) -> int:
    if addr.ip.version == 6 or nmask is None:
        return 32
    return IPv4Network(f"0.0.0.0/{nmask}").prefixlen


def _vip(addr: AddrDev, nmask: object, what: str) -> Vip:
    if addr.interface is None:  # run_problems() refuses this first
        raise TopologyError(f"{what}: address {addr.ip} needs a device (e.g. '{addr.ip} eth0:1')")
    label = addr.label if addr.ip.version == 4 and addr.label != addr.interface else None
    return Vip(str(addr.ip), _prefixlen(addr, nmask), addr.interface, label)


def vips_of(cfg: LvsConfig) -> tuple[Vip, ...]:
    """Every address the active router holds: active virtuals' VIPs and the nat_router."""
    return tuple(_vip(addr, nmask, what) for what, addr, nmask in cfg.floating())


def plan(cfg: LvsConfig, node: str, *, cluster: str) -> RouterPlan:
    """This router's plan; TopologyError if ``cfg`` cannot run, or not as ``node``."""
    problems = run_problems(cfg)
    if problems:
        raise TopologyError("; ".join(p.message for p in problems))
    routers = cfg.effective_routers()
    me = next((r for r in routers if r.name == node), None)
    if me is None:
        names = ", ".join(r.name for r in routers) or "none"
        raise TopologyError(f"node {node!r} is not a router of this configuration "
                            f"(routers: {names})")
    peers = tuple(r for r in routers if r.name != node)
    timing = timing_from(cfg)

    def links(r: Router) -> tuple[str, ...]:
        return tuple(str(a) for a in (r.address, r.private) if a is not None)

    heartbeat = HeartbeatConfig(
        cluster=cluster, node=node, port=cfg.heartbeat_port, keepalive=timing.keepalive,
        deadtime=timing.deadtime, local_addresses=links(me),
        peers={p.name: links(p) for p in peers},
    )
    announce = None
    if cfg.garp_count > 0:
        announce = AnnounceConfig(
            count=cfg.garp_count, interval=cfg.garp_interval,
            second_delay=cfg.garp_delay or None, refresh=cfg.garp_refresh or None)
    return RouterPlan(me=me, peers=peers, timing=timing, heartbeat=heartbeat,
                      vips=vips_of(cfg), announce=announce,
                      preempt=cfg.reservation_conflict_action == "preempt")
