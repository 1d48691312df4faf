"""The cluster's history in etcd: failovers, switchovers, health transitions, config pushes.

Each event is one key, ``history/<kind>/<id>``, written once by the router (or lvsctl) that
made the transition and never changed; config pushes keep their own key,
``history/config/<serial_no>`` (cluster.store). Retention is bounded per kind, by count
and by age (:data:`RETENTION`), and pruned a few keys at a time (:func:`prune`).

Readers: :func:`read_recent` (the newest events, e.g. for a status page), :func:`read_history`
(the same with the revision they were read at) and :func:`watch_events` (new events as they
are written, resuming across etcd restarts). Nothing here fails on junk: a value that does
not decode is counted and left out.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from .documents import (
    ConfigHistoryEntry,
    DocumentError,
    FailoverEvent,
    HealthTransition,
    SwitchoverEvent,
    epoch,
)
from .etcd.client import KV, Delete, Etcd, prefix_end
from .etcd.watch import PrefixWatch, Snapshot
from .keys import Keys

log = logging.getLogger(__name__)

EventDoc = FailoverEvent | SwitchoverEvent | HealthTransition | ConfigHistoryEntry

DOCUMENTS: dict[str, type[EventDoc]] = {
    "failover": FailoverEvent,
    "switchover": SwitchoverEvent,
    "health": HealthTransition,
    "config": ConfigHistoryEntry,
}
KINDS: tuple[str, ...] = tuple(DOCUMENTS)
"""Every kind of event, in the order ``lvsctl history --kind`` lists them."""

DAY = 86400.0


@dataclass(frozen=True)
class Retention:
    """How much of one kind is kept: the newest ``keep`` events, none older than
    ``max_age`` seconds (None: no age limit)."""

    keep: int
    max_age: float | None


RETENTION: dict[str, Retention] = {
    # Rare and precious: a month-old failover still explains a pattern (flapping at night).
    "failover": Retention(1000, 90 * DAY),
    "switchover": Retention(1000, 90 * DAY),
    # Frequent: what matters is the recent past; the current state is in health/.
    "health": Retention(1000, 7 * DAY),
    # The cluster's change record: the last 100 pushes, however old (pruned by each push).
    "config": Retention(100, None),
}
"""How much of each kind is kept."""

PRUNE_BUDGET = 20
"""At most this many deletes per prune call beyond the events just written: old events go
a few at a time, never in a burst (every router watches the prefix)."""


# -- ids ----------------------------------------------------------------------------------

def event_id(at: float, node: str, seq: int) -> str:
    """``20261206T120102.123Z-r1-000017``: the time first (ids sort by time), then the
    writer and its own counter (unique across writers). ``node`` is used as is; the key
    builder percent-encodes it."""
    when = datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{when}Z-{node}-{seq % 1_000_000:06d}"


def id_time(event_id: str) -> float | None:
    """The epoch time an event id starts with; None if it does not start with one."""
    try:
        return datetime.strptime(event_id[:19], "%Y%m%dT%H%M%S.%f").replace(
            tzinfo=UTC).timestamp()
    except ValueError:
        return None


# -- events -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One event as read from etcd. ``revision`` is the key's create revision: the order of
    events across kinds and writers (wall clocks of different routers may disagree)."""

    kind: str
    key: str
    revision: int
    doc: EventDoc

    @property
    def at(self) -> str:
        """When it happened (UTC, as written)."""
        return self.doc.pushed_at if isinstance(self.doc, ConfigHistoryEntry) else self.doc.at

    @property
    def at_epoch(self) -> float:
        return epoch(self.at)

    @property
    def who(self) -> str:
        """Who made it happen: the new active, the requester, the deciding active, the
        pusher."""
        d = self.doc
        if isinstance(d, FailoverEvent):
            return d.node
        if isinstance(d, SwitchoverEvent):
            return d.by or d.previous
        if isinstance(d, HealthTransition):
            return d.by
        return d.pushed_by

    @property
    def gap_ms(self) -> int | None:
        d = self.doc
        return d.gap_ms if isinstance(d, FailoverEvent | SwitchoverEvent) else None

    def summary(self) -> str:
        """One line of plain text saying what happened, why and how long it took."""
        d = self.doc
        if isinstance(d, FailoverEvent):
            text = (f"{d.node} took over from {d.previous or '(none)'}"
                    f" (term {d.previous_term or '?'} -> {d.term})")
            return text + (f": {d.reason}" if d.reason else "") + _gap(d.gap_ms)
        if isinstance(d, SwitchoverEvent):
            asked = f"asked by {d.by}" if d.by else "asked"
            why = f" ({d.reason})" if d.reason else ""
            target = f", to {d.to}" if d.to and d.to != d.node else ""
            return (f"{d.previous or '?'} handed over to {d.node} (term {d.previous_term or '?'}"
                    f" -> {d.term}), {asked}{why}{target}" + _gap(d.gap_ms))
        if isinstance(d, HealthTransition):
            text = f"{d.virtual}/{d.server} {d.previous or 'new'} -> {d.state}"
            if d.reason:
                text += f" ({d.reason})"
            if d.observed_by:
                text += f", observed by {','.join(d.observed_by)}"
            if d.dropped_before:
                text += f" [{d.dropped_before} earlier transitions not recorded]"
            return text
        n = len(d.changes)
        return (f"serial_no {d.serial_no} pushed by {d.pushed_by or '?'}"
                f" ({n} change{'s' if n != 1 else ''})")

    def to_json(self) -> dict[str, Any]:
        """What ``-o json`` prints: the kind, when, the etcd key and revision, the summary,
        and the stored document as ``event``."""
        return {"kind": self.kind, "at": self.at, "who": self.who, "gap_ms": self.gap_ms,
                "summary": self.summary(), "key": self.key, "revision": self.revision,
                "event": self.doc.model_dump(mode="json")}


