"""``control/evict-<voter>``: a backup's vote that the active of ``term`` is gone (fast
eviction), bound to the voter's lease."""

from __future__ import annotations

from .base import Document


class EvictionVote(Document):
    WHAT = "eviction vote"
    term: int
    node: str = ""
    """The active the vote is against."""
    at: str = ""
