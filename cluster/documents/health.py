"""``health/<virtual>/<server>`` (the active's verdict) and
``observations/<node>/<virtual>/<server>`` (one router's own check result).

Both serialise the one health type, :class:`cluster.health.Health`; ``of()`` and
``to_health()`` are the only conversions between them.
"""

from __future__ import annotations

from pydantic import Field

from ..health import Health, State
from .base import Document, epoch, iso


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
