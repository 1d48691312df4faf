"""The one health type and the one server key, and their etcd documents (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.documents import ClusterState, HealthVerdict, Observation
from cluster.etcd.client import KV
from cluster.health import NOT_CHECKED, Health, ServerKey
from cluster.keys import Keys

NAMES = st.text(min_size=1, max_size=8)
HEALTHS = st.builds(
    Health, st.sampled_from(["up", "down", "unknown"]),
    since=st.integers(0, 4_000_000_000_000).map(lambda ms: ms / 1000),
    reason=st.text(max_size=20), weight=st.integers(0, 65535),
    observed_by=st.lists(NAMES, max_size=3).map(tuple))


def test_server_key_is_a_named_tuple_equal_to_the_plain_pair() -> None:
    key = ServerKey("http", "rs1")
    virtual, server = key
    assert (virtual, server) == (key.virtual, key.server) == ("http", "rs1")
    assert key == ("http", "rs1") and hash(key) == hash(("http", "rs1"))
    assert {("http", "rs1"): 1}[key] == 1


def test_health_checks_its_fields_and_takes_keywords_after_the_state() -> None:
    assert Health("unknown") == NOT_CHECKED and NOT_CHECKED.weight is None
    with pytest.raises(ValueError, match="up, down or unknown"):
        Health("sick")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer or None"):
        Health("up", weight=True)
    with pytest.raises(TypeError):
        Health("up", 0.0)  # type: ignore[misc]


def test_documents_are_the_serialisation_of_health() -> None:
    h = Health("up", since=1764000000.25, reason="connected", weight=4, observed_by=("r1",))
    verdict = HealthVerdict.of(h, term=9)
    assert json.loads(verdict.encode()) == {
        "state": "up", "since": "2025-11-24T16:00:00.250Z", "weight": 4, "reason": "connected",
        "observed_by": ["r1"], "term": 9}
    assert verdict.to_health() == h
    seen = Observation.of(h)
    assert json.loads(seen.encode()) == {"state": "up", "since": "2025-11-24T16:00:00.250Z",
                                         "weight": 4, "reason": "connected"}
    assert seen.to_health() == Health("up", since=h.since, reason="connected", weight=4)
    # The configured weight (None) is stored as null and read back as None, so a router
    # following the stored verdicts programs the configured weight; a record without the
    # field (none is written so) reads as 1.
    configured = HealthVerdict.of(Health("up", weight=None), term=1)
    assert json.loads(configured.encode())["weight"] is None
    assert HealthVerdict.decode(configured.encode()).to_health().weight is None
    assert Observation.decode(Observation.of(Health("up")).encode()).to_health().weight is None
    assert HealthVerdict.decode('{"state": "up"}').weight == 1


@given(HEALTHS, st.integers(0, 2**40))
def test_verdicts_round_trip_at_millisecond_precision(h: Health, term: int) -> None:
    doc = HealthVerdict.of(h, term)
    again = HealthVerdict.decode(doc.encode())
    assert again == doc and again.to_health() == h
    assert HealthVerdict.of(again.to_health(), term) == doc
    seen = Observation.decode(Observation.of(h).encode())
    assert seen.to_health() == Health(h.state, since=h.since, reason=h.reason, weight=h.weight)


def test_cluster_state_keys_are_server_keys() -> None:
    keys = Keys("c")
    kv = KV(keys.health("a/b", "c d"), HealthVerdict(state="up").encode().encode(), 1, 1, 1, 0)
    obs = KV(keys.observation("r1", "a/b", "c d"), b'{"state": "down"}', 2, 2, 1, 0)
    state = ClusterState.from_kvs(keys, [kv, obs])
    (key,) = state.health
    assert type(key) is ServerKey and key == ServerKey("a/b", "c d")
    assert type(next(iter(state.observations))) is ServerKey
