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
    by: str = ""
    reason: str = ""
    at: str = ""
