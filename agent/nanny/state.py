"""Up, down and back again: Piranha's nanny state machine, as pure functions.

Per real server, fed with ``(now, result)``:

- ``unknown`` (never checked): the first success brings it ``up`` at once (nanny starts with
  its success counter full); ``failures_to_down`` failures in a row take it ``down``.
- ``up``: ``failures_to_down`` consecutive failures (default 1, as nanny) take it ``down``.
- ``down``: it comes back ``up`` only after ``reentry`` seconds of continuous success
  (measured from the first success of the streak; any failure restarts the wait).

A new server starts ``unknown``: not serving until its first check passes, like nanny, which
adds a real server to IPVS only after a successful check. A warm start passes its last known
state (or a whole :class:`~cluster.health.Health`) instead. ``quiesce`` is carried for the
data plane (weight 0 instead of removal); the state machine itself ignores it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace

from cluster.health import STATES, Health, State

__all__ = ["STATES", "State", "StateSpec", "StateSpecError", "Tracked", "Transition", "initial",
           "is_news", "step", "transition"]


class StateSpecError(ValueError):
    """A state specification that cannot work."""


@dataclass(frozen=True, slots=True)
class StateSpec:
    """How results turn into up/down for one real server."""

    failures_to_down: int = 1
    reentry: float = 180.0
    quiesce: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.failures_to_down, bool) or not isinstance(self.failures_to_down, int):
            raise StateSpecError(
                f"failures_to_down must be an integer, not {self.failures_to_down!r}"
            )
        if self.failures_to_down < 1:
            raise StateSpecError(f"failures_to_down must be >= 1, not {self.failures_to_down}")
        if not isinstance(self.reentry, int | float) or self.reentry < 0:
            raise StateSpecError(f"reentry must be seconds >= 0, not {self.reentry!r}")


@dataclass(frozen=True, slots=True)
class Tracked:
    """One real server as nanny tracks it: its :class:`~cluster.health.Health` (the engine
    uses epoch seconds for ``since``) and the run of results that moves it.

    ``failures``: consecutive failures (counted up to ``failures_to_down``). ``ok_since``:
    start of the current run of successes, None after a failure.
    """

    health: Health
    failures: int = 0
    ok_since: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """A change worth telling: a new state, or a new weight while up. ``health``: the new
    health of ``key``; ``old``: the state it left."""

    key: Hashable
    old: State
    health: Health

    @property
    def new(self) -> State:
        return self.health.state

    @property
    def since(self) -> float:
        return self.health.since

    @property
    def reason(self) -> str:
        return self.health.reason

    @property
    def weight(self) -> int | None:
        return self.health.weight


def initial(state: State | None, now: float, weight: int) -> Tracked:
    """A server that starts being checked, in ``state`` if known (warm start)."""
    if state is None or state == "unknown":
        return Tracked(Health("unknown", since=now, reason="not checked yet", weight=weight))
    if state == "up":
        return Tracked(Health("up", since=now, reason="initial state", weight=weight), 0, now)
    if state == "down":
        return Tracked(Health("down", since=now, reason="initial state", weight=weight))
    raise StateSpecError(f"initial state must be one of {', '.join(STATES)}, not {state!r}")


def step(t: Tracked, spec: StateSpec, now: float, ok: bool, reason: str, weight: int) -> Tracked:
    """The server after one check result (``weight``: the weight a success asks for).

    Returns ``t`` itself when nothing changed, so a steady server costs no allocation; its
    :class:`Health` is a new object only when the health itself changed.
    """
    if ok:
        return _success(t, spec, now, reason, weight)
    return _failure(t, spec, now, reason)


def _success(t: Tracked, spec: StateSpec, now: float, reason: str, weight: int) -> Tracked:
    h = t.health
    ok_since = t.ok_since if t.ok_since is not None and t.ok_since <= now else now
    steady = t.failures == 0 and t.ok_since == ok_since and h.weight == weight
    if h.state == "up":
        if steady:
            return t
        if h.weight != weight:
            h = replace(h, reason=f"weight {weight}: {reason}", weight=weight)
        return Tracked(h, 0, ok_since)
    if h.state == "unknown":
        return Tracked(Health("up", since=now, reason=reason, weight=weight), 0, ok_since)
    if now - ok_since >= spec.reentry:  # down, and ok long enough
        up = Health("up", since=now, reason=f"{reason} (ok for {spec.reentry:g}s)",
                    weight=weight)
        return Tracked(up, 0, ok_since)
    if steady:
        return t
    return Tracked(h if h.weight == weight else replace(h, weight=weight), 0, ok_since)


def _failure(t: Tracked, spec: StateSpec, now: float, reason: str) -> Tracked:
    h = t.health
    failures = min(t.failures + 1, spec.failures_to_down)
    if h.state != "down" and failures >= spec.failures_to_down:
        return Tracked(Health("down", since=now, reason=reason, weight=h.weight), failures, None)
    if failures == t.failures and t.ok_since is None:
        return t
    return Tracked(h, failures, None)


def is_news(old: Tracked, new: Tracked) -> bool:
    """Whether a subscriber must hear of this step: a new state, or a new weight while up."""
    a, b = old.health, new.health
    return b.state != a.state or (b.state == "up" and b.weight != a.weight)


def transition(key: Hashable, old: Tracked, new: Tracked) -> Transition:
    """The :class:`Transition` from ``old`` to ``new`` for ``key``."""
    return Transition(key, old.health.state, new.health)
