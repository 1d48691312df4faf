"""The cluster as this agent sees it: one resumable watch on ``/lvs/<cluster>/``.

Keeps a typed :class:`~cluster.documents.ClusterState`, updated one changed key at a time
(an update costs what it touches, not the size of the cluster), and hands the config to a
:class:`~cluster.config_follow.ConfigFollower`, so only valid configs are adopted.
Keys and values it does not understand are counted and logged once each, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.config_follow import ConfigFollower
from cluster.documents import ClusterState, LeaderKey
from cluster.etcd.client import KV, Etcd
from cluster.etcd.watch import Change, PrefixWatch, Snapshot
from cluster.health import ServerKey
from cluster.keys import Keys

from .latency import DETECT_TO_VIEW

log = logging.getLogger(__name__)

CHUNK = 1000  # keys decoded between two turns of the event loop, at most
SLICE = 0.02  # seconds of decoding between two turns, at most (a key of a health group
# holds up to 16 servers' documents or more: 1,000 of them were 0.2-0.3 s at 100,000)
LOGGED_VERDICTS = 3  # a health key changing more servers at once is not logged server by server
TERMS_KEPT = 8  # leader terms remembered (who held each), for the history of takeovers


@dataclass
class ViewStats:
    junk: int = 0
    leader_changes: dict[str, int] = field(default_factory=dict)  # reason -> count


def leader_change(prev: LeaderKey | None, new: LeaderKey,
                  released: tuple[str, int] | None) -> str | None:
    """Why the leader key now holds ``new`` (None: no change). ``prev``: the last leader
    seen before; ``released``: the hand-over marker (node, term). Reasons: ``first`` (no
    leader seen before), ``rekey`` (same router, new term), ``resigned`` (the previous one
    handed over: switchover, preemption, shutdown), ``lost`` (its key vanished with its
    lease: crash, partition, fast eviction)."""
    if prev is None:
        return "first"
    if prev.term == new.term:
        return None
    if prev.node == new.node:
        return "rekey"
    if released is not None and released == (prev.node, prev.term):
        return "resigned"
    return "lost"


@dataclass
class ClusterView:
    etcd: Etcd
    keys: Keys
    follower: ConfigFollower
    clock: Callable[[], float] = time.monotonic
    kvs: dict[str, KV] = field(default_factory=dict)
    state: ClusterState = field(init=False)
    leader: LeaderKey | None = None
    leader_known: bool = False
    leader_absent_since: float | None = None
    last_term: int = 0
    leader_revision: int = 0  # the etcd revision the leader fields date from
    leader_gone_at: float | None = None  # when the leader key was last seen to go (kept)
    terms: dict[int, str] = field(default_factory=dict)  # the last few terms seen -> node
    version: int = 0  # bumped on every update: a cache key for derived views
    touched: set[str] | None = None  # keys changed since take_touched() (None: a snapshot)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stats: ViewStats = field(default_factory=ViewStats)
    watch: PrefixWatch | None = None
    last_leader: LeaderKey | None = None  # the newest leader key seen (kept when it goes)

    def __post_init__(self) -> None:
        self.state = ClusterState(self.keys)
        self.follower.parts = self.state.config_parts  # a format-2 config's parts

    async def run(self) -> None:
        self.watch = PrefixWatch(self.etcd, self.keys.prefix, max_backoff=0.5)
        history = self.keys.history_prefix
        async for update in self.watch:
            if not isinstance(update, Snapshot):
                # The cluster's history (written about once a second while things happen)
                # changes nothing an agent decides on: no wake-up, no data-plane pass.
                update = [c for c in update if not c.key.startswith(history)]
                if not update:
                    continue
            self.version += 1
            if isinstance(update, Snapshot):
                self.state = await self._rebuild(update)
                self.follower.parts = self.state.config_parts
                self.touched = None
                self.kvs = {k: kv for k, kv in update.items.items() if self._kept(k)}
                for junk in self.state.junk_list():
                    self._junk(junk.key, junk.why)
                kv = self.kvs.get(self.keys.leader)
                self._leader_seen(LeaderKey.from_kv(kv) if kv else None, update.revision,
                                  snapshot=True)
                config = self.kvs.get(self.keys.config)
                if config is not None:
                    await self.follower.offer(config)
            else:
                await self._apply_all(update)
            self.version += 1  # again: listeners may have cached mid-update
            self.changed.set()

    async def _rebuild(self, snapshot: Snapshot) -> ClusterState:
        """``ClusterState.from_kvs`` of a snapshot, letting the loop run every
        :data:`CHUNK` keys or :data:`SLICE` seconds (100,000 keys take about a second);
        readers keep the old state until the new one is complete."""
        state = ClusterState(self.keys)
        done, since = 0, time.monotonic()
        for kv in snapshot.items.values():
            state.apply(kv.key, kv)
            done += 1
            if done >= CHUNK or time.monotonic() - since > SLICE:
                await asyncio.sleep(0)
                done, since = 0, time.monotonic()
        return state

    async def _apply_all(self, changes: list[Change]) -> None:
        """Apply a watch response's changes, letting the loop run every :data:`CHUNK` of
        them or :data:`SLICE` seconds (a push of 40,000 servers brings their health in
        responses of thousands of keys), but only between two revisions: readers never see
        half a transaction."""
        done, since = 0, time.monotonic()
        for i, change in enumerate(changes):
            if (done >= CHUNK or time.monotonic() - since > SLICE) and done \
                    and change.revision != changes[i - 1].revision:
                await asyncio.sleep(0)
                done, since = 0, time.monotonic()
            await self._apply(change)
            done += 1

    def _kept(self, key: str) -> bool:
        """Whether :attr:`kvs` keeps ``key``'s raw value: the control keys, not the history
        nor the bulk (health, observations, config parts: 100,000s of keys at scale, held
        decoded in :attr:`state` already)."""
        return not key.startswith(self._bulk)

    @property
    def _bulk(self) -> tuple[str, ...]:
        k = self.keys
        return (k.history_prefix, k.health_prefix, k.observations_prefix, k.config_parts_prefix)

    async def _apply(self, change: Change) -> None:
        if change.kv is None:
            self.kvs.pop(change.key, None)
        elif self._kept(change.key):
            self.kvs[change.key] = change.kv
        junk = self.state.apply(change.key, change.kv)
        if self.touched is not None:
            self.touched.add(change.key)
        if junk is not None:
            self._junk(junk.key, junk.why)
        if change.key == self.keys.leader:
            self._leader_seen(LeaderKey.from_kv(change.kv) if change.kv else None,
                              change.revision)
        elif change.kv is not None and change.key == self.keys.config:
            await self.follower.offer(change.kv)
        elif change.kv is not None and change.key.startswith(self.keys.health_prefix):
            self._health_seen(self.state)

    def observe_leader(self, leader: LeaderKey | None, revision: int) -> bool:
        """The leader key as etcd held it at ``revision``, read or written by us directly (a
        campaign, a resign): fresher than the watch may be. Applied only if newer than what
        the view holds (the watch's older events of the key are then skipped); True if it
        was."""
        return self._leader_seen(leader, revision)

    def _leader_seen(self, leader: LeaderKey | None, revision: int,
                     snapshot: bool = False) -> bool:
        """The leader key at ``revision`` (None: absent). A snapshot always counts: it
        replaces the whole view (and a store restored from a backup goes back in time)."""
        if revision <= self.leader_revision and not snapshot:
            return False
        self.leader_known, self.leader_revision = True, revision
        if leader is None:
            if self.leader is not None or self.leader_absent_since is None:
                self.leader_absent_since = self.leader_gone_at = self.clock()
            self.leader = None
        else:
            reason = leader_change(self.last_leader, leader, self.released())
            if reason is not None:
                n = self.stats.leader_changes
                n[reason] = n.get(reason, 0) + 1
            self.leader = self.last_leader = leader
            self.leader_absent_since = None
            self.last_term = max(self.last_term, leader.term)
            self.terms[leader.term] = leader.node
            while len(self.terms) > TERMS_KEPT:
                del self.terms[min(self.terms)]
        return True

    def leader_before(self, term: int) -> tuple[str, int] | None:
        """The newest leader seen with a term older than ``term``: (node, its term)."""
        older = [t for t in self.terms if t < term]
        return (self.terms[max(older)], max(older)) if older else None

    def _junk(self, key: str, why: str) -> None:
        self.stats.junk += 1
        log.warning("ignoring %s: %s", key, why)

    def take_touched(self) -> set[str] | None:
        """The keys changed since the last call; None if a snapshot replaced the state since
        (look at everything). One consumer: the health service."""
        touched, self.touched = self.touched, set()
        return touched

    # -- typed reads (the role machine's inputs) -------------------------------------------

    def registered(self) -> set[str]:
        """Routers that run: a ``nodes/`` key (readable or not: the key is their lease's),
        unless it says the router is still waiting for a config it can run ("starting")."""
        return self.state.running

    def switchover(self) -> tuple[str, int] | None:
        """A pending switchover request: (target, "" for any; the term it was made against)."""
        req = self.state.switchover
        return (req.to, req.term) if req is not None else None

    def released(self) -> tuple[str, int] | None:
        marker = self.state.released
        return (marker.node, marker.term) if marker is not None else None

    def evict_votes(self) -> tuple[tuple[str, int], ...]:
        """Fast-eviction votes: (voter, term) from ``control/evict-<voter>``."""
        return tuple((voter, vote.term) for voter, vote in self.state.evictions.items())

    def hash_seed(self) -> int:
        """The cluster's hash seed for Maglev tables: stored in etcd, else the default of
        the cluster name (cluster.documents.HashSeed)."""
        return self.state.hash_seed()

    def admin(self) -> dict[ServerKey, str]:
        """Operator overrides: {(virtual, server): "drain" | "disable"}."""
        return {key: flag.state for key, flag in self.state.admin.items()}

    def _health_seen(self, state: ClusterState) -> None:
        """How long after its detection a health change became visible here: a metric for
        each, and a log line for a few (a new config's publication brings thousands)."""
        now = time.time()
        epochs: dict[str, float] = {}  # a publication's servers share few timestamps
        for server in state.last_verdicts:
            verdict = state.health.get(server)
            if verdict is None or not verdict.since:
                continue
            since = epochs.get(verdict.since)
            if since is None:
                since = epochs[verdict.since] = verdict.since_epoch
            took = now - since
            if 0 <= took < 10:
                DETECT_TO_VIEW.observe(took)
                if len(state.last_verdicts) <= LOGGED_VERDICTS:
                    log.info("health %s/%s %s visible here %.1f ms after detection",
                             server.virtual, server.server, verdict.state, took * 1000)
