"""Connection-survival benchmark (issue 10): established TCP connections through a change
of director, per data plane, scheduler and fault, in the lab.

    sudo .venv/bin/python bench/connections.py [--plane nftables[,nftables+conntrackd]]
        [--schedulers rr,wrr,wlc,lc,sh,mh] [--faults crash,graceful,failback]
        [--trials 3] [--connections 200] [--sources 20] [--quick]
        [--set KEY=VALUE ...] [--virtual-set KEY=VALUE ...] [--agent-arg ARG ...]
        [--json OUT.json] [--merge EARLIER.json ...] [--write-docs]

A client in the lab's client namespace opens C long-lived connections through the VIP to
the real servers' line echo (``virtual echo``, port 7; bench/conn_client.py), from
``--sources`` client addresses, and sends a line on each every 100 ms; per connection:
survived / reset / closed / stuck, and its longest stall. Meanwhile an HTTP prober (a new
connection every 20 ms) measures the failover gap. Faults: ``crash`` (links down + SIGKILL
of the active's agent and guardian), ``switchover`` (lvsctl switchover), ``sigterm``
(SIGTERM of the active's agent); ``graceful`` = both; ``failback`` (the top router, with
reservation_conflict_action = preempt, crashes, and comes back while the connections run
through the next one: it takes over again).

Data planes (``--plane``, comma list; bench/conn_lab.py PLANES): ``nftables`` (no sync),
``nftables+conntrackd``, ``ipvs`` (no sync), ``ipvs+syncd``. The IPVS ones need a kernel
with IPVS: run the same command in the QEMU guest,

    .venv/bin/python scripts/ipvs_vm.py --out /tmp/vm -- .venv/bin/python \\
        bench/connections.py --plane ipvs,ipvs+syncd      # writes /tmp/vm/connections.json
    .venv/bin/python bench/connections.py --merge /tmp/vm/connections.json --write-docs

(in the guest ``--json`` defaults to $PIRANHA_VM_OUT/connections.json). A plane whose
mechanism does not run, or a scheduler the lab's config refuses, is skipped with the
reason. ``--merge`` alone (no ``--plane``) runs nothing: it adds earlier results to the
report. ``--write-docs`` merges the cells into bench/results/connections.json (cells of
the same plane, scheduler and fault are replaced) and rewrites the "Connections" section
of docs/benchmarks.md and docs/img/connections.png from all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.conn_lab import (  # noqa: E402
    PLANES,
    Options,
    mechanism_problem,
    plane_problem,
    running_lab,
    scheduler_note,
)
from bench.conn_report import (  # noqa: E402
    FAULTS,
    SCHEDULERS,
    Cell,
    Trial,
    cell_from_json,
    cell_to_json,
    details,
    merge,
    pct,
    plot,
    render,
    replace_section,
    secs,
    section,
)
from lvslab import LabError  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
PNG = REPO / "docs" / "img" / "connections.png"
RESULTS = REPO / "bench" / "results" / "connections.json"
GROUPS = {"graceful": ("switchover", "sigterm"), "all": FAULTS}


def _pairs(values: list[str], what: str, ap: argparse.ArgumentParser
           ) -> tuple[tuple[str, str], ...]:
    out = []
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key.strip():
            ap.error(f"{what} wants KEY=VALUE, not {v!r}")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def _list(text: str, known: tuple[str, ...] | dict[str, object], what: str,
          ap: argparse.ArgumentParser, groups: dict[str, tuple[str, ...]] | None = None,
          ) -> list[str]:
    out: list[str] = []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        for n in (groups or {}).get(name, (name,)):
            if n not in known:
                ap.error(f"unknown {what} {n!r} (known: {', '.join(known)})")
            if n not in out:
                out.append(n)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Connection survival through a failover, in "
                                 "the lab (needs root).")
    ap.add_argument("--plane", default=None, help="data planes, comma list: "
                    + ", ".join(PLANES) + " [default: nftables; none with --merge]")
    ap.add_argument("--schedulers", default=",".join(SCHEDULERS),
                    help="schedulers of the echo virtual, comma list [%(default)s]")
    ap.add_argument("--faults", default="crash,graceful,failback",
                    help="comma list of " + ", ".join(FAULTS) + ", graceful, all "
                    "[%(default)s]")
    ap.add_argument("--trials", type=int, default=None, help="per cell [3; --quick 1]")
    ap.add_argument("--connections", type=int, default=None, help="per trial [200; --quick 40]")
    ap.add_argument("--every", type=float, default=0.1, help="seconds between lines [0.1]")
    ap.add_argument("--sources", type=int, default=20, help="client source addresses [20]")
    ap.add_argument("--settle-max", type=float, default=30.0,
                    help="seconds after the fault after which a silent connection counts "
                    "as stuck [30]")
    ap.add_argument("--quick", action="store_true", help="1 trial x 40 connections")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="an lvs.cf global for every lab (added, or replacing the lab's)")
    ap.add_argument("--virtual-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra key in the echo virtual (e.g. scheduler flags)")
    ap.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                    help="an extra argument of every pulse agent")
    vm_out = os.environ.get("PIRANHA_VM_OUT")
    ap.add_argument("--workdir", type=Path, default=Path(vm_out or "/tmp") / "bench-connections",
                    help="client records and logs, probe records, lab logs (emptied first) "
                    "[/tmp/bench-connections; in the QEMU guest under $PIRANHA_VM_OUT]")
    ap.add_argument("--json", type=Path,
                    default=Path(vm_out) / "connections.json" if vm_out else None,
                    help="write this run's cells here [in the QEMU guest: "
                    "$PIRANHA_VM_OUT/connections.json]")
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="cells of an earlier run (its --json) to add to the report")
    ap.add_argument("--write-docs", action="store_true",
                    help=f"merge into {RESULTS.relative_to(REPO)}, rewrite the Connections "
                    f"section of {DOCS.relative_to(REPO)} and {PNG.relative_to(REPO)}")
    ap.add_argument("--seed", type=int, default=10)
    args = ap.parse_args(argv)
    args.trials = args.trials or (1 if args.quick else 3)
    args.connections = args.connections or (40 if args.quick else 200)
    if args.trials < 1 or args.connections < 1:
        ap.error("--trials and --connections must be at least 1")
    plane = args.plane if args.plane is not None else ("" if args.merge else "nftables")
    args.planes = _list(plane, PLANES, "data plane", ap)
    args.scheduler_list = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    args.fault_list = _list(args.faults, FAULTS, "fault", ap, GROUPS)
    args.setting_pairs = _pairs(args.settings, "--set", ap)
    args.virtual_pairs = _pairs(args.virtual_set, "--virtual-set", ap)
    return args


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit, dirty = _git("rev-parse", "--short", "HEAD") or "?", _git(
        "status", "--porcelain", "--", "agent", "cluster", "lvslab", "bench")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}, commit {commit}"
            + (" (plus uncommitted work)" if dirty else "")
            + f", kernel {platform.release()}, {os.cpu_count()} x {cpu}, load average "
            f"{load} at the end")


def _git(*args: str) -> str:
    """git's answer in the repository ("" without git, e.g. in the QEMU guest)."""
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def say(text: str) -> None:
    print(text, flush=True)


