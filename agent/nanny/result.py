"""The outcome of one health check."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check found.

    ``weight`` is ``None`` when the check has no opinion on the weight (the configured one
    applies); dynamic checks (``external`` exit codes 2..255) set it. ``elapsed`` is seconds
    from the start of the check to its verdict.
    """

    ok: bool
    reason: str
    weight: int | None = None
    elapsed: float = 0.0


def passed(reason: str, weight: int | None = None) -> CheckResult:
    """A successful result (elapsed filled in by the caller)."""
    return CheckResult(True, reason, weight)


def failed(reason: str) -> CheckResult:
    """A failed result (elapsed filled in by the caller)."""
    return CheckResult(False, reason)
