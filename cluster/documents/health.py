"""``health/<virtual>/*<shard>`` (the active's verdicts of one virtual, or a shard of it)
and ``observations/<node>/<virtual>/*<shard>`` (one router's own check results): groups of
:class:`HealthVerdict` and :class:`Observation` (cluster.health_layout says which group
holds a server). The layout before groups, one key per server
(``health/<virtual>/<server>``), is still read.

Both serialise the one health type, :class:`cluster.health.Health`; ``of()`` and
``to_health()`` are the only conversions between them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import Field

from ..health import Health, State
from .base import Document, DocumentError, epoch, iso

G = TypeVar("G", "HealthGroup", "ObservationGroup")


def _weight(health: Health) -> int | None:
    """The stored weight: null for a health without one (the server's configured weight).
    Versions before this stored 1 there, which made routers following the stored verdicts
    program weight 1 for a server configured with another."""
    return health.weight


class Observation(Document):
    """One router's own view of a real server, bound to its lease."""

    WHAT = "health observation"
    state: State
    """What its checks say."""
    since: str = ""
    """When the server entered that state (UTC)."""
    weight: int | None = Field(1, ge=0, le=65535)
    """The weight to use while up: from a load check, or null for the configured one."""
    reason: str = ""
    """Why, in words (`connect refused`)."""

    @property
    def since_epoch(self) -> float:
        return epoch(self.since)

    @classmethod
    def of(cls, health: Health) -> Observation:
        """What a router publishes of its own checks (``observed_by`` is not stored)."""
        return cls(state=health.state, since=iso(health.since), weight=_weight(health),
                   reason=health.reason)

    def to_health(self) -> Health:
        return Health(self.state, since=self.since_epoch, reason=self.reason, weight=self.weight)


class HealthVerdict(Document):
    """The effective health of a real server, decided by the active of ``term``."""

    WHAT = "health verdict"
    state: State
    """The effective state: what the data planes of all routers use."""
    since: str = ""
    """When the server entered that state (UTC)."""
    weight: int | None = Field(1, ge=0, le=65535)
    """The weight to use while up: from a load check, or null for the configured one."""
    reason: str = ""
    """Why, in words."""
    observed_by: tuple[str, ...] = ()
    """The routers whose checks agree with the verdict."""
    term: int = 0
    """The term of the active that decided it."""

    @property
    def since_epoch(self) -> float:
        return epoch(self.since)

    @classmethod
    def of(cls, health: Health, term: int) -> HealthVerdict:
        """The verdict ``health`` as the active of ``term`` stores it."""
        return cls(state=health.state, since=iso(health.since), weight=_weight(health),
                   reason=health.reason, observed_by=health.observed_by, term=term)

    def to_health(self) -> Health:
        return Health(self.state, since=self.since_epoch, reason=self.reason, weight=self.weight,
                      observed_by=self.observed_by)


class HealthGroup(Document):
    """The verdicts of one virtual (or one shard of a big one): ``health/<virtual>/*<n>``."""

    WHAT = "health group"
    servers: dict[str, HealthVerdict]
    """{server name, as in lvs.cf: its verdict}."""


class ObservationGroup(Document):
    """One router's observations of one virtual (or shard):
    ``observations/<node>/<virtual>/*<n>``, bound to that router's lease."""

    WHAT = "observation group"
    servers: dict[str, Observation]
    """{server name, as in lvs.cf: the router's observation}."""


def group_of(docs: Mapping[str, Any], group: type[G]) -> G:
    """A group document of ``docs`` (sorted by name, so etcdctl shows them in order)."""
    return group.model_construct(servers=dict(sorted(docs.items())))


def decode_group(group: type[HealthGroup] | type[ObservationGroup], value: bytes | str,
                 ) -> tuple[dict[str, Any], str | None]:
    """The entries of a stored group, and why some (or all) are junk: an entry that does
    not decode is left out, the others stay in force."""
    try:
        return dict(group.decode(value).servers), None
    except DocumentError as exc:
        whole = str(exc)
    try:
        raw = json.loads(value)
    except ValueError:
        return {}, whole
    entries = raw.get("servers") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        return {}, whole
    entry = group.model_fields["servers"].annotation.__args__[1]  # type: ignore[union-attr]
    kept, bad = {}, []
    for name, doc in entries.items():
        try:
            kept[name] = entry.decode(json.dumps(doc))
        except DocumentError as exc:
            bad.append(f"{name}: {exc}")
    return kept, (f"{len(bad)} of {len(entries)} entries ignored: {'; '.join(bad[:3])}"
                  if bad else None)