def _gap(ms: int | None) -> str:
    return "" if ms is None else f"; gap {ms} ms"


def kind_of(keys: Keys, key: str) -> str | None:
    """The kind of a history key (``history/<kind>/<id>``); None if not one of ours."""
    if not key.startswith(keys.history_prefix):
        return None
    parts = key[len(keys.history_prefix):].split("/")
    if len(parts) != 2 or not parts[1]:
        return None
    kind = unquote(parts[0])
    return kind if kind in DOCUMENTS else None


def decode_event(keys: Keys, kv: KV) -> Event:
    """The event stored in ``kv``; DocumentError if the key or the value is not one."""
    kind = kind_of(keys, kv.key)
    if kind is None:
        raise DocumentError("not a history event key")
    return Event(kind, kv.key, kv.create_revision, DOCUMENTS[kind].decode(kv.value))


@dataclass
class History:
    """Events read at one etcd revision, oldest first, and the keys that did not decode."""

    events: list[Event]
    revision: int
    junk: list[str] = field(default_factory=list)


def _kinds(kinds: Collection[str] | None) -> list[str]:
    if kinds is None:
        return list(KINDS)
    unknown = [k for k in kinds if k not in DOCUMENTS]
    if unknown:
        raise ValueError(f"unknown event kind {', '.join(unknown)} (kinds: {', '.join(KINDS)})")
    return [k for k in KINDS if k in kinds]


async def read_history(etcd: Etcd, keys: Keys, limit: int = 50, *,
                       kinds: Collection[str] | None = None,
                       since: float | None = None) -> History:
    """The newest ``limit`` events (0: every one kept) of ``kinds`` (None: all), none older
    than ``since`` (epoch), oldest first; all read at one revision (watch from it + 1).

    Each kind costs one range read of at most ``limit`` keys, newest first."""
    revision = 0
    per_kind: list[list[Event]] = []
    junk: list[str] = []
    for kind in _kinds(kinds):
        prefix = keys.history_kind_prefix(kind)
        kvs, rev = await etcd.range(prefix, prefix_end(prefix), limit=limit,
                                    newest_first=True, revision=revision)
        revision = revision or rev
        events = []
        for kv in reversed(kvs):
            try:
                ev = decode_event(keys, kv)
            except DocumentError as exc:
                junk.append(f"{kv.key}: {exc}")
                continue
            if since is None or ev.at_epoch >= since:
                events.append(ev)
        per_kind.append(sorted(events, key=_order))
    events = list(heapq.merge(*per_kind, key=_order))
    if limit:
        events = events[-limit:]
    if revision == 0:
        revision = await etcd.revision()
    return History(events, revision, junk)


