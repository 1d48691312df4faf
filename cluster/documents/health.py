"""``health/<virtual>/<server>`` (the active's verdict) and
``observations/<node>/<virtual>/<server>`` (one router's own check result)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Document, epoch

State = Literal["up", "down", "unknown"]


class Observation(Document):
    """One router's own view of a real server, bound to its lease."""

    WHAT = "health observation"
    state: State
    """What its checks say."""
    since: str = ""
    """When the server entered that state (UTC)."""
    weight: int = Field(1, ge=0, le=65535)
    """The weight to use while up (configured, or from a load check)."""
    reason: str = ""
    """Why, in words (`connect refused`)."""

    @property
    def since_epoch(self) -> float:
        return epoch(self.since)


class HealthVerdict(Document):
    """The effective health of a real server, decided by the active of ``term``."""

    WHAT = "health verdict"
    state: State
    """The effective state: what the data planes of all routers use."""
    since: str = ""
    """When the server entered that state (UTC)."""
    weight: int = Field(1, ge=0, le=65535)
    """The weight to use while up."""
    reason: str = ""
    """Why, in words."""
    observed_by: tuple[str, ...] = ()
    """The routers whose checks agree with the verdict."""
    term: int = 0
    """The term of the active that decided it."""

    @property
    def since_epoch(self) -> float:
        return epoch(self.since)
