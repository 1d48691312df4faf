"""Health of the real servers, shared through etcd so every router holds one view: the shell.

Every router runs nanny on every real server and publishes what it sees under
``observations/<node>/...`` (bound to its lease). The active decides the *effective*
health (its own view, or a majority of the live routers' views) and writes it under
``health/`` in transactions fenced by its term, only on change. Both are stored a group
per virtual service (or per shard of a big one, :mod:`cluster.health_layout`);
:mod:`agent.health.groups` says which groups a publication writes. Backups program their
data plane from that shared view, so a new active starts warm.

The decisions are :class:`~agent.health.core.HealthCore`'s (pure); this module runs nanny,
feeds the core with nanny's news, the view's changes and the role, and carries out the writes
the core asks for: batched transactions of at most :data:`TXN_OPS` operations, each verdict
transaction fenced by the term and made only while ``licensed()`` (the active's licence,
asked at the instant of the act); anything that fails is retried. Changes that come within
:data:`GATHER` go out together, and all of it within :data:`OPS_RATE` operations and
:data:`ENTRY_RATE` servers' documents a second (token buckets, :mod:`agent.health.budget`),
so a fleet flapping at once cannot flood etcd, nor rewrite a group once for each server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from cluster.bulk import give_back, in_thread
from cluster.documents import HealthTransition
from cluster.documents.health import HealthGroup, ObservationGroup, group_of
from cluster.election import fence
from cluster.etcd.client import Delete, Etcd, EtcdAuthError, EtcdUnavailable, Put
from cluster.health import Health, ServerKey
from cluster.health_layout import Layout
from cluster.keys import Keys
from cluster.model import LvsConfig

from ..checks import Targets, targets
from ..history import health_transitions
from ..nanny import Engine, Transition
from ..view import ClusterView
from . import groups
from .budget import OpsBudget
from .core import HealthCore, Outcome, Touched, Writes

log = logging.getLogger(__name__)

TXN_OPS = 100  # etcd allows 128 operations per transaction
TXN_BYTES = 512 * 1024  # and 1.5 MiB per request by default
RETRY = 0.2  # seconds before writes that failed are tried again
GATHER = 0.05  # seconds a publication waits, so that a burst of changes goes as one
OPS_RATE = 2000.0  # etcd operations a second, on average, for health (verdicts and
OPS_BURST = 1000.0  # observations together); a burst of this many goes at once
ENTRY_RATE = 20000.0  # servers' documents written a second, on average, in whole groups:
ENTRY_BURST = 20000.0  # a group is rewritten whole for one change, so when changes come
# one by one (40,000 first check results), waiting for this budget lets a group gather them
PUBLISH_MAX = 5000  # servers of each kind taken into one publication
CONFIGURE_CHUNK = 2000  # new servers configured per turn of the event loop
GIVE_BACK = 1000  # entries published in a row after which the C heap's free pages go back


class HealthService:
    """nanny + publication. ``on_change()`` fires when our own checks changed what the data
    plane should program (the data plane first, etcd right after); for every other input the
    caller updates the data plane itself."""

    def __init__(self, etcd: Etcd, keys: Keys, node: str, view: ClusterView,
                 on_change: Callable[[], None], lease: Callable[[], int | None],
                 licensed: Callable[[], bool] = lambda: True,
                 history: Callable[[HealthTransition], object] | None = None,
                 quiet: Callable[[], Awaitable[None]] | None = None) -> None:
        self.etcd, self.keys, self.node, self.view = etcd, keys, node, view
        self.quiet = quiet  # waits while the data plane programs (it goes first)
        self.on_change = on_change
        self.lease = lease
        self.licensed = licensed  # the active's licence, asked before each fenced write
        self.history = history  # takes the effective-state changes we stored (never blocks)
        self.core = HealthCore(node)
        self.engine = Engine()
        self.engine.subscribe(self._checked)
        self._wake = asyncio.Event()
        self.writes = 0
        self.write_errors = 0
        self.cause: float | None = None  # detection time of the newest unapplied decision
        self.transitions: dict[str, int] = {}  # our own checks' state changes, by new state
        self.budget = OpsBudget(OPS_RATE, OPS_BURST)
        self.entries = OpsBudget(ENTRY_RATE, ENTRY_BURST)
        self.clock = time.monotonic
        self.layout = Layout()  # which group holds each configured server
        self._published = 0  # entries published since the C heap was last handed back

    @property
    def term(self) -> int:
        """The term we decide under (> 0 while active)."""
        return self.core.term

    def take_cause(self) -> float | None:
        """When the decision the data plane is about to apply was detected (epoch)."""
        cause, self.cause = self.cause, None
        return cause

    def for_dataplane(self) -> Mapping[ServerKey, Health]:
        """What to program: our decisions while active, else the shared view."""
        return self.core.plane

    # -- inputs ---------------------------------------------------------------------------

    def configure(self, cfg: LvsConfig, wanted: Targets | None = None) -> None:
        """Check exactly the programmed servers; a new one starts from the shared view.
        ``wanted``: ``targets(cfg)`` if the caller made it already (off the loop)."""
        self._sync()
        wanted = targets(cfg) if wanted is None else wanted
        self.layout = Layout.of(wanted)
        self.engine.set_targets(self._given(wanted))
        own: dict[ServerKey, Health] = self.engine.snapshot()  # type: ignore[assignment]
        self._take(self.core.configure(own, cfg.health_policy, self.view.state))

    async def configure_async(self, cfg: LvsConfig, wanted: Targets | None = None) -> None:
        """:meth:`configure`, :data:`CONFIGURE_CHUNK` new servers at a time, the event loop
        running in between (a config of 40,000 servers is a second of Python here). The
        servers of the old config that stay, and the removal of the others, come first;
        each new server starts as :meth:`configure` would start it."""
        if wanted is None:
            wanted = await in_thread(targets, cfg)
        new = [key for key in wanted if not self.engine.has(key)]
        if len(new) <= CONFIGURE_CHUNK:
            self.configure(cfg, wanted)
            return
        fresh = set(new)
        kept = {key: value for key, value in wanted.items() if key not in fresh}
        layout = await in_thread(Layout.of, wanted)
        self._sync()
        self.layout = layout
        self.engine.set_targets(self._given(kept))  # the others go
        own: dict[ServerKey, Health] = self.engine.snapshot()  # type: ignore[assignment]
        self._take(self.core.configure(own, cfg.health_policy, self.view.state, fresh))
        for i in range(0, len(new), CONFIGURE_CHUNK):
            await asyncio.sleep(0)
            self._sync()
            part = {key: wanted[key] for key in new[i:i + CONFIGURE_CHUNK]}
            self.engine.add_targets(self._given(part))
            # (the caller updates the data plane once at the end: each nftables write of
            # a big table costs a second or more of every reader's time)
            self._take(self.core.add(self.engine.snapshot(part), self.view.state))

    def _given(self, part: Targets) -> dict[ServerKey, tuple[object, ...]]:
        """Engine targets for ``part``, each new one starting from the shared view."""
        warm = self.core.warm_start(part, self.view.state)
        return {key: (check, state, warm.get(key)) for key, (check, state) in part.items()}

    def activate(self, term: int) -> None:
        """Start deciding: from the shared view (warm), corrected by what we see ourselves."""
        self._sync()
        self._take(self.core.activate(term, self.view.state))

    def rekeyed(self, term: int) -> None:
        """Our term changed while we stayed active: fence our writes with the new one."""
        self._sync()
        self._take(self.core.rekeyed(term, self.view.state))

    def deactivate(self) -> None:
        self._sync()
        self._take(self.core.deactivate(self.view.state))

    def view_changed(self) -> bool:
        """Something in etcd moved; True if the data plane should look again."""
        return self._sync()

    def _sync(self) -> bool:
        """Feed the core with the keys the view changed since the last time."""
        touched = self.view.take_touched()
        if touched is not None and not touched:
            return False
        changed = Touched.take(self.view.state)
        return self._take(self.core.etcd_changed(self.view.state,
                                                 changed if touched is not None else None))

    def _checked(self, tr: Transition) -> None:
        key: ServerKey = tr.key  # type: ignore[assignment]
        if tr.old != tr.new:
            self.transitions[tr.new] = self.transitions.get(tr.new, 0) + 1
        if self._take(self.core.checked(key, tr.health, self.view.state)):
            self.on_change()  # the data plane first, etcd right after

    def _take(self, out: Outcome) -> bool:
        if out.cause is not None:
            self.cause = out.cause if self.cause is None else min(self.cause, out.cause)
        if self.core.pending:
            self._wake.set()
        return bool(out.plane)

    # -- publication ----------------------------------------------------------------------

    async def run(self) -> None:
        async with self.engine:
            while True:
                await self._wake.wait()
                await asyncio.sleep(GATHER)  # a burst of changes: one publication
                delay = self.entries.wait(1, self.clock())
                if delay > 0:  # the last publication's groups are paid for first
                    await asyncio.sleep(delay)
                if self.quiet is not None:
                    await self.quiet()
                self._wake.clear()
                await self._publish()

    async def _txn(self, guards: list[object], ops: list[Put | Delete]) -> bool:
        """One transaction of ours, within the operations budget."""
        delay = self.budget.wait(len(ops), self.clock())
        if delay > 0:
            await asyncio.sleep(delay)
        self.budget.spend(len(ops), self.clock())
        return (await self.etcd.txn(guards, ops)).succeeded  # type: ignore[arg-type]

    async def _publish(self) -> None:
        # A bounded share at a time (the budget paces it anyway): a new config of 40,000
        # servers would otherwise compare and sort them all in one turn of the loop.
        writes = self.core.take_writes(self.view.state, limit=PUBLISH_MAX)
        if self.core.pending:
            self._wake.set()  # the rest: the next publication
        if not writes and not (self.core.term and self.view.state.singles("health")):
            return
        try:
            await self._write_verdicts(writes)
            if not await self._write_observations(writes):
                self.core.unwritten(Writes(observations=writes.observations))
                await self._retry()
        except (EtcdUnavailable, EtcdAuthError) as exc:
            self.write_errors += 1
            log.warning("health publication failed (will retry): %s", exc)
            self.core.unwritten(writes)
            await self._retry()
        self._published += len(writes.verdicts) + len(writes.observations)
        if self._published >= GIVE_BACK and not self.core.pending:
            self._published = 0  # a new config's servers all published: the C heap's
            await in_thread(give_back)  # free pages (the documents' encoding) go back

    async def _retry(self) -> None:
        await asyncio.sleep(RETRY)
        self._wake.set()

    async def _write_verdicts(self, writes: Writes) -> None:
        """Our verdicts, as whole group documents, in transactions fenced by the term and
        made only while licensed. Servers still stored one key each (the layout before
        groups) move into their groups."""
        state = self.view.state
        legacy = [ServerKey(*parts) for parts in state.singles("health")][:PUBLISH_MAX]
        term = writes.term or self.core.term
        if not (writes.verdicts or legacy) or not term:
            return
        plan = groups.plan([*writes.verdicts, *legacy], self.layout, self.core.verdicts,
                           state.health_groups, state.health.get,
                           lambda key: state.single("health", *key))
        for part in self._transactions(plan, HealthGroup, self.keys.health_group,
                                       self.keys.health, None):
            stored = {key: state.health[key] for gw, _ in part for key in gw.due
                      if key in state.health}  # before our write reaches the view
            ops = [op for _, gw_ops in part for op in gw_ops]
            delay = self.budget.wait(len(ops), self.clock())
            if delay > 0:  # (before the licence is asked: it is asked at the act)
                await asyncio.sleep(delay)
            if not self.licensed():  # the write is fenced by the term, too: both must hold
                raise EtcdUnavailable("not licensed to write as the active right now")
            self.budget.spend(len(ops), self.clock())
            self.entries.spend(_entries(part), self.clock())
            result = await self.etcd.txn([fence(self.keys, term)], ops)
            if not result.succeeded:
                log.warning("health not written: term %d no longer holds the leader key", term)
                return
            self.writes += len(ops)
            if self.history is not None:
                written = {key: writes.verdicts[key] for gw, _ in part for key in gw.due
                           if key in writes.verdicts}
                for tr in health_transitions(stored, written, by=self.node, term=term,
                                             at=time.time()):
                    self.history(tr)

    async def _write_observations(self, writes: Writes) -> bool:
        """Our observations, as whole group documents bound to our lease; False if we have
        no lease (yet)."""
        if not writes.observations:
            return True
        lease = self.lease()
        if lease is None:
            return False
        state, me = self.view.state, self.node
        plan = groups.plan(writes.observations, self.layout, self.core.observed,
                           _Ours(state.observation_groups, me),
                           lambda key: (state.observations.get(key) or {}).get(me),
                           lambda key: state.single("observations", me, *key))
        for part in self._transactions(
                plan, ObservationGroup, lambda v, n: self.keys.observation_group(me, v, n),
                lambda v, s: self.keys.observation(me, v, s), lease):
            self.entries.spend(_entries(part), self.clock())
            await self._txn([], [op for _, gw_ops in part for op in gw_ops])
        return True

    def _transactions(self, plan: list[groups.GroupWrite[Any]], group: type[Any],
                      group_key: Callable[[str, int], str], single_key: Callable[[str, str], str],
                      lease: int | None) -> Iterator[list[tuple[groups.GroupWrite[Any],
                                                                list[Put | Delete]]]]:
        """The plan as etcd operations, cut into transactions of at most :data:`TXN_OPS`
        operations and :data:`TXN_BYTES` bytes (a group's operations stay together), each
        group encoded only when its transaction comes, and announced to the view
        (:meth:`ClusterState.expect`) so that it is not decoded again when the watch brings
        it back."""
        part: list[tuple[groups.GroupWrite[Any], list[Put | Delete]]] = []
        ops = size = 0
        for gw in plan:
            encoded: list[Put | Delete] = []
            if gw.shard is not None:
                key = group_key(gw.virtual, gw.shard)
                if gw.entries is None:
                    encoded.append(Delete(key))
                else:
                    value = group_of(gw.entries, group).encode().encode()
                    self.view.state.expect(key, value, gw.entries)
                    encoded.append(Put(key, value, lease or 0))
            encoded += [Delete(single_key(*k)) for k in gw.singles]
            weight = sum(len(op.value) for op in encoded if isinstance(op, Put))
            if part and (ops + len(encoded) > TXN_OPS or size + weight > TXN_BYTES):
                yield part
                part, ops, size = [], 0, 0
            part.append((gw, encoded))
            ops, size = ops + len(encoded), size + weight
        if part:
            yield part


def _entries(part: list[tuple[groups.GroupWrite[Any], list[Put | Delete]]]) -> int:
    """Servers' documents a transaction writes (the entries of its groups)."""
    return sum(len(gw.entries) for gw, _ in part if gw.entries)


class _Ours:
    """Our own stored observation groups, as :func:`groups.plan` reads them:
    {virtual: {shard: {server: observation}}}."""

    def __init__(self, stored: Mapping[tuple[str, str], Mapping[str, Mapping[str, Any]]],
                 me: str) -> None:
        self.stored, self.me = stored, me

    def get(self, virtual: str, default: Any = None) -> Any:
        return self.stored.get((self.me, virtual), default)
