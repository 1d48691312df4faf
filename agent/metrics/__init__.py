"""Prometheus metrics of one agent, read from its parts at scrape time.

One module per concern, each a ``collect(pulse)`` generator of metric families; the
latency histograms live in :mod:`agent.latency`. :func:`serve` puts them all, and the
process collector, on the agent's own registry. Every series is in docs/metrics.md
(tests/test_agent_lab.py keeps the two equal).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import ProcessCollector, start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from ..latency import COLLECTOR as HISTOGRAMS
from . import agent, ctsync, dataplane, health, heartbeat, resume, role, traffic, vips

if TYPE_CHECKING:
    from ..pulse import Pulse

#: Every concern's collector, in the order a scrape shows them.
MODULES: tuple[Callable[[Pulse], Iterator[object]], ...] = (
    agent.collect, role.collect, vips.collect, heartbeat.collect, health.collect,
    dataplane.collect, traffic.collect, ctsync.collect, resume.collect,
)

_ctsync = ctsync.collect  # the names tests and older branches import
_resume = resume.collect


class PulseCollector(Collector):
    """Everything is derived from the agent's own counters: nothing to keep in sync."""

    def __init__(self, pulse: Pulse,
                 modules: tuple[Callable[[Pulse], Iterator[object]], ...] = MODULES) -> None:
        self.p = pulse
        self.modules = modules

    def collect(self) -> Iterator[object]:
        for module in self.modules:
            yield from module(self.p)


def registry_of(pulse: Pulse) -> CollectorRegistry:
    """The agent's registry: its collectors, the latency histograms, the process."""
    registry = CollectorRegistry()
    registry.register(PulseCollector(pulse))
    registry.register(HISTOGRAMS)
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, _open_fds, cpu
    return registry


def serve(pulse: Pulse, address: str) -> CollectorRegistry:
    """Serve /metrics on ``host:port`` (only that address: nothing wider than needed)."""
    host, _, port = address.rpartition(":")
    registry = registry_of(pulse)
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    return registry
