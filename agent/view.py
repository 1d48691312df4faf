"""The cluster as this agent sees it: one resumable watch on ``/lvs/<cluster>/``.

Keeps the leader key, the registered nodes, operator requests and the config (through
:class:`~cluster.config_follow.ConfigFollower`, so only valid configs are adopted).
Keys and values it does not understand are counted and logged, never fatal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from cluster.config_follow import ConfigFollower
from cluster.election import LeaderKey
from cluster.etcd.client import KV, Etcd
from cluster.etcd.watch import Change, PrefixWatch, Snapshot
from cluster.keys import Keys, parse

from .latency import DETECT_TO_VIEW

log = logging.getLogger(__name__)


@dataclass
class ViewStats:
    junk: int = 0


@dataclass
class ClusterView:
    etcd: Etcd
    keys: Keys
    follower: ConfigFollower
    clock: Callable[[], float] = time.monotonic
    kvs: dict[str, KV] = field(default_factory=dict)
    leader: LeaderKey | None = None
    leader_known: bool = False
    leader_absent_since: float | None = None
    last_term: int = 0
    version: int = 0  # bumped on every update: a cache key for derived views
    touched: set[str] | None = None  # keys of the last update (None: a whole snapshot)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stats: ViewStats = field(default_factory=ViewStats)
    watch: PrefixWatch | None = None

    async def run(self) -> None:
        self.watch = PrefixWatch(self.etcd, self.keys.prefix, max_backoff=0.5)
        async for update in self.watch:
            self.version += 1
            self.touched = None if isinstance(update, Snapshot) else {c.key for c in update}
            if isinstance(update, Snapshot):
                self.kvs = dict(update.items)
                self._leader_changed(self.kvs.get(self.keys.leader))
                for kv in update.items.values():
                    await self._offer(kv)
            else:
                for change in update:
                    await self._apply(change)
            self.version += 1  # again: listeners may have cached mid-update
            self.changed.set()

    async def _apply(self, change: Change) -> None:
        if change.kv is None:
            self.kvs.pop(change.key, None)
        else:
            self.kvs[change.key] = change.kv
        if change.key == self.keys.leader:
            self._leader_changed(change.kv)
        elif change.kv is not None:
            await self._offer(change.kv)
            if change.key.startswith(self.keys.health_prefix):
                self._health_seen(change.key)

    def _leader_changed(self, kv: KV | None) -> None:
        self.leader_known = True
        if kv is None:
            if self.leader is not None or self.leader_absent_since is None:
                self.leader_absent_since = self.clock()
            self.leader = None
        else:
            self.leader = LeaderKey.from_kv(kv)
            self.leader_absent_since = None
            self.last_term = max(self.last_term, self.leader.term)

    async def _offer(self, kv: KV) -> None:
        pk = parse(self.keys, kv.key)
        if pk is None:
            self._junk(kv.key, "unknown key")
        elif pk.kind == "config":
            await self.follower.offer(kv)

    def _junk(self, key: str, why: str) -> None:
        self.stats.junk += 1
        log.warning("ignoring %s: %s", key, why)

    # -- typed reads ------------------------------------------------------------------

    def raw(self, key: str) -> Any:
        """The decoded JSON under ``key`` (None if absent or not JSON); nothing is counted."""
        kv = self.kvs.get(key)
        if kv is None:
            return None
        try:
            return json.loads(kv.value)
        except ValueError:
            return None

    def doc(self, key: str) -> dict[str, Any] | None:
        """The JSON object under ``key``; None if absent or not a JSON object (counted)."""
        kv = self.kvs.get(key)
        if kv is None:
            return None
        try:
            doc = json.loads(kv.value)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self._junk(key, "value is not a JSON object")
            return None
        return doc

    def registered(self) -> set[str]:
        prefix = self.keys.nodes_prefix
        return {pk.parts[0] for k in self.kvs if k.startswith(prefix)
                and (pk := parse(self.keys, k)) is not None}

    def switchover(self) -> tuple[str, int] | None:
        """A pending switchover request: (target, "" for any; the term it was made against)."""
        doc = self.doc(self.keys.switchover)
        if doc is None:
            return None
        to, term = doc.get("to", ""), doc.get("term", 0)
        if not isinstance(to, str) or not isinstance(term, int):
            self._junk(self.keys.switchover, "switchover request without to/term")
            return None
        return to, term

    def released(self) -> tuple[str, int] | None:
        doc = self.doc(self.keys.released)
        if doc is None:
            return None
        try:
            return str(doc["node"]), int(doc["term"])
        except (KeyError, TypeError, ValueError):
            self._junk(self.keys.released, "released marker without node/term")
            return None

    def evict_votes(self) -> tuple[tuple[str, int], ...]:
        """Fast-eviction votes: (voter, term) from ``control/evict-<voter>``."""
        prefix = self.keys.eviction("")
        out = []
        for key in [k for k in self.kvs if k.startswith(prefix)]:
            doc = self.doc(key)
            if doc is not None and isinstance(doc.get("term"), int):
                out.append((unquote(key[len(prefix):]), doc["term"]))
        return tuple(out)

    def admin(self) -> dict[tuple[str, str], str]:
        """Operator overrides: {(virtual, server): "drain" | "disable"}."""
        out = {}
        for key in [k for k in self.kvs if k.startswith(self.keys.admin_prefix)]:
            pk = parse(self.keys, key)
            doc = self.doc(key)
            if pk is None or doc is None:
                continue
            if doc.get("state") in ("drain", "disable"):
                out[(pk.parts[0], pk.parts[1])] = str(doc["state"])
            else:
                self._junk(key, f"admin state {doc.get('state')!r} is not drain or disable")
        return out

    def _health_seen(self, key: str) -> None:
        """Log how long after its detection a health change became visible here."""
        doc = self.doc(key)
        since = doc.get("since") if doc else None
        if not isinstance(since, str):
            return
        try:
            at = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return
        took = time.time() - at
        if 0 <= took < 10:
            DETECT_TO_VIEW.add(took)
            log.info("health %s %s visible here %.1f ms after detection",
                     key[len(self.keys.health_prefix):], doc.get("state"), took * 1000)
