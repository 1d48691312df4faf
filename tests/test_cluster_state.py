"""ClusterState: typed state from the key-values of a cluster, junk listed and never fatal;
applying changes one key at a time ends where ``from_kvs`` of the final key-values does."""

from __future__ import annotations

import itertools
import json

from hypothesis import example, given, settings
from hypothesis import strategies as st
from support.documents import STRATEGIES

from cluster import lvscf
from cluster.documents import (
    AdminFlag,
    ClusterState,
    ConfigRefusal,
    EvictionVote,
    HashSeed,
    HealthVerdict,
    Junk,
    LeaderDoc,
    LeaderKey,
    NodeRecord,
    Observation,
    ReleasedMarker,
    StoredConfig,
    SwitchoverRequest,
    default_seed,
)
from cluster.documents.health import HealthGroup, ObservationGroup, group_of
from cluster.etcd.client import KV
from cluster.keys import Keys
from cluster.rollout import rollout

KEYS = Keys("c")
P = KEYS.prefix
CFG = lvscf.load("deploy/examples/lvs.cf")
_revs = itertools.count(100)


def kv(key: str, value: str | bytes, lease: int = 0, created: int | None = None) -> KV:
    rev = next(_revs)
    data = value.encode() if isinstance(value, str) else value
    return KV(key, data, rev if created is None else created, rev, 1, lease)


def config_value(serial: int) -> str:
    return StoredConfig(CFG.model_copy(update={"serial_no": serial}), "", "t", "me").encode()


def test_every_kind_of_key_with_junk_mixed_in() -> None:
    node = NodeRecord(node="r1", role="backup", config_serial=1)
    kvs = [
        kv(KEYS.config, config_value(1)),
        kv(KEYS.leader, LeaderDoc(node="r1", since="s").encode(), lease=5, created=42),
        kv(KEYS.node("r1"), node.encode(), lease=5),
        kv(KEYS.node("web/1"), "{bad", lease=6),
        kv(KEYS.health("http", "web1"), HealthVerdict(state="down", term=42).encode()),
        kv(KEYS.health("http", "web2"), "not json"),
        kv(KEYS.observation("r1", "http", "web1"), Observation(state="up").encode()),
        kv(KEYS.observation("r2", "http", "web1"), '{"state": 3}'),
        kv(KEYS.admin("http", "web1"), AdminFlag(state="drain").encode()),
        kv(KEYS.admin("http", "web2"), '{"state": "explode"}'),
        kv(KEYS.switchover, SwitchoverRequest(to="r2", term=42).encode()),
        kv(KEYS.released, ReleasedMarker(node="r0", term=41).encode()),
        kv(KEYS.eviction("r2"), EvictionVote(term=42, node="r1").encode()),
        kv(KEYS.eviction("r3"), '{"term": "t"}'),
        kv(P + "control/evict-", "{}"),
        kv(P + "control/nonsense", "{}"),
        kv(KEYS.config_history(1), "{}"),
        kv(P + "bogus/key", "1"),
        kv(P + "health/only-one-part", "{}"),
    ]
    state = ClusterState.from_kvs(KEYS, kvs)
    assert state.config is not None and state.config.serial_no == 1 and state.config_error is None
    assert state.leader == LeaderKey("r1", 42, 5, "s")
    assert state.registered == {"r1", "web/1"} and state.nodes == {"r1": node}
    assert state.health == {("http", "web1"): HealthVerdict(state="down", term=42)}
    assert state.observations == {("http", "web1"): {"r1": Observation(state="up")}}
    assert state.admin == {("http", "web1"): AdminFlag(state="drain")}
    assert state.switchover == SwitchoverRequest(to="r2", term=42)
    assert state.released == ReleasedMarker(node="r0", term=41)
    assert state.evictions == {"r2": EvictionVote(term=42, node="r1")}
    assert set(state.junk) == {
        KEYS.node("web/1"), KEYS.health("http", "web2"), KEYS.observation("r2", "http", "web1"),
        KEYS.admin("http", "web2"), KEYS.eviction("r3"), P + "control/evict-",
        P + "control/nonsense", P + "bogus/key", P + "health/only-one-part"}
    assert state.junk[KEYS.admin("http", "web2")].startswith("not a valid admin flag: state:")
    assert state.junk[P + "bogus/key"] == "unknown key"
    assert state.junk_list()[0] == Junk(*sorted(state.junk.items())[0])
    assert str(Junk("k", "why")) == "k: why"


def test_junk_leader_value_keeps_the_term_and_is_listed() -> None:
    state = ClusterState.from_kvs(KEYS, [kv(KEYS.leader, "garbage", lease=9, created=77)])
    assert state.leader == LeaderKey("", 77, 9)
    assert "not JSON" in state.junk[KEYS.leader]


