"""What this router writes to the cluster's history (cluster/history.py), and how.

* :func:`takeover_event`: the new active's account of how it got the role (pure): a
  graceful hand-over (the old active left the ``control/released`` marker for its term) is
  a :class:`~cluster.documents.SwitchoverEvent`, anything else a
  :class:`~cluster.documents.FailoverEvent`.
* :func:`health_transitions`: the effective-state changes among verdicts the active just
  stored (pure).
* :class:`HistoryWriter`: a bounded queue and one task that writes it. ``record()`` never
  blocks and never raises; the task writes at most one transaction per
  :data:`FLUSH_EVERY` seconds (role events at once), at most :data:`TXN_PUTS` events each,
  then prunes that kind a few keys at a time. When etcd is out the events wait in the queue;
  past its bound the newest are dropped and counted (``stats``), and the next health
  transition written says how many went before it. Nothing here touches the safety path:
  the role loop only calls ``record()``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cluster.documents import (
    FailoverEvent,
    HealthTransition,
    HealthVerdict,
    ReleasedMarker,
    SwitchoverEvent,
    SwitchoverRequest,
    iso,
)
from cluster.etcd.client import Etcd, Put
from cluster.health import ServerKey
from cluster.history import event_id, prune
from cluster.keys import Keys

log = logging.getLogger(__name__)

FLUSH_EVERY = 1.0  # seconds between two writes of health transitions
TXN_PUTS = 100  # events per transaction (etcd allows 128 operations)
HEALTH_QUEUE = 1000  # health transitions waiting at most; past it the newest are dropped
ROLE_QUEUE = 100  # failovers and switchovers waiting at most
PRUNE_EVERY = 60.0  # seconds between two age prunes while nothing is written
PRUNE_SLACK = 10  # deletes per prune beyond the events just written: a backlog goes slowly
MAX_BACKOFF = 10.0
ROUTER_KINDS = ("failover", "switchover", "health")  # what routers write (and age-prune)


# -- pure: what to record -----------------------------------------------------------------

@dataclass(frozen=True)
class OldActive:
    """What the new active knew of the router it took over from, at the takeover."""

    node: str
    term: int
    last_active: float | None = None
    """Receive time (monotonic) of its last heartbeat claiming active; None: none heard."""
    alive: bool = False
    """A valid heartbeat from it within deadtime (it runs, whatever its role)."""
    etcd_ok: bool = True
    """What its newest heartbeat said of its etcd link."""
    role: str = ""
    """The role its newest heartbeat claimed."""


@dataclass(frozen=True)
class Takeover:
    """What a new active saw as it took the role, before its VIPs went up."""

    old: OldActive | None = None
    """The router that had the role (None: none known)."""
    key_gone: float | None = None
    """When it saw the leader key go (monotonic)."""
    released: ReleasedMarker | None = None
    """The hand-over marker (``control/released``) it saw."""
    request: SwitchoverRequest | None = None
    """The switchover request (``control/switchover``) it saw."""


def takeover_event(*, node: str, term: int, at: float, vips_up: float,
                   seen: Takeover) -> FailoverEvent | SwitchoverEvent:
    """The event a new active writes once its VIPs are up (``vips_up``, monotonic; ``at``:
    the same instant, epoch)."""
    old, key_gone, released, request = seen.old, seen.key_gone, seen.released, seen.request
    start = old.last_active if old is not None and old.last_active is not None else key_gone
    gap = _ms(vips_up - start) if start is not None else None
    prev, prev_term = (old.node, old.term) if old is not None else ("", 0)
    graceful = released is not None and old is not None and released.node == old.node \
        and released.term >= old.term > 0
    if graceful:
        assert released is not None
        asked = request is not None and request.term == prev_term
        if asked:
            assert request is not None
            return SwitchoverEvent(at=iso(at), node=node, term=term, previous=prev,
                                   previous_term=prev_term, by=request.by,
                                   reason=request.reason, to=request.to, request=request.id,
                                   gap_ms=gap)
        return SwitchoverEvent(at=iso(at), node=node, term=term, previous=prev,
                               previous_term=prev_term, by=prev,
                               reason=released.reason or "resigned", gap_ms=gap)
    return FailoverEvent(at=iso(at), node=node, term=term, previous=prev,
                         previous_term=prev_term, reason=failover_reason(old, vips_up, node),
                         gap_ms=gap, takeover_ms=_ms(vips_up - key_gone)
                         if key_gone is not None else None)


def failover_reason(old: OldActive | None, now: float, me: str = "") -> str:
    """Why the old active lost the role, as far as the new one (``me``) can tell from its
    heartbeats."""
    if old is None or not old.node:
        return "no active router before (cluster start)"
    name = old.node
    if name == me:
        return f"{me} lost its own term {old.term} and took the role again"
    if not old.alive:
        if old.last_active is None:
            return f"{name} not heard (no heartbeat); its leader key went away"
        return (f"{name} silent for {now - old.last_active:.1f} s (no heartbeat); "
                "its leader key went away")
    if not old.etcd_ok:
        return f"{name} lost etcd (its heartbeats go on); its lease ran out"
    if old.role != "active":
        return f"{name} gave the role up (it runs as {old.role or '?'})"
    return f"{name}'s leader key went away (lease expired or revoked)"


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def health_transitions(stored: Mapping[ServerKey, HealthVerdict],
                       written: Mapping[ServerKey, HealthVerdict | None], *, by: str,
                       term: int, at: float) -> list[HealthTransition]:
    """The effective-state changes among ``written`` verdicts (``stored``: what etcd held
    before). A server's first verdict ``unknown``, and a server coming up from no verdict
    or ``unknown`` (checks starting: every server of a cluster at once), are not
    transitions; a deleted verdict (server left the config) is not one either."""
    out = []
    for key, doc in written.items():
        old = stored.get(key)
        was = old.state if old is not None else None
        if doc is None or doc.state == was:
            continue
        if was in (None, "unknown") and doc.state in ("up", "unknown"):
            continue
        out.append(HealthTransition(at=iso(at), virtual=key.virtual, server=key.server,
                                    previous=was, state=doc.state, since=doc.since,
                                    reason=doc.reason, observed_by=doc.observed_by, by=by,
                                    term=term))
    return out


# -- the writer ---------------------------------------------------------------------------

@dataclass
class HistoryStats:
    written: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    pruned: int = 0
    errors: int = 0


Recordable = FailoverEvent | SwitchoverEvent | HealthTransition


def metrics(writer: HistoryWriter) -> Iterator[Metric]:
    """The writer's Prometheus series (PulseCollector yields them): events written and
    dropped by kind, write errors, events pruned, events waiting."""
    st = writer.stats
    written = CounterMetricFamily("lvs_history_events_written",
                                  "events this router wrote to the cluster's history",
                                  labels=["kind"])
    dropped = CounterMetricFamily("lvs_history_events_dropped", "events this router could "
                                  "not record (queue full while etcd was unreachable)",
                                  labels=["kind"])
    for kind in ROUTER_KINDS:
        written.add_metric([kind], st.written.get(kind, 0))
        dropped.add_metric([kind], st.dropped.get(kind, 0))
    yield written
    yield dropped
    yield CounterMetricFamily("lvs_history_write_errors", "failed writes of the history "
                              "(the events stay queued)", value=st.errors)
    yield CounterMetricFamily("lvs_history_events_pruned", "old events this router deleted "
                              "(retention)", value=st.pruned)
    yield GaugeMetricFamily("lvs_history_events_queued", "events waiting to be written",
                            value=writer.pending)


class HistoryWriter:
    """Writes this router's events; ``record()`` from anywhere, ``run()`` as a task."""

    def __init__(self, etcd: Etcd, keys: Keys, node: str, *,
                 pruner: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.time,
                 flush_every: float = FLUSH_EVERY, health_queue: int = HEALTH_QUEUE) -> None:
        self.etcd, self.keys, self.node = etcd, keys, node
        self.pruner = pruner  # True on the router that prunes by age (the active)
        self.clock = clock
        self.flush_every = flush_every
        self.stats = HistoryStats()
        self._role: collections.deque[tuple[str, Recordable]] = collections.deque()
        self._health: collections.deque[HealthTransition] = collections.deque()
        self._health_max = health_queue
        self._dropped_since = 0  # health transitions dropped since the last one written
        self._seq = 0
        self._wake = asyncio.Event()
        self._last_prune = 0.0

    @property
    def pending(self) -> int:
        return len(self._role) + len(self._health)

    def record(self, doc: Recordable) -> bool:
        """Queue an event for writing; False if the queue is full (dropped and counted).
        Never blocks, never raises."""
        if isinstance(doc, HealthTransition):
            if len(self._health) >= self._health_max:
                return self._drop("health")
            self._health.append(doc)
        else:
            kind = "failover" if isinstance(doc, FailoverEvent) else "switchover"
            if len(self._role) >= ROLE_QUEUE:
                return self._drop(kind)
            self._role.append((kind, doc))
            self._wake.set()  # rare and awaited: at once
        return True

    def _drop(self, kind: str) -> bool:
        self.stats.dropped[kind] = self.stats.dropped.get(kind, 0) + 1
        if kind == "health":
            self._dropped_since += 1
        return False

    async def run(self) -> None:
        """Write what is queued, forever. Never raises (but for cancellation)."""
        backoff = self.flush_every
        while True:
            try:
                wrote = await self.flush()
                if not wrote and self.pruner() and self.clock() - self._last_prune > PRUNE_EVERY:
                    self._last_prune = self.clock()
                    for kind in ROUTER_KINDS:
                        self.stats.pruned += await prune(self.etcd, self.keys, kind,
                                                         now=self.clock())
                backoff = self.flush_every
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never fatal: the agent's safety path does not wait here
                self.stats.errors += 1
                log.warning("history not written (%d queued, retrying in %.0f s): %s",
                            self.pending, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if self._role:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_every)
            except TimeoutError:
                pass

    async def flush(self) -> bool:
        """One transaction of queued events (role events first), then prune their kinds.
        Returns whether it wrote any; on failure the events stay queued."""
        batch: list[tuple[str, Recordable]] = list(self._role)[:TXN_PUTS]
        health = list(self._health)[:TXN_PUTS - len(batch)]
        dropped = self._dropped_since if health else 0
        if dropped:
            health[0] = health[0].model_copy(update={"dropped_before": dropped})
        batch += [("health", h) for h in health]
        if not batch:
            return False
        ops = []
        for kind, doc in batch:
            self._seq += 1
            key = self.keys.history_event(kind, event_id(self.clock(), self.node, self._seq))
            ops.append(Put(key, doc.encode()))
        await self.etcd.txn([], ops)
        for _ in range(len(batch) - len(health)):
            self._role.popleft()
        for _ in health:
            self._health.popleft()
        self._dropped_since -= dropped  # those dropped while we wrote: the next one says
        counts = collections.Counter(kind for kind, _ in batch)
        for kind, n in counts.items():
            self.stats.written[kind] = self.stats.written.get(kind, 0) + n
            self.stats.pruned += await prune(self.etcd, self.keys, kind, now=self.clock(),
                                             budget=n + PRUNE_SLACK)
        return True
