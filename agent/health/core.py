"""The health policy as a pure function of what this router knows, like
:class:`~agent.role.RoleMachine` for the role.

Nothing here does I/O and nothing here awaits. The shell (:mod:`agent.health.service`)
runs nanny, feeds each event to :class:`HealthCore` and carries out what it returns:

* inputs: the configured servers with our nanny's health of each and the ``health_policy``
  (:meth:`~HealthCore.configure`); our nanny's news for one server
  (:meth:`~HealthCore.checked`); the shared state in etcd (verdicts, every router's
  observations, the registered routers: a :class:`~cluster.documents.ClusterState`) and
  which of its keys changed (:meth:`~HealthCore.etcd_changed`); our role and term
  (:meth:`~HealthCore.activate`, :meth:`~HealthCore.rekeyed`, :meth:`~HealthCore.deactivate`).
* outputs: every input returns an :class:`Outcome` (the data-plane change, and when our
  checks detected it); :meth:`~HealthCore.take_writes` hands out the etcd writes due
  (:class:`Writes`: verdicts fenced by the term, our observations); :attr:`HealthCore.plane`
  is the health the data plane programs.

The rules:

* Every router publishes its own health of each configured server under
  ``observations/<node>/`` (bound to its lease) and puts back any that etcd lost or that
  differs from its own (a lease that expired, a hand edit). A server not checked yet
  ("unknown") with nothing stored is not written: absent says the same.
* A backup's data plane follows the verdicts stored under ``health/``.
* The active decides the verdict of every configured server: its own checks (policy
  ``active``), or more than half of the live routers that have a view (``majority``). It
  stores exactly its verdicts: it puts back a verdict deleted or overwritten by hand and
  deletes the verdict of a server it does not check (no longer configured).
* A new active starts warm: it keeps a stored verdict that its own decision agrees with (same
  state, and same weight while up) or knows nothing against (``unknown``), so a failover
  rewrites nothing that is still true. Under ``majority``, not knowing never replaces knowing.
* Cost: an input costs what it touches, one server per nanny change and the touched keys
  per etcd update. Only a configuration, a change of role or term, a whole snapshot of etcd
  and, under ``majority``, a change of the set of live routers look at every server.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from cluster.documents import ClusterState, HealthVerdict, Observation
from cluster.health import Health, ServerKey, State

Policy = Literal["active", "majority"]


@dataclass(frozen=True)
class Touched:
    """What an etcd update changed, as health cares about it."""

    verdicts: frozenset[ServerKey] = frozenset()
    """Servers whose ``health/`` key changed."""
    observations: frozenset[tuple[str, ServerKey]] = frozenset()
    """(node, server) whose ``observations/`` key changed."""

    @classmethod
    def take(cls, state: ClusterState) -> Touched:
        """What changed in ``state`` since the last take (:meth:`ClusterState.take_touched`)."""
        verdicts, observations = state.take_touched()
        return cls(frozenset(verdicts), frozenset(observations))


@dataclass(frozen=True)
class Outcome:
    """What an input changed for the data plane."""

    plane: dict[ServerKey, Health | None] = field(default_factory=dict)
    """Servers whose health in :attr:`HealthCore.plane` changed: the new one (None: gone)."""
    cause: float | None = None
    """When our checks detected the change (epoch), if it is one of ours."""


@dataclass(frozen=True)
class Writes:
    """etcd writes due. ``verdicts``: puts (a document) and deletes (None), each transaction
    fenced by ``term`` (0: none due); ``observations``: ours, bound to our lease."""

    term: int = 0
    verdicts: dict[ServerKey, HealthVerdict | None] = field(default_factory=dict)
    observations: dict[ServerKey, Observation | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.verdicts or self.observations)


def majority(views: Mapping[str, Health | Observation]) -> State:
    """'up' if more than half of the routers that have a view say up, else 'down'
    ('unknown' if none has one)."""
    known = [v.state for v in views.values() if v.state != "unknown"]
    if not known:
        return "unknown"
    return "up" if sum(s == "up" for s in known) * 2 > len(known) else "down"


def decide(policy: Policy, me: str, own: Health, views: Mapping[str, Observation],
           live: Collection[str]) -> Health:
    """The verdict on one server from our own health of it and the routers' observations
    (``views``: node -> observation; only ``live`` routers count, ours is ``own``)."""
    if policy != "majority":
        return own.seen_by((me,))
    seen: dict[str, Health | Observation] = {n: v for n, v in views.items()
                                             if n in live and n != me}
    seen[me] = own
    state = majority(seen)
    agree = tuple(sorted(n for n, v in seen.items() if v.state == state))
    reason = (f"{len(agree)}/{len(seen)} routers: {own.reason}" if state == own.state
              else f"majority of {len(seen)}")
    return Health(state, since=own.since, reason=reason, weight=own.weight, observed_by=agree)


def keeps(stored: HealthVerdict, decided: Health) -> bool:
    """Warm start: does a new active keep the stored verdict rather than its own decision?
    Yes when the decision agrees (same state, and same weight while up) or knows nothing."""
    if decided.state == "unknown":
        return True
    return decided.state == stored.state and (decided.state != "up"
                                              or decided.weight == stored.weight)


def diff(old: Mapping[ServerKey, Health], new: Mapping[ServerKey, Health],
         ) -> dict[ServerKey, Health | None]:
    """{server: its health in ``new`` (None: gone)} for every server that differs."""
    return {k: new.get(k) for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


class HealthCore:
    """The health policy of router ``me``; only its methods change it."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.policy: Policy = "active"
        self.term = 0
        """The term we decide under (> 0 while we are the active)."""
        self.own: dict[ServerKey, Health] = {}
        """Our nanny's health of every configured server."""
        self.plane: dict[ServerKey, Health] = {}
        """What the data plane programs: our verdicts while active, else the stored ones."""
        self.verdicts: dict[ServerKey, HealthVerdict] = {}
        """While active: the verdict documents ``health/`` must hold, no more, no less."""
        self.observed: dict[ServerKey, Observation] = {}
        """Our observation documents: what ``observations/<me>/`` must hold."""
        self.live: frozenset[str] = frozenset((me,))
        self._synced = False
        self._verdicts_due: set[ServerKey] = set()
        self._observations_due: set[ServerKey] = set()
        # Each stored verdict's Health, made once per document: a takeover and a demotion
        # look at every server (40,000 conversions parsing a timestamp each held the loop).
        self._converted: dict[ServerKey, tuple[HealthVerdict, Health]] = {}

    @property
    def active(self) -> bool:
        return self.term > 0

    @property
    def pending(self) -> bool:
        """Writes are due (:meth:`take_writes`)."""
        return bool(self._observations_due or (self.term and self._verdicts_due))

    # -- inputs ---------------------------------------------------------------------------

    def warm_start(self, keys: Iterable[ServerKey], state: ClusterState) -> dict[ServerKey, Health]:
        """The state a new check target starts in: the stored verdict, if it is up or down."""
        out = {}
        for key in keys:
            doc = state.health.get(key)
            if key not in self.own and doc is not None and doc.state != "unknown":
                out[key] = doc.to_health().seen_by(())
        return out

    def configure(self, own: Mapping[ServerKey, Health], policy: Policy,
                  state: ClusterState, pending: Collection[ServerKey] = ()) -> Outcome:
        """Check exactly the servers of ``own`` (our nanny's health of each), under ``policy``.
        ``pending``: servers :meth:`add` brings next (their stored verdicts are left alone
        meanwhile: not ours to delete)."""
        policy_changed, self.policy = policy != self.policy, policy
        removed = [k for k in self.own if k not in own]
        added = [k for k in own if k not in self.own]
        for key in removed:
            del self.own[key]
            self.observed.pop(key, None)
            self._observations_due.add(key)
        for key in added:
            self._own(key, own[key])
        plane: dict[ServerKey, Health | None] = {}
        if self.term:
            live = self._live(state)
            for key in removed:
                self.verdicts.pop(key, None)
                if self.plane.pop(key, None) is not None:
                    plane[key] = None
            for key in added:
                self._warm(key, state, live, plane)
            if policy_changed:
                for key in self.own.keys() - set(added):
                    self._redecide(key, state, live, plane)
            self._check_verdicts(state, state.health.keys() - self.verdicts.keys()
                                 - set(pending))
        return Outcome(plane)

    def add(self, own: Mapping[ServerKey, Health], state: ClusterState) -> Outcome:
        """Check the servers of ``own`` too (those not checked yet): :meth:`configure` a
        part at a time, without looking at every other server each time."""
        plane: dict[ServerKey, Health | None] = {}
        live = self._live(state) if self.term else frozenset()
        for key, health in own.items():
            if key not in self.own:
                self._own(key, health)
                if self.term:
                    self._warm(key, state, live, plane)
        return Outcome(plane)

    def checked(self, key: ServerKey, health: Health, state: ClusterState) -> Outcome:
        """Our nanny has news of ``key`` (a new state, or a new weight while up)."""
        if key not in self.own:
            return Outcome()
        self._own(key, health)
        if not self.term:
            return Outcome()
        plane: dict[ServerKey, Health | None] = {}
        self._set(key, decide(self.policy, self.me, health, state.observations.get(key, {}),
                              self._live(state)), state, plane)
        return Outcome(plane, cause=health.since)

    def etcd_changed(self, state: ClusterState, touched: Touched | None) -> Outcome:
        """etcd moved; ``touched``: which keys (None: look at everything, e.g. a snapshot)."""
        if not self._synced:
            self._synced, touched = True, None
        plane: dict[ServerKey, Health | None] = {}
        live = self._live(state)
        live_changed, self.live = live != self.live, live
        if self.term:
            if self.policy == "majority":
                redo: Iterable[ServerKey] = (
                    list(self.own) if touched is None or live_changed
                    else {k for _, k in touched.observations if k in self.own})
                for key in redo:
                    self._redecide(key, state, live, plane)
            self._check_verdicts(state, None if touched is None else touched.verdicts)
        elif touched is None:
            new = self._stored_plane(state)
            plane, self.plane = diff(self.plane, new), new
        else:
            for key in touched.verdicts:
                doc = state.health.get(key)
                health = self._to_health(key, doc)
                if health != self.plane.get(key):
                    plane[key] = health
                    if health is None:
                        del self.plane[key]
                    else:
                        self.plane[key] = health
        mine = None if touched is None else [k for n, k in touched.observations if n == self.me]
        self._check_observations(state, mine)
        return Outcome(plane)

    def activate(self, term: int, state: ClusterState) -> Outcome:
        """We became the active of ``term``: decide every server, starting warm."""
        self.term = term
        # From what the data plane programs now (the stored view), changing only what differs:
        # at 100,000 servers, rebuilding and diffing the whole plane held the loop for long.
        old, self.plane, self.verdicts = self.plane, dict(self.plane), {}
        self._verdicts_due.clear()
        live = self._live(state)
        touched: dict[ServerKey, Health | None] = {}
        for key in self.own:
            self._warm(key, state, live, touched)
        for key in self.plane.keys() - self.own.keys():  # not ours to decide: out
            del self.plane[key]
            touched[key] = None
        self._check_verdicts(state, state.health.keys() - self.verdicts.keys())
        return Outcome({k: v for k, v in touched.items() if old.get(k) != v})

    def rekeyed(self, term: int, state: ClusterState) -> Outcome:
        """Our term changed while we stayed active (we took our expired key back): write
        under the new term from now on, and again whatever the old one failed to store."""
        if self.term:
            self.term = term
            self._check_verdicts(state, None)
        return Outcome()

    def deactivate(self, state: ClusterState) -> Outcome:
        """We are no longer the active: stop deciding, follow the stored verdicts."""
        self.term = 0
        self.verdicts = {}
        self._verdicts_due.clear()
        new = self._stored_plane(state)
        plane, self.plane = diff(self.plane, new), new
        return Outcome(plane)

    # -- outputs --------------------------------------------------------------------------

    def take_writes(self, state: ClusterState, limit: int | None = None) -> Writes:
        """The writes due now (what etcd, as ``state`` shows it, does not hold yet): at
        most ``limit`` keys of each kind, the rest stay due (:attr:`pending`)."""
        verdicts: dict[ServerKey, HealthVerdict | None] = {}
        for key in _take(self._verdicts_due, limit if self.term else None):
            doc = self.verdicts.get(key)
            if self.term and _due(state.health.get(key), doc):
                verdicts[key] = doc
        observations: dict[ServerKey, Observation | None] = {}
        for key in _take(self._observations_due, limit):
            doc = self.observed.get(key)
            if _due(_mine(state, key, self.me), doc):
                observations[key] = doc
        return Writes(self.term if verdicts else 0, verdicts, observations)

    def unwritten(self, writes: Writes) -> None:
        """``writes`` (or part of them) did not reach etcd: due again (with newer content,
        if it changed meanwhile)."""
        if self.term:
            self._verdicts_due.update(writes.verdicts)
        self._observations_due.update(writes.observations)

    # -- helpers --------------------------------------------------------------------------

    def _live(self, state: ClusterState) -> frozenset[str]:
        """The routers whose observations count: the running ones, and us."""
        return frozenset(state.running | {self.me})

    def _own(self, key: ServerKey, health: Health) -> None:
        self.own[key] = health
        self.observed[key] = Observation.of(health)
        self._observations_due.add(key)

    def _warm(self, key: ServerKey, state: ClusterState, live: frozenset[str],
              plane: dict[ServerKey, Health | None]) -> None:
        """Decide ``key`` as a new active does: keep the stored verdict if it still holds."""
        stored = state.health.get(key)
        own = self.own[key]
        if self.policy != "majority":  # the decision is our own health: no need to make it
            decided = own  # (keeps() reads only state and weight, as decide() leaves them)
        else:
            decided = decide(self.policy, self.me, own, state.observations.get(key, {}), live)
        if stored is not None and keeps(stored, decided):
            health = self._to_health(key, stored)
            self.verdicts[key] = stored
            current = self.plane.get(key)
            if current is not health and current != health:
                self.plane[key] = plane[key] = health
        else:
            if decided is own:
                decided = decide(self.policy, self.me, own, {}, live)
            self._set(key, decided, state, plane)

    def _redecide(self, key: ServerKey, state: ClusterState, live: frozenset[str],
                  plane: dict[ServerKey, Health | None]) -> None:
        """Decide ``key`` again (others' views moved): a change only if the decision changed
        and knows something."""
        new = decide(self.policy, self.me, self.own[key], state.observations.get(key, {}), live)
        current = self.plane.get(key)
        if current is not None and (new == current or new.state == "unknown"):
            return
        self._set(key, new, state, plane)

    def _to_health(self, key: ServerKey, doc: HealthVerdict | None) -> Health | None:
        """``doc.to_health()``, the same object for the same document."""
        if doc is None:
            self._converted.pop(key, None)
            return None
        hit = self._converted.get(key)
        if hit is not None and hit[0] is doc:
            return hit[1]
        health = doc.to_health()
        self._converted[key] = (doc, health)
        return health

    def _stored_plane(self, state: ClusterState) -> dict[ServerKey, Health]:
        """The stored verdicts as the data plane takes them (conversions kept for those
        only)."""
        converted = self._converted
        self._converted = {key: hit if (hit := converted.get(key)) is not None and hit[0] is doc
                           else (doc, doc.to_health()) for key, doc in state.health.items()}
        return {key: health for key, (_, health) in self._converted.items()}

    def _set(self, key: ServerKey, health: Health, state: ClusterState,
             plane: dict[ServerKey, Health | None]) -> None:
        self.plane[key] = plane[key] = health
        doc = self.verdicts[key] = HealthVerdict.of(health, self.term)
        if state.health.get(key) != doc:
            self._verdicts_due.add(key)

    def _check_verdicts(self, state: ClusterState, keys: Iterable[ServerKey] | None) -> None:
        """Due: every verdict among ``keys`` (None: all) that etcd does not hold as decided."""
        if keys is None:
            keys = self.verdicts.keys() | state.health.keys()
        for key in keys:
            if state.health.get(key) != self.verdicts.get(key):
                self._verdicts_due.add(key)

    def _check_observations(self, state: ClusterState, keys: Iterable[ServerKey] | None) -> None:
        """Due: every observation of ours among ``keys`` (None: all) etcd does not hold."""
        if keys is None:
            keys = self.observed.keys() | {k for k, views in state.observations.items()
                                           if self.me in views}
        for key in keys:
            if _mine(state, key, self.me) != self.observed.get(key):
                self._observations_due.add(key)


def _due(stored: HealthVerdict | Observation | None,
         doc: HealthVerdict | Observation | None) -> bool:
    """Whether ``doc`` must be written over ``stored``: it differs, and it is not a first
    "unknown" (a server not checked yet: nothing stored says the same to every reader, and
    a new config of 40,000 servers would write each twice, unknown then up)."""
    if stored == doc:
        return False
    return not (stored is None and doc is not None and doc.state == "unknown")


def _mine(state: ClusterState, key: ServerKey, me: str) -> Observation | None:
    views = state.observations.get(key)
    return views.get(me) if views is not None else None


def _take(due: set[ServerKey], limit: int | None) -> list[ServerKey]:
    """Up to ``limit`` keys out of ``due`` (all of them if None)."""
    if limit is None or len(due) <= limit:
        taken = list(due)
        due.clear()
        return taken
    return [due.pop() for _ in range(limit)]
