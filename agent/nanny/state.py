"""Up, down and back again: Piranha's nanny state machine, as pure functions.

Per real server, fed with ``(now, result)``:

- ``unknown`` (never checked): the first success brings it ``up`` at once (nanny starts with
  its success counter full); ``failures_to_down`` failures in a row take it ``down``.
- ``up``: ``failures_to_down`` consecutive failures (default 1, as nanny) take it ``down``.
- ``down``: it comes back ``up`` only after ``reentry`` seconds of continuous success
  (measured from the first success of the streak; any failure restarts the wait).

A new server starts ``unknown``: not serving until its first check passes, like nanny, which
adds a real server to IPVS only after a successful check. A warm start passes its last known
state instead. ``quiesce`` is carried for the data plane (weight 0 instead of removal); the
state machine itself ignores it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

State = Literal["unknown", "up", "down"]
STATES: tuple[str, ...] = State.__args__  # type: ignore[attr-defined]


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
class ServerHealth:
    """What is known of one real server.

    ``since``: when it entered ``state`` (the engine uses epoch seconds). ``reason``: why it is
    in that state. ``weight``: the weight to use while up (configured or dynamic).
    ``failures``: consecutive failures (counted up to ``failures_to_down``). ``ok_since``:
    start of the current run of successes, None after a failure.
    """

    state: State = "unknown"
    since: float = 0.0
    reason: str = "not checked yet"
    weight: int = 1
    failures: int = 0
    ok_since: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """A change worth telling: a new state, or a new weight while up."""

    key: Hashable
    old: State
    new: State
    since: float
    reason: str
    weight: int


def initial(state: State | None, now: float, weight: int) -> ServerHealth:
    """Health of a server that starts being checked, in ``state`` if known (warm start)."""
    if state is None or state == "unknown":
        return ServerHealth("unknown", now, "not checked yet", weight)
    if state == "up":
        return ServerHealth("up", now, "initial state", weight, 0, now)
    if state == "down":
        return ServerHealth("down", now, "initial state", weight)
    raise StateSpecError(f"initial state must be one of {', '.join(STATES)}, not {state!r}")


def step(
    health: ServerHealth, spec: StateSpec, now: float, ok: bool, reason: str, weight: int
) -> ServerHealth:
    """Health after one check result (``weight``: the weight a success asks for).

    Returns ``health`` itself when nothing changed, so a steady server costs no allocation.
    """
    if ok:
        return _success(health, spec, now, reason, weight)
    return _failure(health, spec, now, reason)


def _success(
    h: ServerHealth, spec: StateSpec, now: float, reason: str, weight: int
) -> ServerHealth:
    ok_since = h.ok_since if h.ok_since is not None and h.ok_since <= now else now
    if h.state == "up":
        if h.failures == 0 and h.ok_since == ok_since and h.weight == weight:
            return h
        why = h.reason if h.weight == weight else f"weight {weight}: {reason}"
        return ServerHealth("up", h.since, why, weight, 0, ok_since)
    if h.state == "unknown":
        return ServerHealth("up", now, reason, weight, 0, ok_since)
    if now - ok_since >= spec.reentry:  # down, and ok long enough
        return ServerHealth("up", now, f"{reason} (ok for {spec.reentry:g}s)", weight, 0, ok_since)
    if h.failures == 0 and h.ok_since == ok_since and h.weight == weight:
        return h
    return ServerHealth("down", h.since, h.reason, weight, 0, ok_since)


def _failure(h: ServerHealth, spec: StateSpec, now: float, reason: str) -> ServerHealth:
    failures = min(h.failures + 1, spec.failures_to_down)
    if h.state != "down" and failures >= spec.failures_to_down:
        return ServerHealth("down", now, reason, h.weight, failures, None)
    if failures == h.failures and h.ok_since is None:
        return h
    return ServerHealth(h.state, h.since, h.reason, h.weight, failures, None)


def is_news(old: ServerHealth, new: ServerHealth) -> bool:
    """Whether a subscriber must hear of this step: a new state, or a new weight while up."""
    return new.state != old.state or (new.state == "up" and new.weight != old.weight)


def transition(key: Hashable, old: ServerHealth, new: ServerHealth) -> Transition:
    """The :class:`Transition` from ``old`` to ``new`` for ``key``."""
    return Transition(key, old.state, new.state, new.since, new.reason, new.weight)
