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

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..etcd.client import KV
from ..health import ServerKey
from ..keys import Keys, ParsedKey, parse
from .admin import AdminFlag
from .base import Document, DocumentError
from .config import StoredConfig, StoredConfigError
from .config_parts import digest
from .eviction import EvictionVote
from .health import HealthGroup, HealthVerdict, Observation, ObservationGroup, decode_group
from .leader import LeaderDoc, LeaderKey
from .node import NodeRecord
from .released import ReleasedMarker
from .seed import HashSeed, default_seed
from .switchover import SwitchoverRequest

EVICT = "evict-"
_JUNK = object()  # a per-server health key whose value is junk

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
    config_kv: KV | None = None
    """The value under ``config``: a format-2 head (or a whole format-1 config)."""
    config_parts: dict[str, bytes] = field(default_factory=dict)
    """{digest: value} of every key under ``config-parts/``."""
    config_part_revisions: dict[str, int] = field(default_factory=dict)
    """{digest: mod_revision} of the same keys (a part is removed only as last seen)."""
    _parts_version: int = field(default=0, compare=False, repr=False)
    _assembled: tuple[int, int, StoredConfig | None, str | None] | None = field(
        default=None, compare=False, repr=False)
    seed: HashSeed | None = None
    """The cluster's hash seed (None: none yet, or junk; see :meth:`hash_seed`)."""
    health_groups: dict[str, dict[str, dict[str, HealthVerdict]]] = field(default_factory=dict)
    """{virtual: {shard: {server: verdict}}}: the stored groups, as :attr:`health`
    holds their entries (one server in two groups, while a layout changes: the newest)."""
    observation_groups: dict[tuple[str, str], dict[str, dict[str, Observation]]] = field(
        default_factory=dict)
    """{(node, virtual): {shard: {server: observation}}}."""
    touched_verdicts: set[ServerKey] = field(default_factory=set, compare=False)
    """Servers whose verdict changed since :meth:`take_touched` (health's inputs)."""
    touched_observations: set[tuple[str, ServerKey]] = field(default_factory=set, compare=False)
    """(node, server) whose observation changed since :meth:`take_touched`."""
    _expected: dict[str, tuple[bytes, Mapping[str, Document]]] = field(
        default_factory=dict, compare=False, repr=False)
    last_verdicts: list[ServerKey] = field(default_factory=list, compare=False, repr=False)
    """The servers whose verdict the last health key applied changed."""
    _singles: dict[tuple[str, tuple[str, ...]], object] = field(
        default_factory=dict, compare=False, repr=False)
    """{key: document (or junk)} of the per-server health keys (the layout before groups)."""
    junk: dict[str, str] = field(default_factory=dict)
    """{key: why it was not understood}."""

    @property
    def config(self) -> StoredConfig | None:
        """The configuration the head names, assembled from its parts (once per head)."""
        return self._config_now()[0]

    @property
    def config_error(self) -> str | None:
        """Why the value under ``config`` is not a valid configuration (a part missing or
        damaged, say; not listed as junk)."""
        return self._config_now()[1]

    def _config_now(self) -> tuple[StoredConfig | None, str | None]:
        from ..config_layout import load  # (it needs these documents)

        kv = self.config_kv
        if kv is None:
            return None, None
        done = self._assembled
        if done is not None and done[0] == kv.mod_revision and done[1] in (
                -1, self._parts_version):
            return done[2], done[3]
        try:
            cfg, why = load(kv, self.config_parts.get), None
        except StoredConfigError as exc:
            cfg, why = None, str(exc)
        # A config assembled stays right while the head stays (parts never change: their
        # key is their digest); a failure is retried once the parts change.
        self._assembled = (kv.mod_revision, -1 if cfg is not None else self._parts_version,
                           cfg, why)
        return cfg, why

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

    def take_touched(self) -> tuple[set[ServerKey], set[tuple[str, ServerKey]]]:
        """The servers whose verdict, and the (node, server) whose observation, changed
        since the last call."""
        out = self.touched_verdicts, self.touched_observations
        self.touched_verdicts, self.touched_observations = set(), set()
        return out

    def expect(self, key: str, value: bytes, entries: Mapping[str, Document]) -> None:
        """We are writing ``value`` (the group of ``entries``) to group ``key``: when the
        watch brings it back, take ``entries`` as they are (the same objects, not decoded
        again: a router's own writes are half of what it reads at scale)."""
        self._expected[key] = (value, entries)

    def single(self, kind: str, *parts: str) -> bool:
        """Whether a per-server key (the layout before groups) holds a value:
        ``single("health", virtual, server)``, ``single("observations", node, virtual,
        server)``."""
        return (kind, parts) in self._singles

    def singles(self, kind: str) -> list[tuple[str, ...]]:
        """The parts of every per-server key of ``kind`` that holds a value (a document or
        junk): the keys the active still has to move into groups."""
        return [parts for k, parts in self._singles if k == kind]

    def hash_seed(self) -> int:
        """The seed the Maglev tables use: the stored one, else the cluster's default."""
        return self.seed.seed if self.seed is not None else default_seed(self.keys.cluster)

    def junk_list(self) -> list[Junk]:
        return [Junk(k, why) for k, why in sorted(self.junk.items())]

    # -- one handler per kind of key: forget, then record; return why the value is junk --

    def _config(self, pk: ParsedKey, kv: KV | None) -> str | None:
        self.config_kv = kv
        return None

    def _config_part(self, pk: ParsedKey, kv: KV | None) -> str | None:
        self._parts_version += 1
        if kv is None:
            self.config_parts.pop(pk.parts[0], None)
            self.config_part_revisions.pop(pk.parts[0], None)
        else:
            self.config_parts[pk.parts[0]] = kv.value
            self.config_part_revisions[pk.parts[0]] = kv.mod_revision
            if digest(kv.value) != pk.parts[0]:  # kept: a head naming it is refused
                return "config part whose value does not match its key (its digest)"
        return None

    def _seed(self, pk: ParsedKey, kv: KV | None) -> str | None:
        self.seed = None
        if kv is None:
            return None
        self.seed, why = _decode(HashSeed, kv)
        return why

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
        server = ServerKey(pk.parts[0], pk.parts[1])
        self.touched_verdicts.add(server)
        self.last_verdicts = [server]
        return self._single(self.health, server, HealthVerdict, pk, kv)

    def _health_group(self, pk: ParsedKey, kv: KV | None) -> str | None:
        virtual = pk.parts[0]
        groups = self.health_groups.setdefault(virtual, {})
        changed: list[ServerKey] = []

        def touched(key: ServerKey) -> None:
            self.touched_verdicts.add(key)
            changed.append(key)

        why = _regroup(self.health, groups, virtual, HealthGroup, pk, kv, touched,
                       self._expected)
        self.last_verdicts = changed
        if not groups:
            del self.health_groups[virtual]
        return why

    def _single(self, slot: dict[K, D], key: K, cls: type[D], pk: ParsedKey,
                kv: KV | None) -> str | None:
        """A per-server key: what it held goes only if no group has replaced it since."""
        name = (pk.kind, pk.parts)
        old = self._singles.pop(name, None)
        if old is not None and slot.get(key) is old:
            del slot[key]
        if kv is None:
            return None
        value, why = _decode(cls, kv)
        if value is not None:
            slot[key] = self._singles[name] = value
        else:  # junk: still a key the active deletes when it moves the server into a group
            self._singles[name] = _JUNK
        return why

    def _admin(self, pk: ParsedKey, kv: KV | None) -> str | None:
        return _put(self.admin, ServerKey(pk.parts[0], pk.parts[1]), AdminFlag, kv)

    def _observation(self, pk: ParsedKey, kv: KV | None) -> str | None:
        node, server = pk.parts[0], ServerKey(pk.parts[1], pk.parts[2])
        self.touched_observations.add((node, server))
        views = self.observations.setdefault(server, {})
        why = self._single(views, node, Observation, pk, kv)
        if not views:
            del self.observations[server]
        return why

    def _observation_group(self, pk: ParsedKey, kv: KV | None) -> str | None:
        node, virtual = pk.parts[0], pk.parts[1]
        groups = self.observation_groups.setdefault((node, virtual), {})
        why = _regroup(_NodeSlot(self.observations, node), groups, virtual, ObservationGroup,
                       pk, kv, lambda key: self.touched_observations.add((node, key)),
                       self._expected)
        if not groups:
            del self.observation_groups[node, virtual]
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
    "config-parts": ClusterState._config_part,
    "seed": ClusterState._seed,
    "leader": ClusterState._leader,
    "nodes": ClusterState._node,
    "health": ClusterState._health,
    "health-group": ClusterState._health_group,
    "observations": ClusterState._observation,
    "observations-group": ClusterState._observation_group,
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


