"""The lvs_ctsync_* metrics: exported where sync is configured, each one documented in
docs/conntrack-sync.md's metrics table (and nothing documented that is not exported)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from prometheus_client.core import Metric

from agent.conntrack import Conntrackd, ConntrackSync
from agent.metrics import _ctsync

DOC = Path(__file__).resolve().parent.parent / "docs" / "conntrack-sync.md"


def exported(sync: ConntrackSync) -> dict[str, Metric]:
    return {m.name: m for m in _ctsync(SimpleNamespace(ctsync=sync))}  # type: ignore[arg-type]


def sample_names(metrics: dict[str, Metric]) -> set[str]:
    """What a scrape shows, less the labels (counters end in _total, info in _info)."""
    return {s.name for m in metrics.values() for s in m.samples
            if not s.name.endswith("_created")}


def documented() -> set[str]:
    section = DOC.read_text(encoding="utf-8").split("\n## Metrics\n", 1)[1].split("\n## ")[0]
    return set(re.findall(r"`(lvs_ctsync_\w+)", section))


def test_nothing_exported_where_sync_is_off(tmp_path: Path) -> None:
    assert exported(ConntrackSync("r1", tmp_path)) == {}


def test_every_exported_metric_is_documented_and_only_those(tmp_path: Path) -> None:
    sync = ConntrackSync("r1", tmp_path)
    sync.daemons = {"r2": Conntrackd(), "r3": Conntrackd()}
    sync.daemons["r2"].stats.restarts, sync.daemons["r3"].stats.restarts = 2, 1
    sync.daemons["r3"].stats.link_down = 4
    sync.stats.commits["skipped"] += 1
    metrics = exported(sync)
    assert sample_names(metrics) == documented()
    assert metrics["lvs_ctsync_restarts"].samples[0].value == 3  # summed over the peers
    assert metrics["lvs_ctsync_link_down"].samples[0].value == 4
    assert {s.labels["peer"]: s.value for s in metrics["lvs_ctsync_peer_up"].samples} == {
        "r2": 0.0, "r3": 0.0}
    assert metrics["lvs_ctsync_up"].samples[0].value == 0.0
