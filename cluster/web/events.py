"""Events the page server sees happen in etcd: changes of the active router and of the
effective health of real servers. :class:`Before` remembers, for one batch of changes,
what the keys it touches held; :func:`changes` compares that with the state after (pure,
and as cheap as the batch: never a pass over every real server)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..documents import ClusterState, HealthVerdict, LeaderKey
from ..health import ServerKey
from ..keys import Keys, parse

Event = dict[str, Any]


@dataclass
class Before:
    """The leader and the touched health verdicts before a batch of changes."""

    leader: LeaderKey | None
    health: dict[ServerKey, HealthVerdict | None] = field(default_factory=dict)
    previous: LeaderKey | None = None  # the last leader seen, if there is none now

    @classmethod
    def of(cls, state: ClusterState, keys: Keys, changed: Iterable[str],
           previous: LeaderKey | None = None) -> Before:
        """``previous``: the last leader seen before (a failover deletes the old key in
        one revision and writes the new one in another)."""
        before = cls(state.leader, previous=state.leader or previous)
        for key in changed:
            parsed = parse(keys, key)
            if parsed is not None and parsed.kind == "health":
                sk = ServerKey(*parsed.parts)
                before.health[sk] = state.health.get(sk)
        return before


def changes(before: Before, new: ClusterState, at: str) -> list[Event]:
    """What changed since ``before``, as events stamped ``at`` (UTC, ISO)."""
    out: list[Event] = []
    old, now, last = before.leader, new.leader, before.previous
    if now is not None and now.node and (old is None or now.term != old.term):
        handed = (new.released is not None and last is not None
                  and new.released.node == last.node and new.released.term == last.term)
        out.append({"at": at, "kind": "switchover" if handed else "failover",
                    "from": last.node if last else None, "to": now.node, "term": now.term})
    elif old is not None and now is None:
        out.append({"at": at, "kind": "no-active", "from": old.node, "to": None,
                    "term": old.term})
    for key, prev in before.health.items():
        verdict = new.health.get(key)
        if verdict is None or (prev is not None and prev.state == verdict.state):
            continue
        out.append({"at": at, "kind": "health", "virtual": key.virtual, "server": key.server,
                    "from": prev.state if prev else None, "to": verdict.state,
                    "reason": verdict.reason, "observed_by": list(verdict.observed_by)})
    return out
