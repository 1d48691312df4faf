"""Pure parts of the connection benchmark: outcomes, stalls, cells against targets, the
report, the lab's config per scheduler and data plane, the command line."""

from __future__ import annotations

import json
import math

import pytest

from bench import connections as cli
from bench.conn_client import error_state
from bench.conn_lab import PLANES, agent_cmd, lab_config, source_addresses
from bench.conn_report import (
    Cell,
    Trial,
    cell_from_json,
    cell_to_json,
    details,
    longest_stall,
    matrix,
    merge,
    outcome,
    pct,
    plot,
    render,
    replace_section,
    resolved,
    runs,
    section,
    trial_from_records,
)
from lvslab import LabError, Topology
from lvslab.config_file import validate

FAULT, STOP = 10.0, 20.0


def rec(state="open", *, opened=1.0, last_echo=19.9, pending_since=None, longest=0.002,
        server="rs1", mismatched=0, ended=None) -> dict:
    return {"id": 0, "source": "s", "server": server, "opened": opened, "state": state,
            "ended": ended, "error": "", "sent": 10, "echoed": 10, "mismatched": mismatched,
            "last_echo": last_echo, "pending_since": pending_since, "longest": longest,
            "stalls": []}


def test_outcome_of_a_connection():
    assert outcome(rec(), FAULT, STOP) == "survived"
    assert outcome(rec(pending_since=19.5), FAULT, STOP) == "survived"  # a line in flight
    assert outcome(rec(pending_since=18.9), FAULT, STOP) == "stuck"  # unanswered for 1.1 s
    assert outcome(rec(last_echo=9.9), FAULT, STOP) == "stuck"  # silent since the fault
    assert outcome(rec(last_echo=None), FAULT, STOP) == "stuck"
    assert outcome(rec("reset", ended=12.0), FAULT, STOP) == "reset"
    assert outcome(rec("closed", ended=12.0), FAULT, STOP) == "closed"
    assert outcome(rec("timeout"), FAULT, STOP) == "timeout"
    assert outcome(rec("weird"), FAULT, STOP) == "error"
    assert outcome(rec(mismatched=1), FAULT, STOP) == "corrupt"
    assert outcome(rec("unopened", opened=None), FAULT, STOP) == "unopened"


def test_longest_stall_counts_one_still_running():
    assert longest_stall(rec(longest=3.2), STOP) == 3.2
    assert longest_stall(rec(longest=0.1, pending_since=15.0), STOP) == 5.0
    assert longest_stall(rec("reset", longest=0.1, pending_since=11.0, ended=12.5), STOP) == 1.5


def test_resolved_waits_for_every_open_connection_to_echo_after_the_fault():
    assert resolved([["open", 10.5, None], ["reset", None, 9.0]], FAULT, now=11.0)
    assert not resolved([["open", 9.5, None]], FAULT, now=11.0)  # nothing since the fault
    assert not resolved([["open", 10.5, 9.8]], FAULT, now=11.0)  # waiting 1.2 s
    assert resolved([["open", 10.5, 10.9]], FAULT, now=11.0)


def test_error_states_of_the_client():
    assert error_state(ConnectionResetError(104, "x")) == ("reset", "ECONNRESET")
    assert error_state(BrokenPipeError(32, "x"))[0] == "reset"
    assert error_state(TimeoutError())[0] == "timeout"
    assert error_state(OSError(111, "refused")) == ("error", "ECONNREFUSED")


def trial(index=1, survived=9, reset=1, gap=2.0, stall=2.05, note="") -> Trial:
    return Trial(index, "r1", "r2", gap, {"survived": survived, "reset": reset},
                 {"rs1": 5, "rs2": 5}, stall, 0.01, 5.0, note)


