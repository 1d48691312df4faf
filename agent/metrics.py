"""Prometheus metrics of one agent, read from its parts at scrape time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from .history import metrics as history_metrics
from .latency import DETECT_TO_DATAPLANE, DETECT_TO_VIEW

if TYPE_CHECKING:
    from .pulse import Pulse

ROLES = ("backup", "candidate", "active")


class PulseCollector(Collector):
    """Everything is derived from the agent's own counters: nothing to keep in sync."""

    def __init__(self, pulse: Pulse) -> None:
        self.p = pulse

    def collect(self) -> Iterator[object]:
        p = self.p
        node = p.opts.node
        info = InfoMetricFamily("lvs_agent", "pulse agent", labels=["node"])
        info.add_metric([node], {"version": _version(), "cluster": p.opts.cluster,
                                 "dataplane": p.dataplane.name})
        yield info
        role = GaugeMetricFamily("lvs_role", "1 for the role this router is in",
                                 labels=["role"])
        current = p.machine.role.value if p.machine else ""
        for r in ROLES:
            role.add_metric([r], 1.0 if r == current else 0.0)
        yield role
        yield _gauge("lvs_term", "leader term this router holds (0: none)",
                     p.machine.term if p.machine else 0)
        trans = CounterMetricFamily("lvs_role_transitions", "role changes", labels=["to"])
        for to, n in sorted(p.transitions.items()):
            trans.add_metric([to], n)
        yield trans
        yield _gauge("lvs_etcd_ok", "1 if etcd confirmed our lease recently",
                     1.0 if p._etcd_ok(p.clock()) else 0.0)
        yield _gauge("lvs_config_serial", "serial_no of the config in force",
                     p.config.serial_no if p.config else -1)
        yield _counter("lvs_config_errors", "invalid configs seen in etcd and ignored",
                       p.follower.errors)
        yield _counter("lvs_etcd_junk", "keys or values under the cluster prefix not understood",
                       p.view.stats.junk)
        if p.lease is not None:
            s = p.lease.stats
            yield _counter("lvs_lease_refreshes", "confirmed lease refreshes", s.refreshes)
            yield _counter("lvs_lease_failures", "failed lease refresh attempts", s.failures)
            yield _counter("lvs_lease_lost", "leases found expired", s.lost)
            yield _gauge("lvs_lease_remaining_seconds", "until the lease certainly expires",
                         max(-1.0, p.lease.deadline - p.clock()))
        if p.vips is not None:
            yield _gauge("lvs_vips_held", "VIPs this router holds", len(p.vips.held()))
            yield _counter("lvs_vip_unlicensed_acts", "VIP adds and announcements refused "
                           "because the licence had ended", p.vips.stats["unlicensed"])
        yield _gauge("lvs_licence_remaining_seconds", "until this router's licence to assert "
                     "ownership ends (-1: not licensed)",
                     max(-1.0, p.licence_end() - p.clock()))
        if p.loop is not None:  # scraped from the server's thread: all_tasks copes
            yield _gauge("lvs_asyncio_tasks", "asyncio tasks in the agent's event loop",
                         len(asyncio.all_tasks(p.loop)))
        if p.stall is not None:
            yield _counter("lvs_stalls", "stalls of this agent noticed (event loop late by "
                           "more than the safety margin, or time the clock missed)",
                           p.stall.stalls)
            yield _gauge("lvs_stall_longest_seconds", "the longest stall noticed",
                         p.stall.longest)
        if p.fence is not None:
            yield _gauge("lvs_vip_fence_enabled", "1 if the nftables VIP fence is in place",
                         1.0 if p.fence.enabled else 0.0)
            yield _counter("lvs_vip_fence_errors", "failed writes of the VIP fence",
                           p.fence.errors)
        for lat in (DETECT_TO_DATAPLANE, DETECT_TO_VIEW):
            summary = GaugeMetricFamily(lat.name, "latency quantiles of the last samples",
                                        labels=["quantile"])
            for q, v in lat.quantiles().items():
                summary.add_metric([q], v)
            yield summary
            yield _counter(f"{lat.name}_samples", "samples measured", lat.count)
        rec = p.dataplane.reconciler
        if rec is not None:
            st = rec.stats
            yield _gauge("lvs_dataplane_services", "virtual services programmed",
                         st.desired_services)
            yield _gauge("lvs_dataplane_dests", "real servers programmed", st.desired_dests)
            yield _counter("lvs_dataplane_applies", "kernel transactions", st.applies)
            yield _counter("lvs_dataplane_ops", "kernel changes applied", st.ops_applied)
            yield _counter("lvs_dataplane_drift_checks", "drift checks", st.drift_checks)
            yield _counter("lvs_dataplane_drift_repairs", "drift found and repaired",
                           st.drift_repairs)
            yield _counter("lvs_dataplane_errors", "kernel errors", st.errors)
            yield _counter("lvs_dataplane_refused", "configurations the backend cannot "
                           "express (the running table stayed)", p.dataplane.refused)
        yield from _ctsync(p)
        yield from _resume(p)
        yield from history_metrics(p.history)
        es = p.health.engine.stats()
        yield _counter("lvs_checks", "health checks run", es.checks)
        yield _counter("lvs_checks_failed", "health checks failed", es.failed)
        yield _gauge("lvs_checks_in_flight", "health checks running now", es.in_flight)
        up = GaugeMetricFamily("lvs_real_server_up", "1 if our own checks see it up",
                               labels=["virtual", "server"])
        for (v, srv), h in sorted(p.health.engine.snapshot().items()):
            up.add_metric([v, srv], 1.0 if h.state == "up" else 0.0)
        yield up
        hb = p.heartbeat
        if hb is not None:
            c = hb.counters()
            yield _counter("lvs_heartbeat_sent", "heartbeat packets sent", c.sent)
            yield _counter("lvs_heartbeat_accepted", "valid heartbeats received", c.accepted)
            dropped = CounterMetricFamily("lvs_heartbeat_dropped",
                                          "heartbeats dropped, by reason", labels=["reason"])
            for reason, n in sorted(c.dropped.items()):
                dropped.add_metric([reason], n)
            yield dropped
            errors = CounterMetricFamily("lvs_heartbeat_send_errors", "send failures",
                                         labels=["error"])
            for err, n in sorted(c.send_errors.items()):
                errors.add_metric([err], n)
            yield errors
            alive = GaugeMetricFamily("lvs_peer_alive", "1 if the peer's heartbeat is fresh",
                                      labels=["peer"])
            for peer in hb.config.peers:
                alive.add_metric([peer], 1.0 if hb.alive(peer) else 0.0)
            yield alive


