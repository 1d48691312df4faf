"""The data plane's reconciler: what it programs, changes, drift, errors, its backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .families import counter, gauge, gauges

if TYPE_CHECKING:
    from ..pulse import Pulse


def collect(p: Pulse) -> Iterator[object]:
    yield gauges("lvs_dataplane_backend_info", "1 for the data plane backend in use "
                 "(ipvs, nftables; before start: the one asked for)", ["backend"],
                 [([p.dataplane.name], 1.0)])
    rec = p.dataplane.reconciler
    if rec is None:
        return
    st = rec.stats
    yield gauge("lvs_dataplane_services", "virtual services programmed", st.desired_services)
    yield gauge("lvs_dataplane_dests", "real servers programmed", st.desired_dests)
    yield counter("lvs_dataplane_applies", "kernel transactions", st.applies)
    yield counter("lvs_dataplane_ops", "kernel changes applied", st.ops_applied)
    yield counter("lvs_dataplane_drift_checks", "drift checks", st.drift_checks)
    yield counter("lvs_dataplane_drift_repairs", "drift found and repaired", st.drift_repairs)
    yield counter("lvs_dataplane_errors", "kernel errors", st.errors)
    yield counter("lvs_dataplane_refused", "configurations the backend cannot express (the "
                  "running table stayed)", p.dataplane.refused)
