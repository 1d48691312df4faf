"""What the status page shows, as one JSON-able dict: a pure function of the cluster as
etcd says (:class:`~cluster.status.ClusterStatus`) and of what the page server measured
besides (:class:`Live`: lease time left, the agents' metrics, recent events)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..health import ServerKey
from ..status import ClusterStatus

#: Kernel traffic counters per real server, as the agents export them (docs/metrics.md).
TRAFFIC = {"connections": "lvs_real_server_connections_total",
           "packets_in": "lvs_real_server_packets_in_total",
           "bytes_in": "lvs_real_server_bytes_in_total",
           "bytes_out": "lvs_real_server_bytes_out_total",
           "active": "lvs_real_server_active_connections"}


@dataclass(frozen=True)
class Sample:
    """One series of an agent's metrics: name, labels, value."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass
class Live:
    """What the page server knows beyond etcd's keys."""

    now: float = 0.0  # epoch seconds of this view
    lease_left: dict[str, int] = field(default_factory=dict)  # {node: seconds; -1 gone}
    metrics: dict[str, list[Sample]] = field(default_factory=dict)  # {node: its series}
    scrape_errors: dict[str, str] = field(default_factory=dict)  # {node: why}
    events: Sequence[Mapping[str, Any]] = ()  # history events (Event.to_json), newest first
    actions: bool = False  # the page may offer actions (--allow-actions)


def _series(samples: Sequence[Sample], name: str) -> list[Sample]:
    return [s for s in samples if s.name == name]


def heartbeat_ages(live: Live) -> dict[str, float]:
    """{router: the freshest heartbeat age any other router reports for it}."""
    out: dict[str, float] = {}
    for observer, samples in live.metrics.items():
        for s in _series(samples, "lvs_heartbeat_peer_age_seconds"):
            peer = s.labels.get("peer", "")
            if peer and peer != observer and s.value >= 0:
                out[peer] = min(out.get(peer, s.value), s.value)
    return out


def vips_held(live: Live) -> dict[str, int]:
    """{router: VIPs it says it holds} (its metric lvs_vips_held)."""
    return {node: int(s.value) for node, samples in live.metrics.items()
            for s in _series(samples, "lvs_vips_held")}


def traffic(live: Live, node: str | None) -> dict[ServerKey, dict[str, float]]:
    """{(virtual, server): {counter: value}} from the kernel of ``node`` (the active)."""
    out: dict[ServerKey, dict[str, float]] = {}
    if node is None:
        return out
    samples = live.metrics.get(node, [])
    for field_name, metric in TRAFFIC.items():
        for s in _series(samples, metric):
            key = ServerKey(s.labels.get("virtual", ""), s.labels.get("server", ""))
            out.setdefault(key, {})[field_name] = s.value
    return out


def page_model(st: ClusterStatus, live: Live) -> dict[str, Any]:
    """Everything the page renders (pure)."""
    cfg = st.config
    leader = st.leader
    active = leader.node if leader else None
    held = vips_held(live)
    ages = heartbeat_ages(live)
    routers = []
    configured = {r.name: r for r in cfg.config.effective_routers()} if cfg else {}
    for name in dict.fromkeys([*configured, *sorted(st.state.registered)]):
        node = st.nodes.get(name)
        r = configured.get(name)
        routers.append({
            "name": name,
            "priority": r.priority if r else None,
            "role": node.role if node else ("unreadable" if name in st.state.registered
                                            else "down"),
            "leader": name == active,
            "address": node.address if node else (str(r.address) if r else ""),
            "dataplane": node.dataplane if node else "",
            "term": node.term if node else 0,
            "config_serial": node.config_serial if node else None,
            "config_refused": (node.config_refused.model_dump(mode="json")
                               if node and node.config_refused else None),
            "lease_left": live.lease_left.get(name),
            "heartbeat_age": ages.get(name),
            "vips_held": held.get(name),
            "started_at": node.started_at if node else "",
            "scrape_error": live.scrape_errors.get(name),
        })
    holders = [n for n, count in held.items() if count > 0]
    vips = [{"address": str(addr.ip), "device": addr.interface or "",
             "for": what.removeprefix("virtual ")}
            for what, addr, _ in (cfg.config.floating() if cfg is not None else ())]
    for vip in vips:
        vip["holder"] = active if active and st.nodes.get(active) and \
            st.nodes[active].role == "active" else None
        vip["holders_by_metrics"] = holders
    kernel = traffic(live, active)
    virtuals = st.virtuals()
    for v in virtuals:
        for s in v["servers"]:
            key = ServerKey(v["name"], s["name"])
            verdict = st.state.health.get(key)
            s["observed_by"] = list(verdict.observed_by) if verdict else []
            s["traffic"] = kernel.get(key)
    ro = st.rollout()
    return {
        "cluster": st.cluster,
        "revision": st.revision,
        "now": live.now,
        "config": None if cfg is None else {
            "serial_no": cfg.serial_no, "pushed_at": cfg.pushed_at, "pushed_by": cfg.pushed_by},
        "config_error": st.config_error,
        "config_problems": st.config_problems,
        "not_running_stored_config": [] if ro is None else [
            {"node": name, "why": why} for name, why in ro.behind.items()],
        "leader": None if leader is None else {"node": leader.node, "term": leader.term,
                                                "since": leader.since},
        "split_brain": len(holders) > 1,
        "routers": routers,
        "vips": vips,
        "virtuals": virtuals,
        "events": list(live.events),
        "junk": len(st.junk),
        "actions": live.actions,
    }