def test_trial_from_records_counts_outcomes_and_survivor_stalls():
    records = [rec(longest=2.2, server="rs1"), rec(longest=0.4, server="rs2"),
               rec("reset", ended=12.0, longest=9.0, server="rs2"),
               rec("unopened", opened=None, server="")]
    t = trial_from_records(1, "r1", "r2", 2.0, FAULT, STOP, records)
    assert t.outcomes == {"survived": 2, "reset": 1} and t.connections == 3
    assert t.servers == {"rs1": 1, "rs2": 2}
    assert (t.stall_max, t.stall_p50) == (2.2, 1.3)  # the reset's 9 s is not a survivor's
    assert "1 connection(s) never opened" in t.note
    assert t.stall_ok is False  # 2.2 > 2.0 + 0.1
    assert trial_from_records(1, "r1", None, None, FAULT, STOP, [rec()]).stall_ok is None


def test_cell_against_its_targets():
    crash = Cell("nftables", "wrr", "crash", [trial(1, 999, 1, stall=2.05),
                                             trial(2, 1000, 0, stall=1.0)])
    assert crash.connections == 2000 and crash.survived == 1999
    assert crash.share == pytest.approx(0.9995) and crash.survival_ok  # >= 99.9 %
    assert crash.stall_ok and crash.stall_max == 2.05 and crash.gap_max == 2.0
    graceful = Cell("nftables", "wrr", "sigterm", [trial(1, 999, 1, gap=0.0, stall=0.05)])
    assert graceful.survival_ok is False and graceful.stall_ok is True
    never = Cell("nftables", "wrr", "crash", [trial(gap=None)])
    assert math.isinf(never.gap_max) and never.stall_ok is None
    assert Cell("x", "rr", "crash").share is None and Cell("x", "rr", "crash").gap_max is None
    assert Cell("x", "rr", "none", [trial()]).survival_ok is None  # no target


def test_percentages_never_round_up_to_the_target():
    assert pct(0.99949) == "99.9 %" and pct(0.9989) == "99.8 %" and pct(1.0) == "100 %"
    assert pct(0.425) == "42.5 %" and pct(None) == "-"


def test_cells_round_trip_and_merge():
    old = [Cell("nftables", "wrr", "crash", [trial()], meta={"command": "a"}),
           Cell("nftables", "sh", "crash", [trial()])]
    assert [cell_from_json(json.loads(json.dumps(cell_to_json(c)))) for c in old] == old
    new = [Cell("nftables", "wrr", "crash", [trial(survived=10, reset=0)]),
           Cell("nftables", "sh", "crash", skipped="no"),  # does not replace a measurement
           Cell("ipvs", "wrr", "crash", skipped="no IPVS")]
    merged = merge(old, new)
    assert [(c.plane, c.scheduler) for c in merged] == [
        ("nftables", "wrr"), ("nftables", "sh"), ("ipvs", "wrr")]
    assert merged[0].survived == 10 and not merged[1].skipped


def test_report_tables_and_section():
    cells = [Cell("nftables", "wrr", "crash", [trial(1, 5, 5)],
                  meta={"command": "bench/connections.py", "machine": "m", "trials": 1,
                        "connections": 10, "sources": 20}),
             Cell("nftables", "sh", "crash", [trial(1, 10, 0)]),
             Cell("nftables+conntrackd", "wrr", "crash", skipped="no conntrackd"),
             Cell("nftables", "wrr", "sigterm", [trial(1, 6, 4, gap=0.0, stall=0.01)])]
    crash = matrix(cells, "crash").splitlines()
    assert crash[0] == "| data plane | wrr | sh |"
    assert crash[2] == "| nftables | 50.0 % (5 reset) | 100 % (0 reset) |"
    assert crash[3] == "| nftables+conntrackd | skipped |  |"
    rows = details(cells).splitlines()
    assert len(rows) == 2 + 3  # the skipped cell has no row
    assert "| crash | nftables | wrr | 1 x 10 | 50.0 % (5) | 5 | 0 | 2.05 s | 2.00 s | " \
           "99.9 %: MISSED | met |" in rows
    body = render(cells, png="img/connections.png")
    assert "![connections through a failover](img/connections.png)" in body
    assert "`bench/connections.py` (1 trial(s) x 10 connections" in body
    assert "`nftables+conntrackd` skipped (wrr; crash): no conntrackd" in body
    assert "Not measured yet: `nftables+conntrackd`, `ipvs`, `ipvs+syncd`" in " ".join(
        body.split())
    assert body.index("**Crash of the active") < body.index("**Graceful: SIGTERM")
    doc = "# B\n\n## Failover\n\nx\n\n## Connections\n\nold\n\n## Freeze\n\ny\n"
    out = replace_section(doc, section("new"))
    assert "old" not in out and "## Connections\n\nnew\n\n## Freeze\n\ny\n" in out
    assert replace_section("# B\n", section("new")).endswith("## Connections\n\nnew\n")


