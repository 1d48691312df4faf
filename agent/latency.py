"""Latency samples the agent measures on itself (detection to kernel, to every router)."""

from __future__ import annotations

import collections
import statistics
from dataclasses import dataclass, field


@dataclass
class Latency:
    """The last ``keep`` samples of one latency, in seconds, and how many there were."""

    name: str
    keep: int = 1000
    count: int = 0
    samples: collections.deque[float] = field(default_factory=collections.deque)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.samples.append(seconds)
        if len(self.samples) > self.keep:
            self.samples.popleft()

    def quantiles(self) -> dict[str, float]:
        """p50, p90, p99 of the kept samples (empty without samples)."""
        data = sorted(self.samples)
        if not data:
            return {}
        if len(data) == 1:
            return {"0.5": data[0], "0.9": data[0], "0.99": data[0]}
        cuts = statistics.quantiles(data, n=100, method="inclusive")
        return {"0.5": cuts[49], "0.9": cuts[89], "0.99": cuts[98]}


DETECT_TO_DATAPLANE = Latency("lvs_detect_to_dataplane_seconds")
DETECT_TO_VIEW = Latency("lvs_detect_to_view_seconds")
