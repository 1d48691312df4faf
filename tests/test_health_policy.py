"""Effective health decisions (pure parts): the majority rule and the stored document."""

from __future__ import annotations

import json

from agent.health import majority
from cluster.documents import HealthVerdict, Observation
from cluster.health import Health


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
