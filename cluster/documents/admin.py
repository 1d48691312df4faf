"""``admin/<virtual>/<server>``: an operator's override, obeyed by whoever is active."""

from __future__ import annotations

from typing import Literal

from .base import Document


class AdminFlag(Document):
    """drain = weight 0 (existing connections continue), disable = out of the service."""

    WHAT = "admin flag"
    state: Literal["drain", "disable"]
    """`drain`: weight 0, existing connections continue; `disable`: out of the service."""
    by: str = ""
    """Who set it (`user@host`)."""
    at: str = ""
    """When (UTC)."""
