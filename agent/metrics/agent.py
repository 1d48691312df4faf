"""The agent itself: info, build, the config it runs, its event loop and stalls."""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import InfoMetricFamily

from .families import counter, gauge

if TYPE_CHECKING:
    from ..pulse import Pulse


def collect(p: Pulse) -> Iterator[object]:
    info = InfoMetricFamily("lvs_agent", "pulse agent", labels=["node"])
    info.add_metric([p.opts.node], {"version": _version(), "cluster": p.opts.cluster,
                                    "dataplane": p.dataplane.name})
    yield info
    build = InfoMetricFamily("lvs_build", "the agent's build")
    build.add_metric([], {"version": _version(), "python": platform.python_version()})
    yield build
    yield gauge("lvs_config_serial", "serial_no of the config in force",
                p.config.serial_no if p.config else -1)
    yield gauge("lvs_config_stored_serial", "serial_no of the newest config stored in etcd "
                "(runnable or not; -1: none seen)",
                p.stored_serial if p.stored_serial is not None else -1)
    yield counter("lvs_config_errors", "invalid configs seen in etcd and ignored",
                  p.follower.errors)
    yield counter("lvs_config_refused", "stored configs this router did not adopt (invalid, "
                  "or it cannot run them)", p.configs_refused)
    yield counter("lvs_etcd_junk", "keys or values under the cluster prefix not understood",
                  p.view.stats.junk)
    if p.loop is not None:  # scraped from the server's thread: all_tasks copes
        yield gauge("lvs_asyncio_tasks", "asyncio tasks in the agent's event loop",
                    len(asyncio.all_tasks(p.loop)))
    if p.stall is not None:
        yield counter("lvs_stalls", "stalls of this agent noticed (event loop late by "
                      "more than the safety margin, or time the clock missed)",
                      p.stall.stalls)
        yield gauge("lvs_stall_longest_seconds", "the longest stall noticed",
                    p.stall.longest)


def _version() -> str:
    from .. import __version__

    return __version__
