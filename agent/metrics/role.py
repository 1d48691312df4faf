"""Role, term, leader changes, the licence, the lease and etcd."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .families import counter, counters, gauge, gauges

if TYPE_CHECKING:
    from ..pulse import Pulse

ROLES = ("backup", "candidate", "active")
#: An etcd answer (any request, any member) this recent makes etcd "reachable".
REACHABLE_WITHIN = 3.0


def collect(p: Pulse) -> Iterator[object]:
    current = p.machine.role.value if p.machine else ""
    yield gauges("lvs_role", "1 for the role this router is in", ["role"],
                 (([r], 1.0 if r == current else 0.0) for r in ROLES))
    yield gauge("lvs_term", "leader term this router holds (0: none)",
                p.machine.term if p.machine else 0)
    yield counters("lvs_role_transitions", "role changes", ["to"],
                   (([to], n) for to, n in sorted(p.transitions.items())))
    yield counters("lvs_leader_changes", "new leader terms seen in etcd, by why the "
                   "previous one ended (this router's view)", ["reason"],
                   (([r], n) for r, n in sorted(p.view.stats.leader_changes.items())))
    now = p.clock()
    yield gauge("lvs_etcd_ok", "1 if etcd confirmed our lease recently",
                1.0 if p._etcd_ok(now) else 0.0)
    last = p.etcd.last_ok
    yield gauge("lvs_etcd_reachable", f"1 if an etcd member answered a request within "
                f"{REACHABLE_WITHIN:g} s", 1.0 if last is not None
                and now - last < REACHABLE_WITHIN else 0.0)
    if p.lease is not None:
        s = p.lease.stats
        yield counter("lvs_lease_refreshes", "confirmed lease refreshes", s.refreshes)
        yield counter("lvs_lease_failures", "failed lease refresh attempts", s.failures)
        yield counter("lvs_lease_lost", "leases found expired", s.lost)
        yield gauge("lvs_lease_remaining_seconds", "until the lease certainly expires",
                    max(-1.0, p.lease.deadline - now))
    yield gauge("lvs_licence_remaining_seconds", "until this router's licence to assert "
                "ownership ends (-1: not licensed)", max(-1.0, p.licence_end() - p.clock()))
