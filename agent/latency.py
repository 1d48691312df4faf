"""Latencies the agent measures on itself, as Prometheus histograms (they aggregate across
routers, unlike client-side quantiles).

One agent runs per process, so the histograms are module-level and registered on no
registry: :func:`agent.metrics.serve` puts :data:`COLLECTOR` on the agent's own registry.
Buckets suit each latency: detection to kernel and to the view from 0.5 ms, etcd from 1 ms
to 5 s, checks and reconciles from 1 ms to 10 s, failovers from 50 ms to 10 s.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

FAST = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
ETCD = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
CHECKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
FAILOVER = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)


def _histogram(name: str, doc: str, buckets: tuple[float, ...],
               labels: tuple[str, ...] = ()) -> Histogram:
    return Histogram(name, doc, labelnames=labels, buckets=buckets, registry=None)


DETECT_TO_DATAPLANE = _histogram(
    "lvs_detect_to_dataplane_seconds",
    "from a health check's verdict to the kernel tables updated (active)", FAST)
DETECT_TO_VIEW = _histogram(
    "lvs_detect_to_view_seconds",
    "from a health check's verdict to the effective health visible in this router's "
    "etcd watch", FAST)
FAILOVER_DURATION = _histogram(
    "lvs_failover_duration_seconds",
    "from this router judging the old active gone to its VIPs up (observed on the new "
    "active)", FAILOVER)
LEASE_REFRESH = _histogram(
    "lvs_lease_refresh_latency_seconds",
    "from a lease keep-alive sent to its answer", ETCD)
ETCD_REQUEST = _histogram(
    "lvs_etcd_request_duration_seconds",
    "etcd requests, by operation (failed ones too)", ETCD, ("op",))
CHECK_DURATION = _histogram(
    "lvs_check_duration_seconds",
    "health checks, from start to verdict, by kind", CHECKS, ("kind",))
RECONCILE_DURATION = _histogram(
    "lvs_reconcile_duration_seconds",
    "data plane reconciles: desired table in, kernel changed (diff and apply)", CHECKS)

HISTOGRAMS = (DETECT_TO_DATAPLANE, DETECT_TO_VIEW, FAILOVER_DURATION, LEASE_REFRESH,
              ETCD_REQUEST, CHECK_DURATION, RECONCILE_DURATION)


class _Histograms(Collector):
    def collect(self) -> Iterator[Metric]:
        for h in HISTOGRAMS:
            yield from h.collect()


COLLECTOR = _Histograms()