def trial_line(fault: str, sched: str, t: Trial) -> str:
    lost = ", ".join(f"{n} {k}" for k, n in sorted(t.outcomes.items()) if k != "survived")
    gap = "-" if t.gap is None else secs(t.gap)
    return (f"    {fault} {sched} trial {t.index}: {t.old} -> {t.new or '?'}, gap {gap}: "
            f"{t.survived}/{t.connections} survived{', ' + lost if lost else ''}; longest "
            f"stall {secs(t.stall_max)} (median {secs(t.stall_p50)}); servers {t.servers}"
            + (f"  [{t.note}]" if t.note else ""))


class Bench:
    """Runs the cells of one invocation and keeps them (saved after each cell)."""

    def __init__(self, args: argparse.Namespace, command: str) -> None:
        self.args, self.command = args, command
        self.opts = Options(args.connections, args.every, args.sources, args.trials,
                            args.settle_max, 1.0, args.setting_pairs, args.virtual_pairs,
                            tuple(args.agent_arg), args.workdir)
        self.cells: list[Cell] = []
        self.started = time.monotonic()
        self.plane_skip: dict[str, str] = {}  # plane -> why (its mechanism does not run)

    def meta(self) -> dict[str, object]:
        return {"command": self.command, "trials": self.args.trials,
                "connections": self.args.connections, "every": self.args.every,
                "sources": self.args.sources}

    def save(self) -> None:
        if self.args.json:
            self.args.json.parent.mkdir(parents=True, exist_ok=True)
            self.args.json.write_text(json.dumps(
                {"cells": [cell_to_json(c) for c in self.cells]}, indent=1) + "\n")

    def add(self, cell: Cell) -> Cell:
        cell.meta = self.meta()
        self.cells.append(cell)
        self.save()
        return cell

    def run(self) -> None:
        for name in self.args.planes:
            plane = PLANES[name]
            problem = plane_problem(plane)
            for sched in self.args.scheduler_list:
                problem = problem or self.plane_skip.get(name, "")
                if problem:
                    for fault in self.args.fault_list:
                        self.add(Cell(name, sched, fault, skipped=problem))
                    continue
                lab_faults = [f for f in self.args.fault_list if f != "failback"]
                if lab_faults:
                    self.lab_cells(plane.name, sched, lab_faults, preempt=False)
                if "failback" in self.args.fault_list:
                    self.lab_cells(plane.name, sched, ["failback"], preempt=True)
            if problem:
                say(f"{name}: skipped: {problem}")

    def lab_cells(self, plane_name: str, sched: str, faults: list[str],
                  preempt: bool) -> None:
        plane = PLANES[plane_name]
        tag = f"{plane_name.replace('+', '-')}-{sched}{'-preempt' if preempt else ''}"
        say(f"{plane_name} / {sched}{' (preempt)' if preempt else ''}: "
            f"{', '.join(faults)}")
        cells = [Cell(plane_name, sched, f) for f in faults]
        try:
            with running_lab(self.opts, plane, sched, preempt, tag, say) as (lab, runner):
                active = runner.settle()
                problem = mechanism_problem(lab, plane, active)
                if problem:
                    for c in cells:
                        c.skipped = problem
                    self.plane_skip[plane_name] = problem
                    say(f"  skipped: {problem}")
                    return
                note = scheduler_note(lab, sched)
                for cell in cells:
                    cell.note = note
                    for i in range(1, self.args.trials + 1):
                        t = runner.trial(cell.fault, i)
                        cell.trials.append(t)
                        say(trial_line(cell.fault, sched, t))
        except LabError as exc:
            text = str(exc).strip()
            refused = "is not a valid lvs.cf" in text
            for c in cells:
                if refused:
                    c.skipped = f"the lab's config refuses it: {_first_problem(text)}"
                elif not c.trials:
                    c.skipped = f"failed: {text.splitlines()[0][:200]}"
                else:
                    c.note = (c.note + f" stopped early: {text.splitlines()[0][:200]}").strip()
            say(f"  {'skipped' if refused else 'ERROR'}: {text.splitlines()[0][:300]}")
        finally:
            for c in cells:
                self.add(c)


