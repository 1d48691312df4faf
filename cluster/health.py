"""A real server's health, as every part speaks of it: nanny, the active's verdicts, the data
plane, status.

:class:`ServerKey` names a real server the way lvs.cf does: (virtual, server). It is a
``NamedTuple``, so it is as cheap to hash as the plain tuple it replaces, unpacks as
``virtual, server = key``, and equals ``(virtual, server)``.

:class:`Health` is what is known of a real server: one router's own checks (nanny), or the
verdict the active decided from them. In etcd it is stored as a
:class:`~cluster.documents.HealthVerdict` (``health/<virtual>/<server>``) or an
:class:`~cluster.documents.Observation` (``observations/<node>/<virtual>/<server>``); those
documents convert to and from it (``of()`` / ``to_health()``), in one place.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Literal, NamedTuple

State = Literal["up", "down", "unknown"]
STATES: tuple[str, ...] = ("up", "down", "unknown")


class ServerKey(NamedTuple):
    """One real server: the names of its virtual and of its server block in lvs.cf."""

    virtual: str
    server: str


@dataclass(frozen=True, slots=True)
class Health:
    """What is known of one real server.

    ``state``: up, down, or unknown (never checked: not serving). ``since``: when it entered
    that state (epoch seconds). ``reason``: why, in words. ``weight``: the weight to use while
    up (configured, or dynamic from a check); None: the configured one. ``observed_by``: in a
    verdict, the routers whose checks agree with it.
    """

    state: State = "unknown"
    _: KW_ONLY
    since: float = 0.0
    reason: str = ""
    weight: int | None = None
    observed_by: tuple[str, ...] = ()

    def seen_by(self, observers: tuple[str, ...]) -> Health:
        """This health with ``observed_by`` = ``observers`` (``dataclasses.replace`` without
        its cost: four times faster, and a new active does it for every server)."""
        return Health(self.state, since=self.since, reason=self.reason, weight=self.weight,
                      observed_by=observers)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"health state must be up, down or unknown, not {self.state!r}")
        if self.weight is not None and (
            isinstance(self.weight, bool) or not isinstance(self.weight, int)
        ):
            raise ValueError(f"weight must be an integer or None, not {self.weight!r}")


NOT_CHECKED = Health()