def _ctsync(p: Pulse) -> Iterator[object]:
    """conntrackd (connection state sync, nftables): only where it is configured. One
    daemon per peer: their counters are summed, ``lvs_ctsync_peer_up`` tells them apart."""
    sync = p.ctsync
    daemons = list(sync.daemons.items())
    if not sync.enabled and not sync.stats.config_error and not daemons:
        return
    stats = [d.stats for _, d in daemons]
    newest = max(stats, key=lambda st: st.last_error_at, default=None)
    info = InfoMetricFamily("lvs_ctsync", "connection state sync (conntrackd)")
    info.add_metric([], {"last_error": sync.stats.config_error
                         or (newest.last_error if newest else "")})
    yield info
    yield _gauge("lvs_ctsync_up", "1 if conntrackd runs and answers, for every peer",
                 1.0 if stats and all(st.up for st in stats) else 0.0)
    peer_up = GaugeMetricFamily("lvs_ctsync_peer_up", "1 if the conntrackd paired with "
                                "this peer runs", labels=["peer"])
    for peer, d in daemons:
        peer_up.add_metric([peer], 1.0 if d.up else 0.0)
    yield peer_up
    yield _counter("lvs_ctsync_restarts", "conntrackd starts after the first",
                   sum(st.restarts for st in stats))
    yield _counter("lvs_ctsync_failures", "conntrackd starts that failed or daemons that "
                   "died", sum(st.failures for st in stats))
    yield _gauge("lvs_ctsync_last_error_timestamp_seconds", "when conntrackd last failed "
                 "(epoch; 0: never)", newest.last_error_at if newest else 0.0)
    commits = CounterMetricFamily("lvs_ctsync_commits", "commits of the synced state at "
                                  "takeover, by result", labels=["result"])
    for result, n in sorted(sync.stats.commits.items()):
        commits.add_metric([result], n)
    yield commits
    yield _gauge("lvs_ctsync_commit_seconds", "duration of the newest commit",
                 sync.stats.commit_seconds)
    yield _gauge("lvs_ctsync_commit_seconds_max", "the longest commit",
                 sync.stats.commit_seconds_max)
    yield _gauge("lvs_ctsync_commit_entries", "entries the newest commits put in the kernel",
                 sum(st.commit_entries for st in stats))
    yield _gauge("lvs_ctsync_link_up", "1 if the sync link runs (as conntrackd sees it)",
                 1.0 if stats and all(st.link_up for st in stats) else 0.0)
    yield _counter("lvs_ctsync_link_down", "times the sync link went down, summed over the "
                   "peers' daemons (never a reason to fail over)",
                   sum(st.link_down for st in stats))
    yield _counter("lvs_ctsync_send_errors", "sync messages conntrackd failed to send",
                   sum(st.send_errors for st in stats))
    yield _counter("lvs_ctsync_resync_requests", "resyncs asked of the active",
                   sync.stats.resync_requests)


def _resume(p: Pulse) -> Iterator[object]:
    """The nudges that make taken-over connections retransmit at once (agent/resume)."""
    st = p.resumer.stats
    yield _counter("lvs_resume_runs", "takeovers that nudged connections", st.runs)
    yield _counter("lvs_resume_flows", "synced connections found to nudge", st.flows)
    yield _counter("lvs_resume_answered", "connection ends that answered the probe",
                   st.answered)
    yield _counter("lvs_resume_nudged", "connection ends nudged to retransmit", st.nudged)
    yield _counter("lvs_resume_skipped", "connections beyond the cap, not nudged", st.skipped)
    errors = CounterMetricFamily("lvs_resume_errors", "failures, by kind", labels=["kind"])
    for kind, n in sorted(st.errors.items()):
        errors.add_metric([kind], n)
    yield errors
    yield _gauge("lvs_resume_seconds", "duration of the newest run", st.seconds)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _version() -> str:
    from . import __version__

    return __version__


def serve(pulse: Pulse, address: str) -> CollectorRegistry:
    """Serve /metrics on ``host:port`` (only that address: nothing wider than needed)."""
    host, _, port = address.rpartition(":")
    registry = CollectorRegistry()
    registry.register(PulseCollector(pulse))
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, _open_fds, cpu
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    return registry
