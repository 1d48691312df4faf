"""``control/switchover``: a request that the active of ``term`` hands over.

Written, bound to a short lease of its own, by ``lvsctl switchover`` and by a router with
``preempt`` that wants the role back.
"""

from __future__ import annotations

from .base import Document


class SwitchoverRequest(Document):
    WHAT = "switchover request"
    to: str = ""
    """The router to hand over to; "" for the next by priority."""
    term: int
    """The term the request was made against: a newer active ignores it."""
    id: str = ""
    """A unique id of the request."""
    by: str = ""
    """Who asks: `user@host` for lvsctl, the router's name for a preemption."""
    reason: str = ""
    """`lvsctl switchover` or `preempt`."""
    at: str = ""
    """When (UTC)."""
