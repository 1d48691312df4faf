"""Pure parts of bench/false_alarms.py and the timer knobs of the failover benchmark."""

import math

import pytest

from bench.failover_keepalived import keepalived_conf
from bench.failover_lab import bfd_config, fast_config, timed_config
from bench.failover_trials import SCENARIOS
from bench.false_alarms import (
    LogCounts,
    Outcome,
    Setting,
    count_keepalived_log,
    count_pulse_log,
    lowest_survived,
    master_down,
    merge,
    owner_changes,
    steps,
    table,
)
from cluster import lvscf
from cluster.timing import timing_from
from lvslab.topology import Topology

TOPO = Topology("bfo", "10.90.0.0/24", "10.90.1.0/24")


def test_timed_configs_validate_and_carry_their_timers(tmp_path):
    for text, (k, d) in ((bfd_config(TOPO), (0.03, 0.1)), (fast_config(TOPO), (0.1, 0.5)),
                         (timed_config(TOPO, 0.015, 0.05), (0.015, 0.05))):
        path = tmp_path / "lvs.cf"
        path.write_text(text)
        t = timing_from(lvscf.load(path))
        assert (t.keepalive, t.deadtime, t.fast_eviction) == (k, d, True)
        assert t.problems() == []


def test_the_bfd_scenarios_exist_with_their_timers():
    assert SCENARIOS["bfd"].timers == (0.03, 0.1) and SCENARIOS["bfd"].target_p50 == 0.15
    kd = SCENARIOS["keepalived-bfd"]
    assert kd.keepalived and (kd.advert_int, kd.vrrp_version) == (0.03, 3)


def test_keepalived_below_a_second_needs_vrrpv3():
    conf = keepalived_conf("r1", 250, "10.0.0.1", 24, "10.0.1.254", 24, 0.03, 3)
    assert "advert_int 0.03" in conf and "vrrp_version 3" in conf
    with pytest.raises(ValueError, match="whole seconds"):
        keepalived_conf("r1", 250, "10.0.0.1", 24, "10.0.1.254", 24, 0.5, 2)
    with pytest.raises(ValueError, match=r"0\.01\.\.40\.95"):
        keepalived_conf("r1", 250, "10.0.0.1", 24, "10.0.1.254", 24, 0.005, 3)
    assert "advert_int 1\n" in keepalived_conf("r1", 250, "10.0.0.1", 24, "10.0.1.254", 24)


def test_master_down_interval_of_vrrpv3():
    assert math.isclose(master_down(1.0, 200), 3 + 56 / 256)
    assert math.isclose(Setting("keepalived", 0.03).detect, 0.09 + 0.03 * 56 / 256)
    assert Setting("pulse", 0.03, 0.1).detect == 0.1


def test_pulse_steps_keep_two_heartbeats_per_deadtime_and_go_from_slow_to_fast():
    for system in ("pulse", "keepalived"):
        detects = [s.detect for s in steps(system)]
        assert detects == sorted(detects, reverse=True)
    assert all(s.deadtime >= 2 * s.keepalive for s in steps("pulse"))
    assert Setting("pulse", 0.03, 0.1) in steps("pulse")
    assert Setting("keepalived", 0.03) in steps("keepalived")


PULSE_LOG = """\
2026-12-06 08:00:00,000 INFO agent.heartbeat.service: heartbeat: PeerDead(peer='r1', at=1.0)
2026-12-06 08:00:00,001 WARNING agent.stall: stalled for 0.031 s: no act until the lease
2026-12-06 08:00:00,002 WARNING agent.stall: stalled for 0.120 s: no act until the lease
2026-12-06 08:00:00,003 INFO agent.pulse: won the leader key: term 7
2026-12-06 08:00:00,004 INFO agent.pulse: becoming ACTIVE (term 7)
2026-12-06 08:00:00,005 INFO agent.pulse: released VIPs (licence expired): 2 removed
2026-12-06 08:00:00,005 INFO agent.vip.manager: released VIPs: 2 removed, 0 already gone
"""


def test_pulse_logs_count_takeovers_releases_and_near_misses():
    c = count_pulse_log(PULSE_LOG)
    assert (c.takeovers, c.releases, c.leader_changes, c.peer_dead, c.stalls) == (1, 1, 1, 1, 2)
    assert c.longest_stall == 0.12
    assert count_pulse_log("") == LogCounts()


def test_keepalived_logs_count_masters():
    text = ("Sun Dec  6 08:52:21 2026: (VI_1) Entering BACKUP STATE (init)\n"
            "Sun Dec  6 08:52:22 2026: (VI_1) Entering MASTER STATE\n")
    assert count_keepalived_log(text).takeovers == 1


def test_owner_changes_count_every_move_back_and_forth():
    assert owner_changes([]) == owner_changes(["a"]) == 0
    assert owner_changes(["a", "b", "a"]) == 2
    assert owner_changes(["a", "a", "b"]) == 1


def outcome(system, value, deadtime=0.0, **kw):
    return Outcome(Setting(system, value, deadtime), 30.0, **kw)


def test_a_false_failover_is_anything_that_moved_the_vip():
    assert outcome("pulse", 0.03, 0.1).survived
    assert not outcome("pulse", 0.03, 0.1, owner_changes=1).survived
    assert not outcome("pulse", 0.03, 0.1, counts=LogCounts(releases=1)).survived
    near_miss = outcome("pulse", 0.03, 0.1, counts=LogCounts(peer_dead=3, stalls=9))
    assert near_miss.survived and near_miss.false_failovers == 0
    assert not outcome("keepalived", 0.03, error="lab broke").survived


def test_lowest_survived_stops_at_the_first_failure_from_slow_to_fast():
    runs = [outcome("keepalived", 1.0), outcome("keepalived", 0.1),
            outcome("keepalived", 0.05, owner_changes=2), outcome("keepalived", 0.03),
            outcome("pulse", 0.3, 1.0)]
    assert lowest_survived(runs, "keepalived") == Setting("keepalived", 0.1)
    assert lowest_survived(runs, "pulse") == Setting("pulse", 0.3, 1.0)
    assert lowest_survived([outcome("pulse", 0.3, 1.0, owner_changes=1)], "pulse") is None


def test_merge_replaces_a_setting_measured_again_and_json_round_trips():
    old = [outcome("pulse", 0.03, 0.1, owner_changes=1), outcome("keepalived", 1.0)]
    new = [outcome("pulse", 0.03, 0.1)]
    merged = merge(old, new)
    assert len(merged) == 2 and all(o.survived for o in merged)
    again = [Outcome.from_json(o.to_json()) for o in merged]
    assert again == merged
    assert "| pulse | keepalive 0.03, deadtime 0.1 | 100 ms |" in table(merged)