def test_a_bad_config_is_an_error_not_junk() -> None:
    state = ClusterState.from_kvs(KEYS, [kv(KEYS.config, "this is not json")])
    assert state.config is None and "not JSON" in (state.config_error or "")
    assert state.junk == {}
    state.apply(KEYS.config, kv(KEYS.config, config_value(2)))
    assert state.config is not None and state.config.serial_no == 2
    assert state.config_error is None
    state.apply(KEYS.config, None)
    assert state.config is None and state.config_error is None


def test_apply_forgets_what_a_key_said_before() -> None:
    state = ClusterState(KEYS)
    key = KEYS.health("http", "web1")
    assert state.apply(key, kv(key, HealthVerdict(state="up").encode())) is None
    junk = state.apply(key, kv(key, "junk"))
    assert junk is not None and junk.key == key and state.health == {}
    assert state.junk == {key: junk.why}
    assert state.apply(key, None) is None
    assert state.junk == {} and state.health == {}
    obs = KEYS.observation("r1", "http", "web1")
    state.apply(obs, kv(obs, Observation(state="up").encode()))
    state.apply(obs, None)
    assert state.observations == {}  # no empty leftovers
    node = KEYS.node("r1")
    state.apply(node, kv(node, "{bad"))
    assert state.registered == {"r1"} and state.nodes == {}
    state.apply(node, None)
    assert state.registered == set() and state.junk == {}
    assert state.apply(P + "bogus", None) is None and state.junk == {}


def test_only_keys_of_this_cluster() -> None:
    state = ClusterState.from_kvs(KEYS, [kv("/lvs/other/leader", "{}")])
    assert state.junk == {"/lvs/other/leader": "unknown key"} and state.leader is None


# -- incremental == from_kvs of the final key-values (hypothesis) -------------------------

KEY_VALUES = {
    KEYS.config: st.sampled_from([config_value(1), config_value(2)]),
    KEYS.leader: STRATEGIES[LeaderDoc].map(lambda d: d.encode()),
    KEYS.node("r1"): STRATEGIES[NodeRecord].map(lambda d: d.encode()),
    KEYS.node("r/2"): STRATEGIES[NodeRecord].map(lambda d: d.encode()),
    KEYS.health("http", "web1"): STRATEGIES[HealthVerdict].map(lambda d: d.encode()),
    KEYS.health("http", "web2"): STRATEGIES[HealthVerdict].map(lambda d: d.encode()),
    KEYS.observation("r1", "http", "web1"): STRATEGIES[Observation].map(lambda d: d.encode()),
    KEYS.observation("r/2", "http", "web1"): STRATEGIES[Observation].map(lambda d: d.encode()),
    KEYS.observation("r1", "http", "web2"): STRATEGIES[Observation].map(lambda d: d.encode()),
    KEYS.admin("http", "web1"): STRATEGIES[AdminFlag].map(lambda d: d.encode()),
    # groups, of servers no per-server key above names (one server in two keys: the newest
    # speaks for it, so the order of the keys matters; tests below)
    KEYS.health_group("grouped", 0): st.dictionaries(
        st.sampled_from(["web1", "web/2"]), STRATEGIES[HealthVerdict], min_size=1).map(
        lambda d: group_of(d, HealthGroup).encode()),
    KEYS.health_group("grouped", 1): st.dictionaries(
        st.sampled_from(["web3"]), STRATEGIES[HealthVerdict], min_size=1).map(
        lambda d: group_of(d, HealthGroup).encode()),
    KEYS.observation_group("r1", "grouped", 0): st.dictionaries(
        st.sampled_from(["web1", "web/2"]), STRATEGIES[Observation], min_size=1).map(
        lambda d: group_of(d, ObservationGroup).encode()),
    KEYS.observation_group("r/2", "grouped", 0): st.dictionaries(
        st.sampled_from(["web1"]), STRATEGIES[Observation], min_size=1).map(
        lambda d: group_of(d, ObservationGroup).encode()),
    KEYS.switchover: STRATEGIES[SwitchoverRequest].map(lambda d: d.encode()),
    KEYS.released: STRATEGIES[ReleasedMarker].map(lambda d: d.encode()),
    KEYS.eviction("r1"): STRATEGIES[EvictionVote].map(lambda d: d.encode()),
    KEYS.eviction("r/2"): STRATEGIES[EvictionVote].map(lambda d: d.encode()),
    KEYS.config_history(1): st.just("{}"),
    KEYS.seed: STRATEGIES[HashSeed].map(lambda d: d.encode()),
    P + "control/evict-": st.just("{}"),
    P + "bogus": st.just("1"),
}
JUNK_VALUES = st.sampled_from(["", "junk", "[1]", '{"state": "x"}', '{"term": "t"}',
                               '{"role": 1}', "{}", b"\xff",
                               '{"servers": {"web1": {"state": "up"}, "web/2": {"state": 1}}}',
                               '{"servers": []}'])


