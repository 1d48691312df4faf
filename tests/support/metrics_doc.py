"""docs/metrics.md as data, and a scrape as the same data: {series: labels}."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(\w+)` \|([^|]*)\|[^|]*\|([^|]*)\|([^|]*)\|")


def documented() -> dict[str, tuple[frozenset[str], str]]:
    """{series: (labels, exported by)} of every table row of docs/metrics.md."""
    rows: dict[str, tuple[frozenset[str], str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            name, _type, labels, by = m.groups()
            assert name not in rows, f"{name} documented twice"
            rows[name] = (frozenset(x.strip() for x in labels.split(",") if x.strip()),
                          by.strip())
    return rows


def scraped(text: str) -> dict[str, frozenset[str] | None]:
    """{series: labels} of a scrape (counters with ``_total``; None: no samples, labels
    unknown)."""
    out: dict[str, frozenset[str] | None] = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue  # prometheus-client's creation times, one per counter and histogram
        name = family.name + "_total" if family.type == "counter" else family.name
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        labels = {k for s in samples for k in s.labels} - {"le", "quantile"}
        out[name] = frozenset(labels) if samples else None
    return out
