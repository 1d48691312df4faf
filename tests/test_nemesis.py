"""The nemesis' pure parts: the seeded plan, the checker over a history, the fault table
in docs/faults.md (the lab campaign itself: tests/test_nemesis_lab.py)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.nemesis_check import (
    Applied,
    Claim,
    Conn,
    Gap,
    History,
    Overlap,
    check,
    service_gaps,
    shrink,
    suspects,
)
from bench.nemesis_plan import ACTIVE, KINDS, NO_GAP, Shape, Step, allowed_gap, dump, load, plan
from bench.nemesis_plan import resources as held

LAB = Shape(("r1", "r2", "r3"), ("etcd1", "etcd2", "etcd3"), ("rs1", "rs2"))
DOC = Path(__file__).resolve().parents[1] / "docs" / "faults.md"


# ---------------------------------------------------------------- the plan


def test_a_seed_gives_one_plan_and_another_seed_another():
    assert plan(7, 90, LAB) == plan(7, 90, LAB)
    assert plan(7, 90, LAB) != plan(8, 90, LAB)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), seconds=st.floats(10, 600))
def test_no_two_steps_hold_one_resource_at_once(seed, seconds):
    steps = plan(seed, seconds, LAB)
    for i, a in enumerate(steps):
        assert a.at > 0 and a.end <= seconds
        lo, hi = KINDS[a.kind].hold
        assert lo <= a.hold <= hi
        for b in steps[i + 1:]:
            if b.at < a.end:
                assert not held(a, LAB) & held(b, LAB), (a, b)


def test_steps_overlap_and_cover_every_kind_over_a_long_campaign():
    steps = plan(3, 3600, LAB)
    assert {s.kind for s in steps} == set(KINDS)
    overlapping = sum(1 for a, b in itertools.pairwise(steps) if b.at < a.end)
    assert overlapping > len(steps) / 10
    assert any(s.target == ACTIVE for s in steps)
    assert all(s.target in LAB.routers or s.target == ACTIVE
               for s in steps if KINDS[s.kind].target == "router")


def test_kinds_can_be_chosen_and_unknown_ones_are_refused():
    steps = plan(1, 300, LAB, ["crash", "cpu"])
    assert {s.kind for s in steps} == {"crash", "cpu"}
    with pytest.raises(ValueError, match="unknown fault kinds: melt"):
        plan(1, 60, LAB, ["crash", "melt"])


def test_one_etcd_member_plans_no_member_faults_but_all_down():
    one = Shape(LAB.routers, ("etcd",), LAB.servers)
    kinds = {s.kind for s in plan(5, 3600, one)}
    assert "etcd-down" in kinds
    assert not kinds & {"etcd-member", "etcd-leader", "etcd-quorum", "etcd-peers"}


def test_a_plan_survives_its_json():
    steps = plan(11, 120, LAB)
    assert load(dump(steps)) == steps


def test_overlapping_faults_add_their_bounds():
    crash = Step(0, 1.0, "crash", "r1", 5.0, 0)
    flap = Step(1, 2.0, "link-flap", "r2", 0.8, 0)
    assert allowed_gap([]) == NO_GAP
    assert allowed_gap([crash]) == KINDS["crash"].gap
    assert allowed_gap([crash, flap]) == pytest.approx(KINDS["crash"].gap + NO_GAP + 0.8)


# ---------------------------------------------------------------- the checker


def ran(step: Step, started: float, router: str = "") -> Applied:
    return Applied(step, router, started, started + step.hold)


CRASH = Step(0, 10.0, "crash", ACTIVE, 5.0, 0)
FLAP = Step(1, 30.0, "server-crash", "rs2", 4.0, 0)


def history(**fields) -> History:
    return History(applied=[ran(CRASH, 110.0, "r1"), ran(FLAP, 130.0)], converged=3.0,
                   **fields)


def test_a_quiet_history_passes():
    assert check(history()) == []


def test_two_owners_fail():
    (v,) = check(history(overlaps=[Overlap("10.0.0.100", 112.0, 112.1, ("r1", "r2"))]))
    assert v.check == "two owners" and v.steps == (0,)
    assert "r1 and r2" in v.detail


def test_a_claim_from_a_host_that_is_no_router_fails():
    (v,) = check(history(foreign=[Claim(50.0, "10.0.0.100", "02:00:00:00:00:99")]))
    assert v.check == "foreign claim"


def test_a_frozen_router_claiming_past_its_lease_fails():
    freeze = Step(2, 50.0, "freeze-long", "r2", 4.0, 0)
    h = history(claims=[Claim(151.0, "vip", "r2"), Claim(153.0, "vip", "r3")])
    h.applied.append(ran(freeze, 150.0, "r2"))
    assert check(h) == []  # r2 within its TTL, r3 is not frozen
    h.claims.append(Claim(152.5, "vip", "r2"))
    (v,) = check(h)
    assert v.check == "late claim" and v.steps == (2,)


def test_a_claim_needs_the_vip_held_by_its_agent():
    h = history(claims=[Claim(105.0, "vip", "r1"), Claim(111.0, "vip", "r1"),
                        Claim(99.98, "vip", "r2"), Claim(104.01, "vip", "r2")])
    h.holding = {"r1": [(100.0, float("inf"))], "r2": [(100.0, 104.0)]}
    # r2 a little early (the kernel answers before the log line) and its last reply a
    # little after its "released" line
    assert check(h) == []
    # r1 crashed at 110 (CRASH): claims end with its licence, a TTL later
    h.claims.append(Claim(112.5, "vip", "r1"))
    h.claims.append(Claim(104.5, "vip", "r2"))  # r2 released at 104
    h.claims.append(Claim(104.6, "vip", "r2"))  # the same burst: one violation
    found = check(h)
    assert [(v.check, v.detail.split()[0]) for v in found] == [
        ("claim without VIP", "r2"), ("claim without VIP", "r1")]
    h.holding["r1"].append((112.0, float("inf")))  # restarted and won again
    assert [v.detail.split()[0] for v in check(h)] == ["r2"]


def test_gaps_are_judged_by_the_faults_around_them():
    assert check(history(gaps=[Gap(111.0, 113.5)])) == []  # a failover gap: crash
    (v,) = check(history(gaps=[Gap(111.0, 111.0 + KINDS["crash"].gap + 0.5)]))
    assert v.check == "gap" and v.steps == (0,)
    (v,) = check(history(gaps=[Gap(200.0, 201.0)]))  # nothing happened then
    assert v.check == "gap" and "no fault" in v.detail
    assert check(history(gaps=[Gap(200.0, 200.4)])) == []  # within the prober's noise


def test_connections_may_end_only_where_the_design_lets_them():
    kept = Conn(1, "rs1", None, "open")
    to_crashed = Conn(2, "rs2", 133.0, "reset")
    assert check(history(conns=[kept, to_crashed])) == []
    (v,) = check(history(conns=[Conn(3, "rs1", 133.0, "reset")]))  # rs1 was fine
    assert v.check == "connection lost" and v.steps == (1,)
    (v,) = check(history(conns=[Conn(4, "rs1", 112.0, "timeout")]))  # a crash keeps them
    assert v.check == "connection lost" and "crash" in v.detail
    # its server crashed long before: it ends when its next packet reaches the server
    assert check(history(conns=[Conn(5, "rs2", 190.0, "reset")])) == []
    # a flap long before explains nothing
    h = history(conns=[Conn(6, "rs1", 190.0, "reset")])
    h.applied.append(ran(Step(2, 40.0, "server-flap", "rs1", 2.0, 0), 140.0))
    (v,) = check(h)
    assert v.check == "connection lost"


def test_agent_exits_tracebacks_stale_keys_and_no_convergence_fail():
    h = history(exits=[(140.0, "r3")], tracebacks=[("r2.log", "Traceback (most recent")],
                stale_keys=[(120.0, "/lvs/default/nodes/r1")],
                wrong=[(150.0, "an invalid lvs.cf was stored (4)")])
    h.converged, h.convergence = None, "two holders"
    assert sorted(v.check for v in check(h)) == [
        "agent exited", "no convergence", "stale key", "traceback", "wrong"]


def test_the_suspects_are_the_steps_around_the_first_violation():
    h = history(overlaps=[Overlap("vip", 112.0, 112.1, ("r1", "r2"))])
    assert suspects(check(h), h.applied) == [CRASH]
    assert suspects([], h.applied) == []


def test_shrinking_keeps_only_the_steps_the_failure_needs():
    steps = [Step(i, float(i), "cpu", "", 1.0, 0) for i in range(8)]
    tries = []

    def fails(trial: list[Step]) -> bool:  # the bug needs steps 2 and 5 together
        tries.append(len(trial))
        return {2, 5} <= {s.index for s in trial}

    assert [s.index for s in shrink(steps, fails)] == [2, 5]
    assert len(tries) <= 2 * len(steps)


def test_service_gaps_run_from_the_last_success_to_the_next():
    reqs = [(0.0, 0.1, True), (0.2, 0.5, False), (0.6, 0.9, False), (1.0, 1.1, True),
            (1.2, 1.3, True)]
    assert service_gaps(reqs) == [Gap(0.1, 1.1)]
    assert service_gaps([(0.0, 0.3, False), (0.4, 0.5, True)]) == []  # no success before


# ---------------------------------------------------------------- docs/faults.md


def test_docs_faults_lists_every_kind_with_its_bound():
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| `([a-z-]+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip(), m.group(4).strip())
    assert set(rows) == set(KINDS)
    for name, kind in KINDS.items():
        bound, keeps, _why = rows[name]
        want = f"{kind.gap:g} s" + (" + hold" if kind.gap_holds else "")
        assert bound == want, name
        assert keeps == ("yes" if kind.keeps_connections else "no"), name


def test_holding_starts_when_the_agent_becomes_active(tmp_path) -> None:
    """An agent killed after it announced its VIPs but before it logged "acquired" held
    them from "becoming ACTIVE" (the seed-125 run of stop 18); a release ends it."""
    from bench.nemesis import holding

    (tmp_path / "r2.log").write_text(
        "2026-12-06 13:54:37,118 r2 INFO agent.pulse: becoming ACTIVE (term 136)\n"
        "2026-12-06 13:54:37,165 r2 INFO agent.vip.manager: acquired 2 VIP(s), 0 failed\n"
        "2026-12-06 13:54:39,185 r2 INFO agent.vip.manager: released VIPs: 2 removed\n"
        "2026-12-06 13:54:45,700 r2 INFO agent.pulse: becoming ACTIVE (term 136)\n"
        "--- 2026-12-06 13:54:49 start: pulse --node r2\n")
    spans = holding(tmp_path, ["r2"], offset=0.0)["r2"]
    from datetime import datetime

    def t(text: str) -> float:
        return datetime.strptime(f"2026-12-06 {text}", "%Y-%m-%d %H:%M:%S,%f").timestamp()

    assert spans == [(t("13:54:37,118"), t("13:54:39,185")),
                     (t("13:54:45,700"), t("13:54:49,000"))]
