"""A token bucket for etcd operations: health publication stays under a set rate. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OpsBudget:
    """At most ``rate`` operations a second on average, ``burst`` at once."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    at: float | None = None  # when ``tokens`` was last brought up to date

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def _refill(self, now: float) -> None:
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def wait(self, n: int, now: float) -> float:
        """Seconds to wait before ``n`` operations fit (0: now). A request larger than the
        burst waits until the bucket is full, then goes (it may not starve)."""
        self._refill(now)
        need = min(float(n), self.burst)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def spend(self, n: int, now: float) -> None:
        """``n`` operations were sent at ``now`` (the bucket may go below zero: a large
        request then delays the next ones)."""
        self._refill(now)
        self.tokens -= n
