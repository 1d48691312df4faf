"""The soak bench's pure parts: the growth trend of a series and which samples count."""

from __future__ import annotations

import random

import pytest

from bench.nemesis import Result
from bench.nemesis_check import Applied, History
from bench.nemesis_plan import Step
from bench.soak import (
    Sample,
    Samples,
    cpu_stall_us,
    pressure_around,
    pressure_share,
    trend,
    trends,
)


def test_a_flat_noisy_series_does_not_grow():
    rng = random.Random(1)
    points = [(t * 10.0, 50.0 + rng.gauss(0, 1)) for t in range(360)]
    tr = trend("rss", points)
    assert tr is not None and not tr.grows
    assert abs(tr.slope) < 3 * tr.stderr + 1e-9


def test_a_leak_grows():
    rng = random.Random(2)
    points = [(t * 10.0, 50.0 + t * 0.05 + rng.gauss(0, 1)) for t in range(360)]
    tr = trend("rss", points)  # 18 units per hour on a mean of about 59
    assert tr is not None and tr.grows
    assert tr.slope == pytest.approx(18.0, rel=0.1)


def test_too_few_points_give_no_trend():
    assert trend("x", [(0.0, 1.0), (10.0, 2.0)]) is None
    assert trend("x", [(5.0, float(i)) for i in range(10)]) is None  # no time passed


def result_with(applied: list[Applied]) -> Result:
    return Result(seed=1, steps=[a.step for a in applied], applied=applied,
                  history=History(applied=applied), violations=[], report=None, t0=0.0,
                  end=3600.0, out=None)  # type: ignore[arg-type]


def test_samples_during_faults_and_warm_up_are_left_out_and_restarts_split_series():
    crash = Applied(Step(0, 1000.0, "crash", "r1", 5.0, 0), "r1", 1000.0, 1005.0)
    samples = Samples()
    for i in range(300):
        t = i * 10.0
        pid = 100 if t < 1005 else 200  # r1 restarted by the heal
        during = 1000 <= t <= 1035
        samples.agents.append(Sample(t, "r1", pid, {"rss_mb": 999.0 if during else 50.0}))
    samples.keys = [(i * 10.0, 40) for i in range(300)]
    ts = {t.series.split(" (")[0]: t for t in trends(result_with([crash]), samples)}
    rss = ts["r1 rss_mb"]
    assert rss.mean == 50.0  # nothing from the fault or its settling
    # the longer life (pid 200, 1010..2990 s), its second half: from 2000 s
    assert rss.n == len([i for i in range(300) if i * 10.0 >= 2000])
    assert not ts["etcd keys but history/"].grows


def test_warm_up_growth_that_levels_off_is_not_a_leak_but_growth_to_the_end_is():
    def samples(leak: bool) -> Samples:
        out = Samples()
        for i in range(360):
            t = i * 10.0
            warm = min(t, 1200.0) / 1200.0 * 5  # +5 MB over the first 20 minutes
            out.agents.append(Sample(t, "r1", 7, {"rss_mb": 70 + warm + (t / 360 if leak
                                                                          else 0)}))
        return out

    assert not any(t.grows for t in trends(result_with([]), samples(leak=False)))
    assert any(t.grows for t in trends(result_with([]), samples(leak=True)))


def test_a_life_shorter_than_half_an_hour_is_shown_but_not_judged():
    out = Samples()
    for i in range(150):  # 25 minutes of steady growth
        t = i * 10.0
        out.agents.append(Sample(t, "r1", 7, {"rss_mb": 70 + t / 60}))
    ts = trends(result_with([]), out)
    rss = next(t for t in ts if t.series.startswith("r1 rss_mb"))
    assert rss.slope > 0 and not rss.judged and not rss.grows
    assert rss.verdict.startswith("not judged")


def test_cpu_pressure_share_and_the_pressure_around_a_moment() -> None:
    assert pressure_share((10.0, 1_000_000), (12.0, 2_000_000)) == 0.5
    assert pressure_share((10.0, 5), (10.0, 9)) == 0.0  # no time passed
    assert pressure_share((10.0, 0), (11.0, 9_000_000)) == 1.0  # capped
    s = Samples(pressure=[(100.0, 0.1), (103.0, 0.9), (120.0, 0.2)])
    assert pressure_around(s, 101.0) == 0.9
    assert pressure_around(s, 200.0) is None
    us = cpu_stall_us()  # this machine's kernel has PSI (or says None)
    assert us is None or us >= 0


def test_etcd_keys_left_by_the_first_faults_are_not_growth_but_growth_to_the_end_is() -> None:
    def keys(leak: bool) -> Samples:
        out = Samples()
        for i in range(360):
            t = i * 10.0
            n = 23 + (t >= 200) + (t >= 1700)  # a history entry, then a released marker
            out.keys.append((t, n + (i // 30 if leak and t >= 1800 else 0)))
        return out

    def judged(samples: Samples) -> list:
        return [t for t in trends(result_with([]), samples) if t.series.startswith("etcd")]

    [flat] = judged(keys(leak=False))
    assert not flat.grows and flat.judged
    [leak] = judged(keys(leak=True))
    assert leak.grows


def test_history_keys_are_counted_apart_and_not_judged() -> None:
    """The history grows with every failover up to its retention (1,000 per kind): the soak
    of 2026-12-06 flagged 'growth' from it. Only keys outside history/ are judged."""
    samples = Samples()
    for i in range(360):
        t = i * 10.0
        samples.keys.append((t, 26))
        samples.history.append((t, 5 + i // 20))  # a failover every 200 s: +1 key each
    ts = trends(result_with([]), samples)
    assert [t.series for t in ts] == ["etcd keys but history/ (2nd half of the soak)"]
    assert not ts[0].grows
