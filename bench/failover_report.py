"""Percentiles, the markdown table and the "Failover" section of docs/benchmarks.md (pure)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

SECTION = "Failover"
INTRO = """# Benchmarks

Measured numbers of the project, each with the command that produced them. Every section
belongs to one benchmark under `bench/`; re-run it to refresh the section.
"""


@dataclass(frozen=True)
class Summary:
    """One scenario's gaps (seconds) and its target on the median / p99 (None: none)."""

    scenario: str
    title: str
    gaps: tuple[float | None, ...]  # None: the service did not come back within the trial
    target_p50: float | None = None
    target_p99: float | None = None

    @property
    def recovered(self) -> list[float]:
        return sorted(g for g in self.gaps if g is not None)

    @property
    def lost(self) -> int:
        return sum(1 for g in self.gaps if g is None)

    def pct(self, q: float) -> float | None:
        """Nearest-rank percentile; a trial that never recovered counts as infinite."""
        if not self.gaps:
            return None
        values = self.recovered + [math.inf] * self.lost
        rank = max(1, math.ceil(q / 100 * len(values)))
        return values[rank - 1]

    def verdict(self) -> str:
        checks = []
        for q, target in ((50, self.target_p50), (99, self.target_p99)):
            value = self.pct(q)
            if target is not None and value is not None:
                ok = value <= target
                checks.append(f"p{q} <= {_fmt(target)} {'met' if ok else 'MISSED'}")
        return "; ".join(checks)


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return "never"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def table(summaries: Sequence[Summary]) -> str:
    """A markdown table: one row per scenario."""
    rows = ["| scenario | trials | p50 | p90 | p99 | max | target |",
            "|---|---|---|---|---|---|---|"]
    for s in summaries:
        n = f"{len(s.gaps)}" + (f" ({s.lost} never recovered)" if s.lost else "")
        rows.append(f"| {s.title} | {n} | {_fmt(s.pct(50))} | {_fmt(s.pct(90))} | "
                    f"{_fmt(s.pct(99))} | {_fmt(s.pct(100))} | {s.verdict() or '-'} |")
    return "\n".join(rows)


def ratio(pulse: Summary | None, baseline: Summary | None, q: float = 50) -> float | None:
    """pulse's percentile over the baseline's (None if either is missing or infinite)."""
    if pulse is None or baseline is None:
        return None
    a, b = pulse.pct(q), baseline.pct(q)
    if a is None or b is None or math.isinf(a) or math.isinf(b) or b == 0:
        return None
    return a / b


def section(body: str, name: str = SECTION) -> str:
    return f"## {name}\n\n{body.strip()}\n"


def replace_section(doc: str, new_section: str, title: str = SECTION) -> str:
    """``doc`` with its "## ``title``" section replaced (or appended); others kept intact."""
    if not doc.strip():
        doc = INTRO
    pattern = re.compile(rf"^## {re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(doc):
        return pattern.sub(lambda _m: new_section.rstrip() + "\n\n", doc, count=1).rstrip() + "\n"
    return doc.rstrip() + "\n\n" + new_section