def _order(e: Event) -> tuple[int, str]:
    """Events in etcd's order; those written in one transaction (one revision) by id."""
    return e.revision, e.key


async def read_recent(etcd: Etcd, keys: Keys, limit: int = 50, *,
                      kinds: Collection[str] | None = None) -> list[Event]:
    """The newest ``limit`` events, oldest first (a status page's "recent failovers and
    health transitions": ``kinds=("failover", "switchover", "health")``)."""
    return (await read_history(etcd, keys, limit, kinds=kinds)).events


async def watch_events(etcd: Etcd, keys: Keys, *, after_revision: int = 0,
                       kinds: Collection[str] | None = None) -> AsyncIterator[Event]:
    """Every event written after ``after_revision`` (0: from now on), in order, as it
    happens; forever. Follows etcd restarts; after a compaction it finds the events it
    missed in the reloaded prefix. Pruning (deletes) is not an event; junk is skipped."""
    wanted = set(_kinds(kinds))
    last = after_revision
    async for update in PrefixWatch(etcd, keys.history_prefix):
        if isinstance(update, Snapshot):
            if last == 0:
                last = update.revision  # from now on
                continue
            kvs: Iterable[KV] = sorted(update.items.values(),
                                       key=lambda kv: (kv.create_revision, kv.key))
        else:
            kvs = [c.kv for c in update if c.kv is not None]
        batch_last = last
        for kv in kvs:
            if kv.create_revision <= last or kv.mod_revision != kv.create_revision:
                continue  # seen, or an overwrite (events are written once)
            batch_last = max(batch_last, kv.create_revision)
            if kind_of(keys, kv.key) not in wanted:
                continue
            try:
                yield decode_event(keys, kv)
            except DocumentError as exc:
                log.warning("ignoring %s: %s", kv.key, exc)
        last = batch_last


# -- retention ----------------------------------------------------------------------------

def prune_plan(ids: Sequence[str], total: int, retention: Retention, now: float,
               budget: int) -> list[str]:
    """Which of the oldest ids to delete (pure). ``ids``: the oldest ids of the kind,
    oldest first; ``total``: how many the kind holds. Deletes the excess over
    ``retention.keep`` and those older than ``retention.max_age``, at most ``budget``.
    An id without a time is never pruned by age (only by count)."""
    out = list(ids[:max(0, min(total - retention.keep, budget))])
    if retention.max_age is not None:
        cutoff = now - retention.max_age
        for event_id in ids[len(out):budget]:
            t = id_time(event_id)
            if t is None or t >= cutoff:
                break
            out.append(event_id)
    return out


async def prune(etcd: Etcd, keys: Keys, kind: str, *, now: float, budget: int = PRUNE_BUDGET,
                retention: Retention | None = None) -> int:
    """Delete up to ``budget`` events of ``kind`` that retention no longer keeps (one count,
    one keys-only range read, one transaction); returns how many went."""
    policy = retention or RETENTION[kind]
    prefix = keys.history_kind_prefix(kind)
    total = await etcd.count(prefix)
    if total == 0 or budget <= 0:
        return 0
    if total <= policy.keep and policy.max_age is None:
        return 0
    kvs, _ = await etcd.range(prefix, prefix_end(prefix), limit=budget, by_key=True,
                              keys_only=True)
    ids = [unquote(kv.key[len(prefix):]) for kv in kvs]
    doomed = set(prune_plan(ids, total, policy, now, budget))
    ops = [Delete(kv.key) for kv, i in zip(kvs, ids, strict=True) if i in doomed]
    if ops:
        await etcd.txn([], ops)
    return len(ops)