@st.composite
def changes(draw: st.DrawFn) -> tuple[str, str | bytes | None, int]:
    key = draw(st.sampled_from(sorted(KEY_VALUES)))
    value = draw(st.none() | KEY_VALUES[key] | JUNK_VALUES)
    return key, value, draw(st.integers(0, 3))


def run(store: dict[str, KV], key: str, value: str | bytes | None, lease: int) -> KV | None:
    """What etcd does: a put keeps the create revision of a key that exists."""
    if value is None:
        store.pop(key, None)
        return None
    old = store.get(key)
    store[key] = kv(key, value, lease, old.create_revision if old else None)
    return store[key]


@settings(max_examples=300, deadline=None)
@given(start=st.lists(changes(), max_size=12), updates=st.lists(changes(), max_size=40))
# Found by a run (2026-12-07): two shards of one virtual name the same server, with
# different verdicts; the order of their keys decided which one the view held.
@example(start=[], updates=[
    ("/lvs/c/health/grouped/*1", '{"servers": {"web1": {"state": "up"}, "web/2": {"state": 1}}}',
     0),
    ("/lvs/c/health/grouped/*0", '{"servers": {"web1": {"state": "up", "since": "", "weight": '
     'null, "reason": "", "observed_by": [], "term": 0}}}', 0)])
def test_incremental_apply_equals_from_kvs_of_the_final_kvs(
        start: list[tuple[str, str | bytes | None, int]],
        updates: list[tuple[str, str | bytes | None, int]]) -> None:
    store: dict[str, KV] = {}
    for key, value, lease in start:
        run(store, key, value, lease)
    state = ClusterState.from_kvs(KEYS, store.values())
    for key, value, lease in updates:
        junk = state.apply(key, run(store, key, value, lease))
        assert (junk is None) == (key not in state.junk)
    assert state == ClusterState.from_kvs(KEYS, store.values())
    assert state == ClusterState.from_kvs(KEYS, reversed(list(store.values())))


def test_the_hash_seed_stored_else_the_clusters_default() -> None:
    state = ClusterState(KEYS)
    assert state.hash_seed() == default_seed("c") != default_seed("d")
    assert state.apply(KEYS.seed, kv(KEYS.seed, HashSeed(seed=7).encode())) is None
    assert state.seed == HashSeed(seed=7) and state.hash_seed() == 7
    junk = state.apply(KEYS.seed, kv(KEYS.seed, '{"seed": 4294967296}'))
    assert junk is not None and "hash seed" in junk.why
    assert state.seed is None and state.hash_seed() == default_seed("c")
    state.apply(KEYS.seed, None)
    assert KEYS.seed not in state.junk


# -- rollout: which live routers run a config ---------------------------------------------

def nodes_state(**records: NodeRecord | str) -> ClusterState:
    return ClusterState.from_kvs(KEYS, [
        kv(KEYS.node(n), r if isinstance(r, str) else r.encode()) for n, r in records.items()])


def test_rollout() -> None:
    refusal = ConfigRefusal(serial_no=5, reason="virtual web: address needs a device")
    state = nodes_state(
        r1=NodeRecord(role="active", config_serial=5),
        r2=NodeRecord(role="backup", config_serial=4, config_refused=refusal),
        r3=NodeRecord(role="backup", config_serial=4),
        r4=NodeRecord(role="backup"),
        r5="{junk",
        r6=NodeRecord(role="backup", config_serial=4,
                      config_refused=ConfigRefusal(serial_no=3, reason="old")),
    )
    ro = rollout(state, 5)
    assert ro.running == ("r1",) and ro.refused == {"r2": refusal}
    assert ro.pending == ("r3", "r4", "r5", "r6") and not ro.done
    assert ro.behind == {
        "r2": "refused it: virtual web: address needs a device",
        "r3": "it runs serial_no 4", "r4": "it does not report a config it runs",
        "r5": "its registration is unreadable", "r6": "it runs serial_no 4"}
    assert rollout(nodes_state(r1=NodeRecord(role="active", config_serial=5)), 5).done
    assert rollout(nodes_state(), 5).done  # no live router: nothing to wait for
    assert not rollout(nodes_state(r2=NodeRecord(role="x", config_refused=refusal)), 5).done


def test_state_from_real_values_is_json_readable() -> None:
    node = NodeRecord(node="r1", role="backup", config_serial=3)
    state = ClusterState.from_kvs(KEYS, [kv(KEYS.node("r1"), node.encode())])
    assert json.loads(state.nodes["r1"].encode())["config_serial"] == 3


# -- groups: health/<virtual>/*<shard>, observations/<node>/<virtual>/*<shard> ----------------

def group(servers: dict[str, HealthVerdict]) -> str:
    return group_of(servers, HealthGroup).encode()