def test_plot_writes_a_picture(tmp_path):
    cells = [Cell(p, s, f, [trial()]) for p in ("nftables", "ipvs")
             for s in ("wrr", "sh") for f in ("crash", "sigterm")]
    plot(cells, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    plot([Cell("nftables", "wrr", "crash", skipped="x")], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


TOPO = Topology("bcn", "10.91.0.0/24", "10.91.1.0/24")


def test_lab_config_per_scheduler_plane_and_failback():
    text = lab_config(TOPO, "sh", PLANES["ipvs+syncd"].settings, [("persistent", "30")],
                      preempt=True)
    cfg = validate(text, "t.cf")
    http, echo = cfg.virtuals
    assert (http.scheduler, echo.scheduler, echo.persistent) == ("wlc", "sh", 30)
    assert (cfg.syncdaemon, cfg.syncd_iface, cfg.reservation_conflict_action) == (
        True, "eth1", "preempt")
    replaced = lab_config(TOPO, "rr", [("deadtime", "1")])
    assert "deadtime = 1\n" in replaced and "deadtime = 2" not in replaced
    with pytest.raises(LabError, match=r"t\.cf:\d+"):  # a setting main does not know
        validate(lab_config(TOPO, "rr", [("no_such_setting", "1")]), "t.cf")


def test_agent_command_and_client_addresses():
    cmd = agent_cmd(PLANES["ipvs"], ["--x"])
    assert cmd[cmd.index("--dataplane") + 1] == "ipvs" and cmd[-1] == "--x"
    assert source_addresses(TOPO, 3) == ["10.91.0.150", "10.91.0.151", "10.91.0.152"]
    with pytest.raises(LabError, match="--sources"):
        source_addresses(TOPO, 101)


def test_command_line(monkeypatch):
    monkeypatch.delenv("PIRANHA_VM_OUT", raising=False)
    args = cli.parse_args(["--faults", "crash,graceful", "--quick", "--set", "a = 1"])
    assert args.fault_list == ["crash", "switchover", "sigterm"]
    assert (args.trials, args.connections, args.planes) == (1, 40, ["nftables"])
    assert args.setting_pairs == (("a", "1"),) and args.json is None
    assert cli.parse_args(["--merge", "x.json"]).planes == []  # report only
    monkeypatch.setenv("PIRANHA_VM_OUT", "/out")
    args = cli.parse_args(["--plane", "ipvs,ipvs+syncd", "--faults", "all"])
    assert str(args.json) == "/out/connections.json" and args.fault_list[-1] == "failback"
    for bad in (["--plane", "dpdk"], ["--faults", "meteor"], ["--set", "novalue"]):
        with pytest.raises(SystemExit):
            cli.parse_args(bad)


def test_runs_lists_one_line_per_run_whatever_the_load_at_each_cell():
    def cell(sched: str, load: str, command: str = "bench --plane ipvs+syncd") -> Cell:
        machine = f"2026-12-06 04:52 UTC, commit 6939f00, load average {load} at the end"
        trial = trial_from_records(1, "r1", "r2", 2.0, FAULT, STOP, [rec()])
        return Cell("ipvs+syncd", sched, "crash", [trial],
                    meta={"command": command, "machine": machine, "trials": 1})
    lines = runs([cell("wrr", "5.50 4.79 2.82"), cell("mh", "5.14 4.73 2.81")])
    assert len(lines) == 1 and "load average 5.50" in lines[0]
    assert len(runs([cell("wrr", "1 1 1"), cell("mh", "1 1 1", "bench --plane nftables")])) == 2
