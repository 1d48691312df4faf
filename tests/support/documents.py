"""Hypothesis strategies for every etcd document."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from cluster.documents import (
    AdminFlag,
    ConfigHead,
    ConfigHistoryEntry,
    ConfigRefusal,
    Document,
    EvictionVote,
    FailoverEvent,
    HashSeed,
    HealthGroup,
    HealthTransition,
    HealthVerdict,
    LeaderDoc,
    NodeRecord,
    Observation,
    ObservationGroup,
    ReleasedMarker,
    SwitchoverEvent,
    SwitchoverRequest,
)

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
ints = st.integers(min_value=0, max_value=2**62)
states = st.sampled_from(["up", "down", "unknown"])
weights = st.none() | st.integers(min_value=0, max_value=65535)
names = st.lists(text, max_size=4).map(tuple)
refusals = st.builds(ConfigRefusal, serial_no=ints, reason=text)

STRATEGIES: dict[type[Document], st.SearchStrategy[Any]] = {
    LeaderDoc: st.builds(LeaderDoc, node=text, since=text),
    NodeRecord: st.builds(
        NodeRecord, node=text, role=text, address=text, pid=st.none() | ints, version=text,
        started_at=text, dataplane=text, etcd=st.booleans(), term=ints,
        config_serial=st.none() | ints, config_refused=st.none() | refusals),
    HealthVerdict: st.builds(HealthVerdict, state=states, since=text, weight=weights,
                             reason=text, observed_by=names, term=ints),
    Observation: st.builds(Observation, state=states, since=text, weight=weights, reason=text),
    AdminFlag: st.builds(AdminFlag, state=st.sampled_from(["drain", "disable"]), by=text,
                         at=text),
    SwitchoverRequest: st.builds(SwitchoverRequest, to=text, term=ints, id=text, by=text,
                                 reason=text, at=text),
    ReleasedMarker: st.builds(ReleasedMarker, node=text, term=ints, at=text, reason=text),
    EvictionVote: st.builds(EvictionVote, term=ints, node=text, at=text),
    ConfigHistoryEntry: st.builds(ConfigHistoryEntry, serial_no=ints, pushed_at=text,
                                  pushed_by=text, changes=names),
    FailoverEvent: st.builds(FailoverEvent, at=text, node=text, term=ints, previous=text,
                             previous_term=ints, reason=text, gap_ms=st.none() | ints,
                             takeover_ms=st.none() | ints),
    SwitchoverEvent: st.builds(SwitchoverEvent, at=text, node=text, term=ints, previous=text,
                               previous_term=ints, by=text, reason=text, to=text,
                               request=text, gap_ms=st.none() | ints),
    HealthTransition: st.builds(HealthTransition, at=text, virtual=text, server=text,
                                previous=st.none() | states, state=states, since=text,
                                reason=text, observed_by=names, by=text, term=ints,
                                dropped_before=ints),
    HashSeed: st.builds(HashSeed, seed=st.integers(0, 2**32 - 1), created_at=text,
                        created_by=text),
    ConfigHead: st.builds(ConfigHead, format=st.just(2), serial_no=ints, pushed_at=text,
                          pushed_by=text, sha256=text,
                          globals=st.dictionaries(text, ints | text, max_size=3),
                          manifest=names, source=names, virtuals=ints, servers=ints,
                          parts=ints, bytes=ints),
}

STRATEGIES[HealthGroup] = st.builds(HealthGroup, servers=st.dictionaries(
    text, STRATEGIES[HealthVerdict], max_size=3))
STRATEGIES[ObservationGroup] = st.builds(ObservationGroup, servers=st.dictionaries(
    text, STRATEGIES[Observation], max_size=3))
