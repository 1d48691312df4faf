"""Health checks (this router's own) and the effective state of every real server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from cluster.health import NOT_CHECKED, Health, ServerKey
from cluster.model import LvsConfig

from ..dataplane.desired import server_weight
from .families import counter, counters, gauge, gauges

if TYPE_CHECKING:
    from ..pulse import Pulse

STATES = ("up", "down", "drained", "disabled")


def collect(p: Pulse) -> Iterator[object]:
    engine = p.health.engine
    es = engine.stats()
    yield counter("lvs_checks", "health checks run", es.checks)
    yield counter("lvs_checks_failed", "health checks failed", es.failed)
    yield gauge("lvs_checks_in_flight", "health checks running now", es.in_flight)
    yield counters("lvs_checks_by_result", "health checks run, by kind and result (ok, "
                   "failed)", ["kind", "result"],
                   (([kind, result], n) for (kind, result), n in sorted(engine.results.items())))
    per_server = per_server_series(p)
    if per_server:
        yield gauges("lvs_real_server_up", "1 if our own checks see it up",
                     ["virtual", "server"], (([v, srv], 1.0 if h.state == "up" else 0.0)
                                             for (v, srv), h in sorted(engine.snapshot().items())))
    yield counters("lvs_health_transitions", "state changes our own checks saw, by the new "
                   "state", ["to"],
                   (([to], n) for to, n in sorted(p.health.transitions.items())))
    if p.config is None:
        return
    rows = effective(p.config, p.health.for_dataplane(), p.view.admin())
    counts: dict[tuple[str, str], int] = {}
    for (v, _), (st, _) in rows.items():
        counts[(v, st)] = counts.get((v, st), 0) + 1
    yield gauges("lvs_virtual_servers", "real servers of each virtual service by effective "
                 "state (up, down, drained, disabled), as the data plane programs them",
                 ["virtual", "state"],
                 (([v.name, s], float(counts.get((v.name, s), 0)))
                  for v in p.config.virtuals if v.active for s in STATES))
    yield gauge("lvs_metrics_servers_omitted", "real servers without series of their own: "
                "more than --metrics-max-servers (their virtuals' series count them)",
                0.0 if per_server else float(len(rows)))
    if not per_server:
        return
    state = gauges("lvs_real_server_state", "1 for the effective state of each real "
                   "server (up, down, drained, disabled), as the data plane programs it",
                   ["virtual", "server", "state"], ())
    weight = gauges("lvs_real_server_weight", "weight in force (0: no new connections)",
                    ["virtual", "server"], ())
    for (v, srv), (st, w) in rows.items():
        for s in STATES:
            state.add_metric([v, srv, s], 1.0 if s == st else 0.0)
        weight.add_metric([v, srv], w)
    yield state
    yield weight


def per_server_series(p: Pulse) -> bool:
    """Whether the metrics have series per real server: not past --metrics-max-servers."""
    cap = p.opts.metrics_max_servers
    if not cap or p.config is None:
        return True
    return sum(len(v.servers) for v in p.config.virtuals) <= cap


def effective(cfg: LvsConfig, health: Mapping[ServerKey, Health],
              admin: Mapping[ServerKey, str]) -> dict[tuple[str, str], tuple[str, int]]:
    """(virtual, server) -> (effective state, weight in force) of every active real server
    of every active virtual. Pure: the rules of agent/dataplane/desired.py."""
    out: dict[tuple[str, str], tuple[str, int]] = {}
    for virtual in cfg.virtuals:
        if not virtual.active:
            continue
        for server in virtual.servers:
            if not server.active:
                continue
            key = ServerKey(virtual.name, server.name)
            flag = admin.get(key)
            h = health.get(key, NOT_CHECKED)
            state = ("disabled" if flag == "disable" else "drained" if flag == "drain"
                     else "up" if h.state == "up" else "down")
            try:
                w = server_weight(virtual, server, h, flag)
            except ValueError:
                w = None
            out[(virtual.name, server.name)] = (state, w or 0)
    return out