def _first_problem(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[1] if len(lines) > 1 else lines[0]


def load_cells(path: Path) -> list[Cell]:
    doc = json.loads(path.read_text())
    return [cell_from_json(c) for c in doc.get("cells", [])]


def write_docs(cells: list[Cell]) -> list[Cell]:
    """Merge into the stored results; rewrite the plot and the docs section."""
    stored = load_cells(RESULTS) if RESULTS.exists() else []
    everything = merge(stored, cells)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cells": [cell_to_json(c) for c in everything]},
                                  indent=1) + "\n")
    plot(everything, PNG)
    body = render(everything, png=str(PNG.relative_to(DOCS.parent)))
    DOCS.write_text(replace_section(DOCS.read_text(), section(body)))
    return everything


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    random.seed(args.seed)
    command = shlex.join([".venv/bin/python", "bench/connections.py",
                          *(argv if argv is not None else sys.argv[1:])])
    bench = Bench(args, command)
    if args.planes:
        if os.geteuid() != 0:
            print("connections.py: needs root (the lab creates network namespaces)",
                  file=sys.stderr)
            return 1
        if args.workdir.exists():
            import shutil

            shutil.rmtree(args.workdir)
        args.workdir.mkdir(parents=True)
        say(f"{args.trials} trial(s) x {args.connections} connections per cell; planes "
            f"{', '.join(args.planes)}; schedulers {', '.join(args.scheduler_list)}; faults "
            f"{', '.join(args.fault_list)}; files in {args.workdir}")
        try:
            bench.run()
        except KeyboardInterrupt:
            print("interrupted: the lab was torn down", file=sys.stderr)
        minutes = (time.monotonic() - bench.started) / 60
        for c in bench.cells:
            c.meta.update(minutes=round(minutes, 1), machine=machine())
        bench.save()
        say(f"\n{minutes:.1f} minutes")
    cells = list(bench.cells)
    for path in args.merge:
        cells = merge(cells, load_cells(path))
    if cells:
        say("\n" + details(cells))
        for c in cells:
            if c.skipped:
                say(f"{c.plane} / {c.scheduler} / {c.fault}: skipped: {c.skipped}")
            elif c.share is not None:
                say(f"{c.plane} / {c.scheduler} / {c.fault}: {pct(c.share)} survived")
    if args.write_docs and cells:
        write_docs(cells)
        say(f"wrote the Connections section of {DOCS} and {PNG}")
    failed = [c for c in bench.cells if c.skipped.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