UP, DOWN = HealthVerdict(state="up", term=1), HealthVerdict(state="down", term=2)


def test_a_group_is_read_entry_by_entry_and_a_rewrite_touches_only_what_changed() -> None:
    state = ClusterState(KEYS)
    g = KEYS.health_group("web", 0)
    state.apply(g, kv(g, group({"a": UP, "b": UP})))
    assert state.health == {("web", "a"): UP, ("web", "b"): UP}
    assert state.take_touched() == ({("web", "a"), ("web", "b")}, set())
    state.apply(g, kv(g, group({"a": UP, "b": DOWN, "c": UP})))
    assert state.take_touched()[0] == {("web", "b"), ("web", "c")}
    assert state.last_verdicts == [("web", "b"), ("web", "c")]
    state.apply(g, kv(g, group({"a": UP})))
    assert state.health == {("web", "a"): UP} and state.take_touched()[0] == {
        ("web", "b"), ("web", "c")}
    state.apply(g, None)
    assert state.health == {} and state.health_groups == {}
    assert state.take_touched()[0] == {("web", "a")}
    o = KEYS.observation_group("r1", "web", 0)
    state.apply(o, kv(o, group_of({"a": Observation(state="down")}, ObservationGroup).encode()))
    assert state.observations == {("web", "a"): {"r1": Observation(state="down")}}
    assert state.take_touched() == (set(), {("r1", ("web", "a"))})
    state.apply(o, None)
    assert state.observations == {} and state.observation_groups == {}


def test_junk_entries_of_a_group_are_ignored_and_the_rest_stays_in_force() -> None:
    state = ClusterState(KEYS)
    g = KEYS.health_group("web", 0)
    junk = state.apply(g, kv(g, '{"servers": {"a": {"state": "up"}, "b": {"state": 7}}}'))
    assert junk is not None and "1 of 2 entries ignored: b:" in junk.why
    assert state.health == {("web", "a"): HealthVerdict(state="up")}
    assert state.apply(g, kv(g, "[1]")) is not None and state.health == {}
    bad = KEYS.prefix + "health/web/*x"  # not a shard number: junk, not a server named "*x"
    assert state.apply(bad, kv(bad, group({"a": UP}))).why == "unknown key"  # type: ignore[union-attr]
    encoded = KEYS.health("web", "*0")  # a server named "*0" is not a group
    assert encoded.endswith("/%2A0")
    state.apply(encoded, kv(encoded, UP.encode()))
    assert state.health == {("web", "*0"): UP} and state.health_groups == {}


def test_one_server_in_two_keys_the_newest_speaks_and_the_other_stays_behind() -> None:
    """A layout in change (per-server key -> group, or a virtual resharded): deleting the
    key a server left never drops what the key it moved to holds."""
    state = ClusterState(KEYS)
    single, g0, g1 = KEYS.health("web", "a"), KEYS.health_group("web", 0), KEYS.health_group(
        "web", 1)
    state.apply(single, kv(single, UP.encode()))
    state.apply(g0, kv(g0, group({"a": DOWN})))
    assert state.single("health", "web", "a") and state.singles("health") == [("web", "a")]
    state.apply(single, None)  # the move's delete, after the group's put
    assert state.health == {("web", "a"): DOWN} and state.singles("health") == []
    state.apply(single, kv(single, "junk"))  # junk: kept out, but still a key to delete
    assert state.health == {("web", "a"): DOWN} and state.singles("health") == [("web", "a")]
    state.apply(single, None)
    state.apply(g1, kv(g1, group({"a": UP})))  # resharded: a moves to *1
    state.apply(g0, kv(g0, group({"b": UP})))  # and leaves *0
    assert state.health == {("web", "a"): UP, ("web", "b"): UP}
    # The newest holder goes while an older one still names the server: the older speaks.
    state.apply(g0, kv(g0, group({"a": DOWN, "b": UP})))
    state.apply(g0, kv(g0, group({"b": UP})))
    assert state.health[("web", "a")] == UP


def test_a_group_we_wrote_comes_back_as_our_own_documents_anything_else_is_decoded() -> None:
    state = ClusterState(KEYS)
    g = KEYS.health_group("web", 0)
    ours = {"a": HealthVerdict(state="up", term=3)}
    value = group(ours).encode()
    state.expect(g, value, ours)
    state.apply(g, kv(g, value))
    assert state.health[("web", "a")] is ours["a"]  # not decoded again: the same object
    state.expect(g, value, ours)
    other = group({"a": HealthVerdict(state="down", term=4)}).encode()  # someone else's
    state.apply(g, kv(g, other))
    assert state.health[("web", "a")] == HealthVerdict(state="down", term=4)
    state.apply(g, kv(g, value))  # an expectation is used once
    assert state.health[("web", "a")] == ours["a"] and state.health[("web", "a")] is not ours["a"]
