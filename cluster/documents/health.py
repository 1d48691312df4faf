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
    since: str = ""
    weight: int = Field(1, ge=0, le=65535)
    reason: str = ""

    @property
    def since_epoch(self) -> float:
        return epoch(self.since)


class HealthVerdict(Document):
    """The effective health of a real server, decided by the active of ``term``."""

    WHAT = "health verdict"
    state: State
    since: str = ""
    weight: int = Field(1, ge=0, le=65535)
    reason: str = ""
    observed_by: tuple[str, ...] = ()
    term: int = 0

    @property
    def since_epoch(self) -> float:
        return epoch(self.since)
