"""The nudges that make taken-over connections retransmit at once (agent/resume):
``lvs_resume_*``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .families import counter, counters, gauge

if TYPE_CHECKING:
    from ..pulse import Pulse


def collect(p: Pulse) -> Iterator[object]:
    st = p.resumer.stats
    yield counter("lvs_resume_runs", "takeovers that nudged connections", st.runs)
    yield counter("lvs_resume_flows", "synced connections found to nudge", st.flows)
    yield counter("lvs_resume_answered", "connection ends that answered the probe",
                  st.answered)
    yield counter("lvs_resume_nudged", "connection ends nudged to retransmit", st.nudged)
    yield counter("lvs_resume_skipped", "connections beyond the cap, not nudged", st.skipped)
    yield counters("lvs_resume_errors", "failures, by kind", ["kind"],
                   (([kind], n) for kind, n in sorted(st.errors.items())))
    yield gauge("lvs_resume_seconds", "duration of the newest run", st.seconds)
