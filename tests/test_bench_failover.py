"""Pure parts of the failover benchmark: the gap of a trial, percentiles, the docs section."""

import math

from bench.failover_probe import Probe, outage, read_probes
from bench.failover_report import Summary, replace_section, section


def probes(pattern: str, step: float = 0.01) -> list[Probe]:
    """'+' a success, '-' a failure, one every ``step`` seconds from t=0."""
    return [Probe(i * step, c == "+") for i, c in enumerate(pattern)]


def test_gap_runs_from_last_success_to_first_success():
    found = outage(probes("+" * 10 + "-" * 20 + "+" * 5), t_fault=0.1)
    assert math.isclose(found.gap, 0.21) and found.failed == 20


def test_longest_run_after_the_fault_wins_and_earlier_ones_are_ignored():
    found = outage(probes("+-++" + "+" * 6 + "---++-----+"), t_fault=0.1)
    assert found.failed == 5 and found.failed_total == 8


def test_no_failure_is_a_zero_gap_and_no_recovery_is_none():
    assert outage(probes("+" * 10), 0.05).gap == 0.0
    assert outage(probes("+++----"), 0.03).gap is None


def test_torn_lines_are_skipped():
    assert read_probes(['{"t": 1.0, "ok": true}', '{"t": 2', "junk"]) == [Probe(1.0, True)]


def test_percentiles_count_lost_trials_as_infinite():
    s = Summary("crash", "crash", (1.0, 2.0, None), target_p50=2.5, target_p99=3.0)
    assert s.pct(50) == 2.0 and math.isinf(s.pct(99))
    assert "MISSED" in s.verdict()


def test_only_the_failover_section_is_replaced():
    doc = "# B\n\n## Nft\n\nx\n\n## Failover\n\nold\n\n## Later\n\ny\n"
    out = replace_section(doc, section("new"))
    assert "old" not in out and "new" in out and "## Nft\n\nx" in out and "## Later\n\ny" in out
    assert replace_section("", section("new")).startswith("# Benchmarks")


def test_a_named_section_leaves_the_failover_section_alone():
    doc = "# B\n\n## Failover\n\nold\n\n## Failover at BFD-class timers\n\nold bfd\n"
    name = "Failover at BFD-class timers"
    out = replace_section(doc, section("new bfd", name), name)
    assert "## Failover\n\nold" in out and "new bfd" in out and "old bfd" not in out
