"""Everything under ``/lvs/<cluster>/`` as typed state, built one key at a time.

:meth:`ClusterState.apply` takes one changed key (its new key-value, or None when it was
deleted), forgets what the key said before and records what it says now: the cost of an
update is the cost of the keys it touches, never of the whole cluster.
:meth:`ClusterState.from_kvs` is the fold of :meth:`apply` over a snapshot, so the state
after a snapshot and any sequence of updates equals ``from_kvs`` of the final key-values.
Neither does I/O; neither raises on junk: a key or value it cannot understand is recorded
in :attr:`ClusterState.junk` (key -> why) and left out of the typed fields.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from ..etcd.client import KV
from ..health import ServerKey
from ..keys import Keys, ParsedKey, parse
from .admin import AdminFlag
from .base import Document, DocumentError
from .config import StoredConfig, StoredConfigError
from .eviction import EvictionVote
from .health import HealthVerdict, Observation
from .leader import LeaderDoc, LeaderKey
from .node import NodeRecord
from .released import ReleasedMarker
from .switchover import SwitchoverRequest

EVICT = "evict-"

D = TypeVar("D", bound=Document)
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Junk:
    """A key, or the value under it, that is not what the layout promises."""

    key: str
    why: str

    def __str__(self) -> str:
        return f"{self.key}: {self.why}"


@dataclass
class ClusterState:
    """The cluster as its etcd keys say. Fields hold only documents that decoded."""

    keys: Keys
    leader: LeaderKey | None = None
    """The leader key; its node is "" if the value is junk (the term still counts)."""
    registered: set[str] = field(default_factory=set)
    """Every router with a ``nodes/`` key, whether its record decodes or not."""
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    health: dict[ServerKey, HealthVerdict] = field(default_factory=dict)
    observations: dict[ServerKey, dict[str, Observation]] = field(default_factory=dict)
    """{(virtual, server): {node: its observation}}."""
    admin: dict[ServerKey, AdminFlag] = field(default_factory=dict)
    switchover: SwitchoverRequest | None = None
    released: ReleasedMarker | None = None
    evictions: dict[str, EvictionVote] = field(default_factory=dict)
    """{voter: its vote}."""
    config: StoredConfig | None = None
    config_error: str | None = None
    """Why the value under ``config`` is not a valid configuration (not listed as junk)."""
    junk: dict[str, str] = field(default_factory=dict)
    """{key: why it was not understood}."""

    @property
    def running(self) -> set[str]:
        """Registered routers that run: all but those still waiting for a config they can
        run (role "starting"); a record that does not decode counts as running."""
        nodes = self.nodes
        return {n for n in self.registered if n not in nodes or nodes[n].role != "starting"}

    @classmethod
    def from_kvs(cls, keys: Keys, kvs: Iterable[KV]) -> ClusterState:
        """Understand every key-value under the cluster prefix."""
        state = cls(keys)
        for kv in kvs:
            state.apply(kv.key, kv)
        return state

    def apply(self, key: str, kv: KV | None) -> Junk | None:
        """``key`` now holds ``kv`` (None: deleted). Returns the junk found in it, if any."""
        self.junk.pop(key, None)
        pk = parse(self.keys, key)
        if pk is None:
            why: str | None = "unknown key"
        else:
            handler = _HANDLERS.get(pk.kind)
            why = handler(self, pk, kv) if handler is not None else None
        if why is None or kv is None:
            return None
        self.junk[key] = why
        return Junk(key, why)

    def junk_list(self) -> list[Junk]:
        return [Junk(k, why) for k, why in sorted(self.junk.items())]

    # -- one handler per kind of key: forget, then record; return why the value is junk --

    def _config(self, pk: ParsedKey, kv: KV | None) -> str | None:
        self.config, self.config_error = None, None
        if kv is not None:
            try:
                self.config = StoredConfig.from_kv(kv)
            except StoredConfigError as exc:
                self.config_error = str(exc)
        return None

    def _leader(self, pk: ParsedKey, kv: KV | None) -> str | None:
        self.leader = None
        if kv is None:
            return None
        self.leader = LeaderKey.from_kv(kv)
        return _why(LeaderDoc, kv)

    def _node(self, pk: ParsedKey, kv: KV | None) -> str | None:
        name = pk.parts[0]
        self.nodes.pop(name, None)
        self.registered.discard(name)
        if kv is None:
            return None
        self.registered.add(name)
        return _put(self.nodes, name, NodeRecord, kv)

    def _health(self, pk: ParsedKey, kv: KV | None) -> str | None:
        return _put(self.health, ServerKey(pk.parts[0], pk.parts[1]), HealthVerdict, kv)

    def _admin(self, pk: ParsedKey, kv: KV | None) -> str | None:
        return _put(self.admin, ServerKey(pk.parts[0], pk.parts[1]), AdminFlag, kv)

    def _observation(self, pk: ParsedKey, kv: KV | None) -> str | None:
        node, server = pk.parts[0], ServerKey(pk.parts[1], pk.parts[2])
        views = self.observations.setdefault(server, {})
        why = _put(views, node, Observation, kv)
        if not views:
            del self.observations[server]
        return why

    def _control(self, pk: ParsedKey, kv: KV | None) -> str | None:
        name = pk.parts[0]
        if name == "switchover":
            self.switchover = None
            if kv is not None:
                self.switchover, why = _decode(SwitchoverRequest, kv)
                return why
        elif name == "released":
            self.released = None
            if kv is not None:
                self.released, why = _decode(ReleasedMarker, kv)
                return why
        elif name.startswith(EVICT) and name != EVICT:
            return _put(self.evictions, name[len(EVICT):], EvictionVote, kv)
        else:
            return "unknown key"
        return None

    def _ignore(self, pk: ParsedKey, kv: KV | None) -> str | None:
        return None  # history: read on demand by lvsctl config history


_HANDLERS: dict[str, Callable[[ClusterState, ParsedKey, KV | None], str | None]] = {
    "config": ClusterState._config,
    "leader": ClusterState._leader,
    "nodes": ClusterState._node,
    "health": ClusterState._health,
    "observations": ClusterState._observation,
    "admin": ClusterState._admin,
    "control": ClusterState._control,
    "history": ClusterState._ignore,
}


def _decode(cls: type[D], kv: KV) -> tuple[D | None, str | None]:
    try:
        return cls.decode(kv.value), None
    except DocumentError as exc:
        return None, str(exc)


def _why(cls: type[Document], kv: KV) -> str | None:
    return _decode(cls, kv)[1]


def _put(slot: dict[K, D], key: K, cls: type[D], kv: KV | None) -> str | None:
    """slot[key] = the decoded value; gone if deleted or junk (then: why)."""
    slot.pop(key, None)
    if kv is None:
        return None
    value, why = _decode(cls, kv)
    if value is not None:
        slot[key] = value
    return why
