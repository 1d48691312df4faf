"""``history/<kind>/<id>``: what happened to the cluster, kept in etcd with bounded retention.

One document per event kind; each is written once, by the router that made the transition,
and never changed (``lvsctl history``, ``lvsctl events -f``, cluster/history.py). Config
pushes keep their own home, :class:`~cluster.documents.ConfigHistoryEntry` under
``history/config/<serial_no>``.
"""

from __future__ import annotations

from pydantic import Field

from ..health import State
from .base import Document


class FailoverEvent(Document):
    """A router took the active role over without a hand-over (the old active died, was cut
    off, lost etcd or its licence), written by the new active once its VIPs were up."""

    WHAT = "failover event"
    at: str = ""
    """When the new active had its VIPs up (UTC)."""
    node: str
    """The new active router (who wrote this)."""
    term: int = 0
    """Its term."""
    previous: str = ""
    """The active it took over from; "" if it knew of none (a cluster starting)."""
    previous_term: int = 0
    """That active's term; 0 if unknown."""
    reason: str = ""
    """Why, as the new active saw it (`r1 silent for 1.2 s (no heartbeat); its leader key
    went away`)."""
    gap_ms: int | None = None
    """Milliseconds from the last sign of the old active this router had (its last
    heartbeat as active, else the leader key's deletion) to its own VIPs up; null if it
    had none."""
    takeover_ms: int | None = None
    """Milliseconds from seeing the leader key gone to its own VIPs up; null if unknown."""


class SwitchoverEvent(Document):
    """The active handed over gracefully (it removed its VIPs, then resigned): asked by
    `lvsctl switchover`, by a preempting router, or on shutdown. Written by the new active
    once its VIPs were up."""

    WHAT = "switchover event"
    at: str = ""
    """When the new active had its VIPs up (UTC)."""
    node: str
    """The new active router (who wrote this)."""
    term: int = 0
    """Its term."""
    previous: str = ""
    """The router that handed over."""
    previous_term: int = 0
    """Its term."""
    by: str = ""
    """Who asked: `user@host` for lvsctl, a router's name for a preemption or a shutdown."""
    reason: str = ""
    """`lvsctl switchover`, `preempt`, or why the old active resigned (`shutting down`)."""
    to: str = ""
    """The router asked for; "" for the next by priority."""
    request: str = ""
    """The id of the switchover request, if there was one."""
    gap_ms: int | None = None
    """Milliseconds from the old active's last heartbeat as active (else the leader key's
    deletion) to the new active's VIPs up, as the new active saw it."""


class HealthTransition(Document):
    """The effective state of a real server changed, written by the active that decided it
    (after the verdict was stored)."""

    WHAT = "health transition"
    at: str = ""
    """When the verdict was stored (UTC)."""
    virtual: str
    """The virtual service (lvs.cf name)."""
    server: str
    """The real server (lvs.cf name)."""
    previous: State | None = None
    """The state before; null if the server had no verdict."""
    state: State
    """The effective state now."""
    since: str = ""
    """When the server entered it, as the checks saw it (UTC)."""
    reason: str = ""
    """Why, in words (`connect refused`, `2/3 routers: ...`)."""
    observed_by: tuple[str, ...] = ()
    """The routers whose checks agree with the verdict."""
    by: str = ""
    """The active router that decided it (who wrote this)."""
    term: int = 0
    """Its term."""
    dropped_before: int = Field(0, ge=0)
    """Transitions this router could not record since the one it wrote before this (queue
    full, etcd unreachable)."""
