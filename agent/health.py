"""Health of the real servers, shared through etcd so every router holds one view.

Every router runs nanny on every real server and publishes what it sees under
``observations/<node>/...`` (bound to its lease). The active decides the *effective*
health (its own view, or a majority of the live routers' views) and writes it to
``health/<virtual>/<server>`` in transactions fenced by its term, only on change.
Backups program their data plane from that shared view, so a new active starts warm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

from cluster.documents import HealthVerdict, Observation
from cluster.election import fence
from cluster.etcd.client import Delete, Etcd, EtcdAuthError, EtcdUnavailable, Put
from cluster.health import Health, ServerKey
from cluster.keys import Keys
from cluster.model import LvsConfig

from .checks import targets
from .nanny import Engine, Transition
from .view import ClusterView

log = logging.getLogger(__name__)

TXN_OPS = 100  # etcd allows 128 operations per transaction


def majority(views: Mapping[str, Health | Observation]) -> str:
    """'up' if more than half of the routers that have a view say up, else 'down'."""
    states = [v.state for v in views.values()]
    known = [s for s in states if s in ("up", "down")]
    if not known:
        return "unknown"
    return "up" if sum(s == "up" for s in known) * 2 > len(known) else "down"


class HealthService:
    """nanny + publication. ``on_change()`` fires whenever the data plane should look again."""

    def __init__(self, etcd: Etcd, keys: Keys, node: str, view: ClusterView,
                 on_change: Callable[[], None], lease: Callable[[], int | None],
                 licensed: Callable[[], bool] = lambda: True) -> None:
        self.etcd, self.keys, self.node, self.view = etcd, keys, node, view
        self.on_change = on_change
        self.lease = lease
        self.licensed = licensed  # the active's licence, asked before each fenced write
        self.engine = Engine()
        self.engine.subscribe(self._transition)
        self.policy = "active"
        self.term = 0  # > 0 while we are the active and decide
        self.effective: dict[ServerKey, Health] = {}
        self._dirty_obs: set[ServerKey] = set()
        self._dirty_eff: set[ServerKey] = set()
        self._wake = asyncio.Event()
        self.writes = 0
        self.write_errors = 0
        self.cause: float | None = None  # detection time of the newest unapplied decision
        self._shared: tuple[int, dict[ServerKey, Health]] | None = None

    def take_cause(self) -> float | None:
        """When the decision the data plane is about to apply was detected (epoch)."""
        cause, self.cause = self.cause, None
        return cause

    # -- configuration --------------------------------------------------------------------

    def configure(self, cfg: LvsConfig) -> None:
        """Check exactly the programmed servers; a new one starts from the shared view."""
        self.policy = cfg.health_policy
        shared = self.shared()
        wanted = {}
        for key, (check, state) in targets(cfg).items():
            known = shared.get(key)
            init = (replace(known, observed_by=())
                    if known is not None and known.state in ("up", "down") else None)
            wanted[key] = (check, state, init)
        self.engine.set_targets(wanted)
        for key in list(self.effective):
            if key not in wanted:
                del self.effective[key]
        if self.term:  # the active also removes the health of servers no longer checked
            self._dirty_eff.update(k for k in self.shared() if k not in wanted)
        self._dirty_obs.update(wanted)
        self._wake.set()

    async def run(self) -> None:
        async with self.engine:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._publish()

    # -- views ----------------------------------------------------------------------------

    def shared(self) -> dict[ServerKey, Health]:
        """The effective health in etcd (what the active decided); cached per view update."""
        if self._shared is not None and self._shared[0] == self.view.version:
            return self._shared[1]
        out = self._read_shared()
        self._shared = (self.view.version, out)
        return out

    def _read_shared(self) -> dict[ServerKey, Health]:
        return {key: doc.to_health() for key, doc in self.view.state.health.items()}

    def observations(self) -> dict[ServerKey, dict[str, Observation]]:
        """Every router's published view: {(virtual, server): {node: its observation}}."""
        return self.view.state.observations

    def for_dataplane(self) -> dict[ServerKey, Health]:
        """What to program: our decisions while active, else the shared view."""
        source = self.effective if self.term else self.shared()
        return dict(source)

    # -- becoming / leaving active --------------------------------------------------------

    def activate(self, term: int) -> None:
        """Start deciding: from the shared view (warm), corrected by what we see ourselves."""
        self.term = term
        own = self.engine.snapshot()
        shared = self.shared()
        self.effective = {}
        for key, health in own.items():
            known = shared.get(key)
            if known is not None and (health.state == "unknown" or health.state == known.state):
                self.effective[key] = known
            else:
                self.effective[key] = self._decide(key, health)
        self._dirty_eff = {k for k, v in self.effective.items() if shared.get(k) != v}
        self._dirty_eff |= {k for k in shared if k not in own}  # servers no longer checked
        self._wake.set()

    def deactivate(self) -> None:
        self.term = 0
        self._dirty_eff.clear()

    def view_changed(self) -> None:
        """Something in etcd moved. While active: under majority, re-decide; and put back
        any stored verdict that differs from ours (deleted or overwritten by hand)."""
        if not self.term:
            return
        decided = False
        if self.policy == "majority":
            for key, health in self.engine.snapshot().items():
                verdict = self._decide(key, health)
                if self.effective.get(key) != verdict:
                    self.effective[key] = verdict
                    self._dirty_eff.add(key)
                    decided = True
        touched = self.view.touched
        for (v, s), verdict in self.effective.items():
            key = self.keys.health(v, s)
            if (touched is None or key in touched) and self.view.state.health.get(
                    (v, s)) != HealthVerdict.of(verdict, self.term):
                self._dirty_eff.add((v, s))
        if decided:
            self.on_change()
        if self._dirty_eff:
            self._wake.set()

    def _decide(self, key: ServerKey, own: Health) -> Health:
        if self.policy != "majority":
            return replace(own, observed_by=(self.node,))
        live = self.view.registered() | {self.node}
        views: dict[str, Health | Observation] = {
            n: v for n, v in self.observations().get(key, {}).items() if n in live}
        views[self.node] = own
        state = majority(views)
        agree = tuple(sorted(n for n, v in views.items() if v.state == state))
        return Health(state, since=own.since, weight=own.weight,  # type: ignore[arg-type]
                      reason=f"{len(agree)}/{len(views)} routers: {own.reason}"
                      if state == own.state else f"majority of {len(views)}", observed_by=agree)

    def _transition(self, tr: Transition) -> None:
        key = tr.key
        assert isinstance(key, tuple)
        self._dirty_obs.add(key)  # type: ignore[arg-type]
        if self.term:
            health = self.engine.snapshot().get(key)
            if health is not None:
                self.effective[key] = self._decide(key, health)  # type: ignore[arg-type]
                self._dirty_eff.add(key)  # type: ignore[arg-type]
                self.cause = tr.since if self.cause is None else min(self.cause, tr.since)
                self.on_change()  # the data plane first, etcd right after
        self._wake.set()

    # -- publication ----------------------------------------------------------------------

    async def _publish(self) -> None:
        obs, self._dirty_obs = self._dirty_obs, set()
        eff, self._dirty_eff = self._dirty_eff, set()
        try:
            if eff and self.term:
                await self._write_effective(eff)
            if obs:
                await self._write_observations(obs)
        except (EtcdUnavailable, EtcdAuthError) as exc:
            self.write_errors += 1
            log.warning("health publication failed (will retry): %s", exc)
            self._dirty_obs |= obs
            if self.term:
                self._dirty_eff |= eff
            await asyncio.sleep(0.2)
            self._wake.set()

    async def _write_effective(self, keys: set[ServerKey]) -> None:
        term = self.term
        ops = [Put(self.keys.health(v, s), HealthVerdict.of(self.effective[(v, s)], term).encode())
               if (v, s) in self.effective else Delete(self.keys.health(v, s))
               for v, s in sorted(keys)]
        for i in range(0, len(ops), TXN_OPS):
            chunk = ops[i:i + TXN_OPS]
            if not self.licensed():  # the write is fenced by the term, too: both must hold
                raise EtcdUnavailable("not licensed to write as the active right now")
            result = await self.etcd.txn([fence(self.keys, term)], chunk)
            if not result.succeeded:
                log.warning("health not written: term %d no longer holds the leader key", term)
                return
            self.writes += len(chunk)

    async def _write_observations(self, keys: set[ServerKey]) -> None:
        lease = self.lease()
        if lease is None:
            self._dirty_obs |= keys
            return
        snap = self.engine.snapshot()
        ops: list[Put | Delete] = []
        for v, s in sorted(keys):
            key, health = self.keys.observation(self.node, v, s), snap.get((v, s))
            if health is None:
                ops.append(Delete(key))
                continue
            ops.append(Put(key, Observation.of(health).encode(), lease))
        for i in range(0, len(ops), TXN_OPS):
            await self.etcd.txn([], ops[i:i + TXN_OPS])
