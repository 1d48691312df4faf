"""``control/released``: left by a resigning active, in the transaction that deletes the
leader key, once its VIPs are gone; the next active need not wait for it."""

from __future__ import annotations

from .base import Document


class ReleasedMarker(Document):
    WHAT = "released marker"
    node: str
    """The router that resigned."""
    term: int
    """The term it resigned."""
    at: str = ""
    """When (UTC)."""
    reason: str = ""
    """Why it resigned (`shutting down`, `switchover requested (to r2)`)."""