class _NodeSlot:
    """``observations`` seen as {server: one node's observation} (what :func:`_regroup`
    reads and writes)."""

    def __init__(self, views: dict[ServerKey, dict[str, Observation]], node: str) -> None:
        self.views, self.node = views, node

    def get(self, key: ServerKey) -> Observation | None:
        of = self.views.get(key)
        return of.get(self.node) if of is not None else None

    def __setitem__(self, key: ServerKey, value: Observation) -> None:
        self.views.setdefault(key, {})[self.node] = value

    def __delitem__(self, key: ServerKey) -> None:
        of = self.views[key]
        del of[self.node]
        if not of:
            del self.views[key]


def _regroup(slot: Any, groups: dict[str, dict[str, Any]], virtual: str,
             cls: type[HealthGroup] | type[ObservationGroup], pk: ParsedKey, kv: KV | None,
             touched: Callable[[ServerKey], object],
             expected: dict[str, tuple[bytes, Mapping[str, Any]]]) -> str | None:
    """Group key ``pk`` of ``virtual`` now holds ``kv``: its entries replace what it held in
    ``slot`` ({server: document}); only changed servers are ``touched``. An entry it held
    goes only if no other key has replaced it since; then another group of the same virtual
    that still names the server (a layout in change) speaks for it. Of several groups that
    name a server, the lowest shard speaks, whatever the order their keys came in."""
    name = pk.parts[-1]  # the shard
    old = groups.pop(name, {})
    if kv is None:
        new, why = {}, None
    elif (mine := expected.pop(kv.key, None)) is not None and mine[0] == kv.value:
        new, why = dict(mine[1]), None  # what we wrote ourselves: no need to decode it
    else:
        new, why = decode_group(cls, kv.value)
    if new:
        groups[name] = new
    for server, doc in new.items():
        key = ServerKey(virtual, server)
        before = old.get(server)
        if before != doc:
            if len(groups) > 1 and any(server in groups[n] for n in groups if n < name):
                continue  # a lower shard names it too (a layout in change): that one speaks
            slot[key] = doc
            touched(key)
        elif slot.get(key) is before:  # the same verdict: held as the new document now
            slot[key] = doc
    for server, doc in old.items():
        if server in new:
            continue
        key = ServerKey(virtual, server)
        if slot.get(key) is not doc:
            continue
        del slot[key]
        for other in sorted(groups):  # the lowest shard that still names it speaks
            if server in groups[other]:
                slot[key] = groups[other][server]
                break
        touched(key)
    return why
