"""``control/evict-<voter>``: a backup's vote that the active of ``term`` is gone (fast
eviction), bound to the voter's lease."""

from __future__ import annotations

from .base import Document


class EvictionVote(Document):
    WHAT = "eviction vote"
    term: int
    """The term of the active the voter no longer hears."""
    node: str = ""
    """That active router."""
    at: str = ""
    """When the vote was cast (UTC)."""
