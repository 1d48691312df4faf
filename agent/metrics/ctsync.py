"""conntrackd (connection state sync, nftables): ``lvs_ctsync_*``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from .families import counter, gauge

if TYPE_CHECKING:
    from ..pulse import Pulse


def collect(p: Pulse) -> Iterator[object]:
    """Only where sync is configured. One daemon per peer: their counters are summed,
    ``lvs_ctsync_peer_up`` tells them apart."""
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
    yield gauge("lvs_ctsync_up", "1 if conntrackd runs and answers, for every peer",
                1.0 if stats and all(st.up for st in stats) else 0.0)
    peer_up = GaugeMetricFamily("lvs_ctsync_peer_up", "1 if the conntrackd paired with "
                                "this peer runs", labels=["peer"])
    for peer, d in daemons:
        peer_up.add_metric([peer], 1.0 if d.up else 0.0)
    yield peer_up
    yield counter("lvs_ctsync_restarts", "conntrackd starts after the first",
                  sum(st.restarts for st in stats))
    yield counter("lvs_ctsync_failures", "conntrackd starts that failed or daemons that "
                  "died", sum(st.failures for st in stats))
    yield gauge("lvs_ctsync_last_error_timestamp_seconds", "when conntrackd last failed "
                "(epoch; 0: never)", newest.last_error_at if newest else 0.0)
    commits = CounterMetricFamily("lvs_ctsync_commits", "commits of the synced state at "
                                  "takeover, by result", labels=["result"])
    for result, n in sorted(sync.stats.commits.items()):
        commits.add_metric([result], n)
    yield commits
    yield gauge("lvs_ctsync_commit_seconds", "duration of the newest commit",
                sync.stats.commit_seconds)
    yield gauge("lvs_ctsync_commit_seconds_max", "the longest commit",
                sync.stats.commit_seconds_max)
    yield gauge("lvs_ctsync_commit_entries", "entries the newest commits put in the kernel",
                sum(st.commit_entries for st in stats))
    yield gauge("lvs_ctsync_link_up", "1 if the sync link runs (as conntrackd sees it)",
                1.0 if stats and all(st.link_up for st in stats) else 0.0)
    yield counter("lvs_ctsync_link_down", "times the sync link went down, summed over the "
                  "peers' daemons (never a reason to fail over)",
                  sum(st.link_down for st in stats))
    yield counter("lvs_ctsync_send_errors", "sync messages conntrackd failed to send",
                  sum(st.send_errors for st in stats))
    yield counter("lvs_ctsync_resync_requests", "resyncs asked of the active",
                  sync.stats.resync_requests)
