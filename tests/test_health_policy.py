"""The health policy, pure: the majority rule, the stored document, and HealthCore driven by
hand-made events against a fake etcd.

The fake etcd (:class:`Store`) holds key-values, queues every change for a watch that
delivers them when the test says so, and keeps a ClusterState of what was delivered, as the
agent's view does. Writes the core hands out are applied to it, verdicts only while their
term still holds the leader key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agent.health.core as core_module
from agent.health import HealthCore, Touched, Writes, decide, majority
from cluster.documents import ClusterState, DocumentError, HealthVerdict, NodeRecord, Observation
from cluster.etcd.client import KV
from cluster.health import Health, ServerKey
from cluster.keys import Keys, parse

KEYS = Keys("t")
ME = "r1"
A, B, C, D = (ServerKey("web", "a"), ServerKey("web", "b"), ServerKey("dns", "c"),
              ServerKey("web", "d"))
T0 = 1_764_000_000.0
LEASE = 77


def up(t: float = 0.0, weight: int = 1, reason: str = "connected") -> Health:
    return Health("up", since=T0 + t, reason=reason, weight=weight)


def down(t: float = 0.0, reason: str = "connect refused") -> Health:
    return Health("down", since=T0 + t, reason=reason, weight=1)


UNKNOWN = Health("unknown", since=T0, reason="not checked yet", weight=1)


@dataclass
class Store:
    """A fake etcd with a watch whose delivery the test controls."""

    kvs: dict[str, KV] = field(default_factory=dict)
    rev: int = 1
    queue: list[tuple[str, KV | None]] = field(default_factory=list)
    state: ClusterState = field(default_factory=lambda: ClusterState(KEYS))

    def put(self, key: str, value: str, lease: int = 0) -> None:
        self.rev += 1
        old = self.kvs.get(key)
        kv = KV(key, value.encode(), old.create_revision if old else self.rev, self.rev,
                old.version + 1 if old else 1, lease)
        self.kvs[key] = kv
        self.queue.append((key, kv))

    def delete(self, key: str) -> None:
        if key in self.kvs:
            self.rev += 1
            del self.kvs[key]
            self.queue.append((key, None))

    def deliver(self, n: int | None = None) -> Touched:
        """The watch delivers the next ``n`` changes (all if None)."""
        n = len(self.queue) if n is None else n
        batch, self.queue = self.queue[:n], self.queue[n:]
        for key, kv in batch:
            self.state.apply(key, kv)
        return Touched.take(self.state)

    def snapshot(self) -> None:
        self.queue.clear()
        self.state = ClusterState.from_kvs(KEYS, self.kvs.values())
        self.state.take_touched()  # (a snapshot: the core looks at everything)

    def apply(self, writes: Writes, leader_term: int) -> None:
        """Carry ``writes`` out as the shell does: verdicts in transactions fenced by the
        term (all dropped if it no longer holds the leader key), observations on our lease."""
        if writes.verdicts and writes.term and writes.term == leader_term:
            for key, doc in writes.verdicts.items():
                if doc is None:
                    self.delete(KEYS.health(*key))
                else:
                    self.put(KEYS.health(*key), doc.encode())
        for key, obs in writes.observations.items():
            if obs is None:
                self.delete(KEYS.observation(ME, *key))
            else:
                self.put(KEYS.observation(ME, *key), obs.encode(), LEASE)

    # -- what etcd holds, decoded --------------------------------------------------------

    def verdicts(self) -> dict[ServerKey, HealthVerdict]:
        out = {}
        for key, kv in self.kvs.items():
            pk = parse(KEYS, key)
            if pk is not None and pk.kind == "health":
                try:
                    out[ServerKey(*pk.parts)] = HealthVerdict.decode(kv.value)
                except DocumentError:
                    pass
        return out

    def observations(self, node: str) -> dict[ServerKey, Observation]:
        out = {}
        for key, kv in self.kvs.items():
            pk = parse(KEYS, key)
            if pk is not None and pk.kind == "observations" and pk.parts[0] == node:
                out[ServerKey(pk.parts[1], pk.parts[2])] = Observation.decode(kv.value)
        return out

    # -- other routers and the operator --------------------------------------------------

    def verdict(self, key: ServerKey, health: Health, term: int = 3) -> None:
        self.put(KEYS.health(*key), HealthVerdict.of(health, term).encode())

    def observe(self, node: str, key: ServerKey, state: str | None) -> None:
        if state is None:
            self.delete(KEYS.observation(node, *key))
        else:
            self.put(KEYS.observation(node, *key), Observation(state=state).encode())  # type: ignore[arg-type]

    def register(self, *nodes: str) -> None:
        for node in nodes:
            self.put(KEYS.node(node), NodeRecord(node=node, role="backup").encode())


def sync(core: HealthCore, store: Store) -> dict[ServerKey, Health | None]:
    return core.etcd_changed(store.state, store.deliver()).plane


def settle(core: HealthCore, store: Store, leader_term: int, rounds: int = 4) -> int:
    """Write, let the watch deliver, repeat until nothing is due; the number of rounds."""
    for n in range(rounds):
        sync(core, store)
        writes = core.take_writes(store.state)
        if not writes:
            return n
        store.apply(writes, leader_term)
    raise AssertionError(f"not settled after {rounds} rounds")


def started(own: dict[ServerKey, Health], store: Store, policy: str = "active") -> HealthCore:
    core = HealthCore(ME)
    core.etcd_changed(store.state, store.deliver())
    core.configure(own, policy, store.state)  # type: ignore[arg-type]
    return core


# ---------------------------------------------------------------- pure rules


def test_majority_counts_only_routers_with_a_view() -> None:
    up, down = Health("up"), Health("down")
    assert majority({"r1": up, "r2": up, "r3": down}) == "up"
    assert majority({"r1": up, "r2": down}) == "down"  # a tie is not a majority
    assert majority({"r1": Observation(state="up"), "r2": Observation(state="unknown")}) == "up"
    assert majority({"r1": Health("unknown")}) == "unknown"
    assert majority({}) == "unknown"


def test_verdict_document_is_readable_json() -> None:
    v = Health("down", since=1764000000.5, weight=3, reason="connect refused",
               observed_by=("r1", "r2"))
    doc = HealthVerdict.of(v, term=42)
    assert HealthVerdict.decode(doc.encode()) == doc and doc.to_health() == v
    assert json.loads(doc.encode()) == {
        "state": "down", "since": "2025-11-24T16:00:00.500Z", "weight": 3,
        "reason": "connect refused", "observed_by": ["r1", "r2"], "term": 42}


def test_decide_under_each_policy() -> None:
    views = {"r2": Observation(state="down"), "r3": Observation(state="down"),
             "r9": Observation(state="up"), ME: Observation(state="down")}
    assert decide("active", ME, up(), views, {ME, "r2"}) == Health(
        "up", since=T0, reason="connected", weight=1, observed_by=(ME,))
    # Majority: live routers only (r9 is not registered), ours is our own health, not our
    # stored observation.
    assert decide("majority", ME, up(), views, {ME, "r2", "r3"}) == Health(
        "down", since=T0, reason="majority of 3", weight=1, observed_by=("r2", "r3"))
    assert decide("majority", ME, up(), views, {ME, "r2"}) == Health(
        "down", since=T0, reason="majority of 2", weight=1, observed_by=("r2",))
    assert decide("majority", ME, down(), views, {ME, "r2"}).reason == (
        "2/2 routers: connect refused")


# ---------------------------------------------------------------- backups and observations


def test_a_backup_follows_the_stored_verdicts_one_key_at_a_time() -> None:
    store = Store()
    store.verdict(A, down())
    store.verdict(B, up(weight=4))
    core = started({A: up()}, store)
    assert core.plane == {A: down(), B: up(weight=4)}
    store.verdict(B, up(weight=5))
    assert sync(core, store) == {B: up(weight=5)}
    store.delete(KEYS.health(*A))
    assert sync(core, store) == {A: None} and core.plane == {B: up(weight=5)}
    assert core.checked(A, down(9), store.state).plane == {}  # a backup decides nothing
    writes = core.take_writes(store.state)
    assert writes.term == 0 and writes.verdicts == {}
    assert writes.observations == {A: Observation.of(down(9))}


def test_our_observations_are_published_and_put_back() -> None:
    store = Store()
    core = started({A: UNKNOWN, B: up()}, store)
    assert settle(core, store, 0) == 1
    assert store.observations(ME) == {B: Observation.of(up())}  # a: not checked yet
    core.checked(A, up(2), store.state)
    writes = core.take_writes(store.state)
    assert writes.observations == {A: Observation.of(up(2))}
    store.apply(writes, 0)
    # Our lease expired: etcd deleted them all; a hand edit changed one of another router.
    for key in list(store.kvs):
        if key.startswith(KEYS.observations_prefix):
            store.delete(key)
    store.observe("r2", B, "down")
    sync(core, store)
    assert core.take_writes(store.state).observations == {A: Observation.of(up(2)),
                                                          B: Observation.of(up())}
    store.observe(ME, B, "down")  # overwritten by hand
    sync(core, store)
    assert core.take_writes(store.state).observations == {B: Observation.of(up())}
    core.configure({A: up(2)}, "active", store.state)  # B no longer configured
    assert core.take_writes(store.state).observations == {B: None}


def test_writes_that_etcd_already_holds_are_skipped_and_failed_ones_come_back() -> None:
    store = Store()
    core = started({A: up()}, store)
    writes = core.take_writes(store.state)
    assert writes.observations == {A: Observation.of(up())}
    assert not core.take_writes(store.state)
    core.unwritten(writes)
    core.checked(A, down(1), store.state)
    assert core.take_writes(store.state).observations == {A: Observation.of(down(1))}
    store.put(KEYS.observation(ME, *A), Observation.of(down(1)).encode(), LEASE)
    sync(core, store)
    core.unwritten(writes)
    assert not core.take_writes(store.state)  # etcd holds it already


def test_a_publication_takes_a_bounded_share_and_leaves_the_rest_due() -> None:
    store = Store()
    keys = [ServerKey("v", f"s{i}") for i in range(25)]
    core = started(dict.fromkeys(keys, up()), store)
    taken: dict = {}
    while core.pending:
        writes = core.take_writes(store.state, limit=10)
        assert 0 < len(writes.observations) <= 10
        assert not taken.keys() & writes.observations.keys()
        taken.update(writes.observations)
    assert taken == {k: Observation.of(up()) for k in keys}
    assert not core.take_writes(store.state, limit=10)


# ---------------------------------------------------------------- the active


def test_a_new_active_starts_warm_from_the_stored_verdicts() -> None:
    store = Store()
    old = {A: Health("up", since=T0 - 50, reason="connected", weight=1, observed_by=("r0",)),
           B: Health("down", since=T0 - 40, reason="timeout", weight=1, observed_by=("r0",)),
           C: up(-30), D: up(-20, weight=5)}
    for key, health in old.items():
        store.verdict(key, health, term=3)
    own = {A: UNKNOWN, B: down(5), D: up(6, weight=2), ServerKey("web", "e"): up(7)}
    core = started(own, store)
    assert core.plane == old  # a backup: the stored view
    out = core.activate(9, store.state)
    e = ServerKey("web", "e")
    # A: we know nothing yet; B: we agree: both kept as stored (no write at failover).
    assert core.plane[A] == old[A] and core.plane[B] == old[B]
    assert core.plane[D] == Health("up", since=T0 + 6, reason="connected", weight=2,
                                   observed_by=(ME,))
    assert out.plane == {C: None, D: core.plane[D], e: core.plane[e]}
    writes = core.take_writes(store.state)
    assert writes.term == 9
    assert writes.verdicts == {D: HealthVerdict.of(core.plane[D], 9),
                               e: HealthVerdict.of(core.plane[e], 9),
                               C: None}  # not configured here: removed
    store.apply(writes, 9)
    assert settle(core, store, 9) == 0
    assert store.verdicts() == core.verdicts and set(core.verdicts) == set(own)
    assert store.verdicts()[A].term == 3  # kept, not rewritten


def test_the_active_decides_from_its_own_checks() -> None:
    store = Store()
    core = started({A: up(), B: up()}, store)
    core.activate(9, store.state)
    settle(core, store, 9)
    out = core.checked(A, down(5), store.state)
    verdict = Health("down", since=T0 + 5, reason="connect refused", weight=1,
                     observed_by=(ME,))
    assert out.plane == {A: verdict} and out.cause == T0 + 5
    writes = core.take_writes(store.state)
    assert writes.term == 9 and writes.verdicts == {A: HealthVerdict.of(verdict, 9)}
    assert writes.observations == {A: Observation.of(down(5))}


def test_majority_of_the_live_routers() -> None:
    store = Store()
    store.register(ME, "r2", "r3")
    store.observe("r2", A, "down")
    store.observe("r3", A, "down")
    core = started({A: up(), B: up()}, store, policy="majority")
    core.activate(9, store.state)
    assert core.plane[A].state == "down" and core.plane[A].observed_by == ("r2", "r3")
    assert core.plane[B] == Health("up", since=T0, reason="1/1 routers: connected", weight=1,
                                   observed_by=(ME,))
    settle(core, store, 9)
    store.observe("r3", A, "up")
    assert sync(core, store) == {A: Health("up", since=T0, reason="2/3 routers: connected",
                                           weight=1, observed_by=(ME, "r3"))}
    store.observe("r9", A, "down")  # not registered: does not count
    assert sync(core, store) == {}
    store.delete(KEYS.node("r3"))  # r3 left: r1 up, r2 down is a tie
    assert sync(core, store)[A].state == "down"
    store.register("r3")
    assert sync(core, store)[A].state == "up"
    settle(core, store, 9)
    assert store.verdicts() == core.verdicts


def test_under_majority_not_knowing_never_replaces_knowing() -> None:
    store = Store()
    store.register(ME, "r2")
    store.verdict(A, up(-10))
    core = started({A: UNKNOWN}, store, policy="majority")
    core.activate(9, store.state)
    assert core.plane[A] == up(-10)
    store.observe("r2", A, "unknown")
    store.register("r3")
    assert sync(core, store) == {} and core.plane[A] == up(-10)
    store.observe("r2", A, "down")
    assert sync(core, store)[A].state == "down"


def test_the_active_puts_back_what_was_changed_by_hand_and_removes_the_unconfigured() -> None:
    store = Store()
    core = started({A: up(), B: down()}, store)
    core.activate(9, store.state)
    settle(core, store, 9)
    kept = dict(core.verdicts)
    store.delete(KEYS.health(*A))
    store.verdict(B, up(), term=9)
    store.put(KEYS.health("web", "x"), HealthVerdict(state="up").encode())
    sync(core, store)
    writes = core.take_writes(store.state)
    assert writes.verdicts == {A: kept[A], B: kept[B], ServerKey("web", "x"): None}
    store.apply(writes, 9)
    store.put(KEYS.health(*A), "not json")
    settle(core, store, 9)
    assert store.verdicts() == kept


def test_a_server_no_longer_configured_loses_its_verdict_and_observation() -> None:
    store = Store()
    core = started({A: up(), B: up()}, store)
    core.activate(9, store.state)
    settle(core, store, 9)
    out = core.configure({A: up()}, "active", store.state)
    assert out.plane == {B: None}
    writes = core.take_writes(store.state)
    assert writes.verdicts == {B: None} and writes.observations == {B: None}
    # A new one is decided (and its stored verdict kept if it agrees).
    store.verdict(C, up(-5))
    sync(core, store)
    out = core.configure({A: up(), C: up(3)}, "active", store.state)
    assert out.plane == {C: up(-5)}


def test_a_policy_change_decides_again() -> None:
    store = Store()
    store.register(ME, "r2", "r3")
    store.observe("r2", A, "down")
    store.observe("r3", A, "down")
    core = started({A: up()}, store)
    core.activate(9, store.state)
    assert core.plane[A].state == "up"
    assert core.configure({A: up()}, "majority", store.state).plane[A].state == "down"


def test_rekeyed_writes_under_the_new_term_and_again_what_the_old_one_lost() -> None:
    store = Store()
    core = started({A: up()}, store)
    core.activate(9, store.state)
    settle(core, store, 9)
    core.checked(A, down(1), store.state)
    lost = core.take_writes(store.state)
    store.apply(lost, 12)  # the key went with the lease: the fence fails, nothing written
    assert store.verdicts()[A].state == "up"
    core.rekeyed(12, store.state)
    writes = core.take_writes(store.state)
    assert writes.term == 12 and writes.verdicts[A].state == "down"  # type: ignore[union-attr]


def test_deactivate_follows_the_store_and_drops_verdict_writes() -> None:
    store = Store()
    store.verdict(A, down(-5))
    core = started({A: up()}, store)
    core.activate(9, store.state)
    assert core.plane[A].state == "up"
    out = core.deactivate(store.state)
    assert out.plane == {A: down(-5)} and core.plane == {A: down(-5)}
    writes = core.take_writes(store.state)
    assert writes.verdicts == {} and writes.term == 0
    core.rekeyed(13, store.state)  # not active: nothing to do
    assert core.term == 0


def test_warm_start_of_new_check_targets() -> None:
    store = Store()
    store.verdict(A, Health("down", since=T0, reason="refused", weight=2, observed_by=("r0",)))
    store.verdict(B, UNKNOWN)
    core = started({}, store)
    assert core.warm_start([A, B, C], store.state) == {
        A: Health("down", since=T0, reason="refused", weight=2)}
    core.configure({A: up()}, "active", store.state)
    assert core.warm_start([A], store.state) == {}  # already checked: nanny keeps its own


def test_an_update_costs_what_it_touches(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    store.register(ME, "r2")
    servers = [ServerKey("v", f"s{i}") for i in range(5000)]
    for key in servers:
        store.verdict(key, up())
    core = started(dict.fromkeys(servers, up()), store, policy="majority")
    core.activate(9, store.state)
    settle(core, store, 9)
    calls = {"decide": 0, "to_health": 0}
    real_decide, real_to_health = core_module.decide, HealthVerdict.to_health

    def counted(*args: object) -> Health:
        calls["decide"] += 1
        return real_decide(*args)  # type: ignore[arg-type]

    def to_health(self: HealthVerdict) -> Health:
        calls["to_health"] += 1
        return real_to_health(self)

    monkeypatch.setattr(core_module, "decide", counted)
    monkeypatch.setattr(HealthVerdict, "to_health", to_health)
    store.observe("r2", servers[7], "down")
    store.verdict(servers[8], down())  # by hand: put back
    sync(core, store)
    assert calls == {"decide": 1, "to_health": 0}
    # s7: r1 up, r2 down is a tie (down); s8 is put back.
    assert set(core.take_writes(store.state).verdicts) == {servers[7], servers[8]}
    core.checked(servers[9], down(), store.state)
    assert calls["decide"] == 2
    core.deactivate(store.state)
    calls.update(decide=0, to_health=0)
    store.verdict(servers[10], down(3))
    sync(core, store)
    assert calls == {"decide": 0, "to_health": 1}


# ---------------------------------------------------------------- any sequence converges

SERVERS = [A, B, C, D]
OTHERS = ["r2", "r3"]
STATES = st.sampled_from(["up", "down"])

CONFIGURE = st.tuples(st.just("configure"), st.sets(st.sampled_from(SERVERS)),
                      st.sampled_from(["active", "majority"]))
CHECK = st.tuples(st.just("check"), st.sampled_from(SERVERS), STATES, st.integers(1, 3))
OBSERVE = st.tuples(st.just("observe"), st.sampled_from(OTHERS), st.sampled_from(SERVERS),
                    st.sampled_from(["up", "down", "unknown", None]))
REGISTER = st.tuples(st.just("register"), st.sampled_from(OTHERS), st.booleans())
DELIVER = st.tuples(st.just("deliver"), st.none() | st.integers(0, 4))
EVENTS = st.one_of(
    CONFIGURE, CHECK, CHECK, OBSERVE, OBSERVE, REGISTER, DELIVER, DELIVER, DELIVER,
    st.tuples(st.just("hand"), st.sampled_from([*SERVERS, ServerKey("web", "x")]),
              st.sampled_from(["delete", "up", "down", "junk"])),
    st.tuples(st.just("activate")),
    st.tuples(st.just("deactivate"), st.booleans()),
    st.tuples(st.just("rekey")),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("take")),
    st.tuples(st.just("finish"), st.booleans()),
    st.tuples(st.just("publish")),
    st.tuples(st.just("lease_lost")),
)


@dataclass
class World:
    """The test's side: a fake engine (our own health), the leader key's term in etcd."""

    store: Store = field(default_factory=Store)
    core: HealthCore = field(default_factory=lambda: HealthCore(ME))
    own: dict[ServerKey, Health] = field(default_factory=dict)
    leader_term: int = 0
    next_term: int = 10
    inflight: Writes | None = None
    now: float = 0.0

    def run(self, events: Iterable[tuple]) -> None:
        for event in events:
            self.now += 1
            getattr(self, "do_" + event[0])(*event[1:])
            if not self.store.queue:
                self.check_decisions()

    def check_decisions(self) -> None:
        """Once the core has seen all of etcd: the data plane follows the stored verdicts
        (backup), or every verdict is the decision on what we know (active), except that
        not knowing keeps what is known."""
        core, state = self.core, self.store.state
        if not core.active:
            assert core.plane == {k: doc.to_health() for k, doc in state.health.items()}
            return
        assert set(core.plane) == set(core.verdicts) == set(self.own)
        live = frozenset(state.registered | {ME})
        for key, own in self.own.items():
            decided = decide(core.policy, ME, own, state.observations.get(key, {}), live)
            verdict = core.plane[key]
            assert core.verdicts[key].to_health() == verdict
            if decided.state != "unknown":
                assert verdict.state == decided.state, key
                if decided.state == "up":
                    assert verdict.weight == decided.weight, key

    def do_configure(self, wanted: set[ServerKey], policy: str) -> None:
        warm = self.core.warm_start(wanted, self.store.state)
        self.own = {k: self.own.get(k) or warm.get(k) or Health(
            "unknown", since=T0 + self.now, reason="not checked yet", weight=1) for k in wanted}
        self.core.configure(self.own, policy, self.store.state)  # type: ignore[arg-type]

    def do_check(self, key: ServerKey, state: str, weight: int) -> None:
        old = self.own.get(key)
        if old is None or (old.state == state and (state != "up" or old.weight == weight)):
            return  # nanny tells news only
        self.own[key] = Health(state, since=T0 + self.now, reason=f"{state} {weight}",  # type: ignore[arg-type]
                               weight=weight)
        self.core.checked(key, self.own[key], self.store.state)

    def do_observe(self, node: str, key: ServerKey, state: str | None) -> None:
        self.store.observe(node, key, state)

    def do_register(self, node: str, present: bool) -> None:
        if present:
            self.store.register(node)
        else:
            self.store.delete(KEYS.node(node))

    def do_hand(self, key: ServerKey, what: str) -> None:
        if what == "delete":
            self.store.delete(KEYS.health(*key))
        elif what == "junk":
            self.store.put(KEYS.health(*key), "{junk")
        else:
            self.store.verdict(key, Health(what, since=T0, reason="by hand"), term=1)  # type: ignore[arg-type]

    def do_activate(self) -> None:
        if not self.core.active:
            self.leader_term, self.next_term = self.next_term, self.next_term + 1
            self.core.activate(self.leader_term, self.store.state)

    def do_deactivate(self, key_kept: bool) -> None:
        if self.core.active:
            self.core.deactivate(self.store.state)
            if not key_kept:  # resigned; else the key stays until its lease expires
                self.leader_term = 0

    def do_rekey(self) -> None:
        if self.core.active:
            self.leader_term, self.next_term = self.next_term, self.next_term + 1
            self.core.rekeyed(self.leader_term, self.store.state)

    def do_deliver(self, n: int | None) -> None:
        self.core.etcd_changed(self.store.state, self.store.deliver(n))

    def do_snapshot(self) -> None:
        self.store.snapshot()
        self.core.etcd_changed(self.store.state, None)

    def do_take(self) -> None:
        if self.inflight is None:
            self.inflight = self.core.take_writes(self.store.state)

    def do_finish(self, ok: bool) -> None:
        if self.inflight is not None:
            if ok:
                self.store.apply(self.inflight, self.leader_term)
            else:
                self.core.unwritten(self.inflight)
            self.inflight = None

    def do_publish(self) -> None:
        self.do_take()
        self.do_finish(True)

    def do_lease_lost(self) -> None:
        for key in list(self.store.observations(ME)):
            self.store.delete(KEYS.observation(ME, *key))


@settings(max_examples=500, deadline=None)
@given(st.sets(st.sampled_from(SERVERS)), st.sampled_from(["active", "majority"]),
       st.lists(EVENTS, min_size=10, max_size=60))
def test_any_sequence_of_events_converges_to_the_decided_verdicts(
        servers: set[ServerKey], policy: str, events: list[tuple]) -> None:
    w = World()
    w.store.register(ME, *OTHERS)
    w.do_deliver(None)
    w.do_configure(servers, policy)
    w.run(events)
    w.do_finish(True)
    settle(w.core, w.store, w.leader_term)
    w.check_decisions()
    core, store = w.core, w.store
    assert store.observations(ME) == stored_as({k: Observation.of(h) for k, h in w.own.items()},
                                               store.observations(ME))
    if core.active:
        assert store.verdicts() == stored_as(core.verdicts, store.verdicts())


def stored_as(docs: dict[ServerKey, Any], stored: dict[ServerKey, Any]) -> dict[ServerKey, Any]:
    """What etcd holds once ``docs`` are written: all of them, but a first "unknown" (a
    server not checked yet, with nothing stored) is not written."""
    return {k: d for k, d in docs.items() if d.state != "unknown" or k in stored}


def test_a_configured_weight_reaches_the_backups_and_survives_a_failover() -> None:
    """A server up at its configured weight (nanny gives no weight) is stored with a null
    weight: a backup following the stored verdicts programs the configured weight too, and
    a new active keeps the verdicts as stored (no rewrite of every server at failover).
    Stored as 1, the backups programmed weight 1 for a server configured with 3, and a
    takeover moved the weights (and every Maglev flow) under the new active."""
    from agent.dataplane.desired import desired_table
    from cluster.model import LvsConfig

    cfg = LvsConfig.model_validate({"virtuals": [{
        "name": "web", "address": "10.0.0.1 eth0", "scheduler": "mh",
        "servers": [{"name": "a", "address": "10.0.1.1", "weight": 3},
                    {"name": "b", "address": "10.0.1.2", "weight": 1}]}]})
    a, b = ServerKey("web", "a"), ServerKey("web", "b")
    store = Store()
    mine = {a: Health("up", since=T0, reason="connected"),
            b: Health("up", since=T0, reason="connected")}
    active = started(mine, store)
    active.activate(3, store.state)
    store.apply(active.take_writes(store.state), 3)
    assert settle(active, store, 3) == 0
    assert json.loads(store.kvs[KEYS.health("web", "a")].value)["weight"] is None
    backup = started(dict(mine), store)
    weights = {k: {d.address: s.weight for d, s in svc.dests.items()}
               for k, svc in desired_table(cfg, backup.plane, {}).items()}
    assert weights == {k: {d.address: s.weight for d, s in svc.dests.items()}
                       for k, svc in desired_table(cfg, active.plane, {}).items()}
    assert list(weights.values()) == [{"10.0.1.1": 3, "10.0.1.2": 1}]
    backup.activate(4, store.state)
    assert backup.take_writes(store.state).verdicts == {}  # kept as stored
