"""The connection benchmark's analysis and report (pure, but for the plot's file).

From the client's per-connection records (bench/conn_client.py) and the fault's time:
each connection's outcome and longest stall; per trial and per cell (data plane x
scheduler x fault) the share that survived, the resets, the longest stall of a surviving
connection against the failover gap; the markdown of the "Connections" section of
docs/benchmarks.md, the stored results (bench/results/connections.json) and the plot.
"""

from __future__ import annotations

import math
import re
import statistics
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SECTION = "Connections"
STUCK = 1.0  # s: an open connection with a line unanswered this long at the end is stuck
STALL_SLACK = 0.1  # s: target "longest stall <= failover gap + 100 ms"
STALL_FLOOR = 0.001  # s: the plot's log scale starts here
FAULTS = ("crash", "switchover", "sigterm", "failback")
FAULT_TITLES = {
    "crash": "crash of the active (links down + SIGKILL of agent and guardian)",
    "switchover": "graceful: lvsctl switchover",
    "sigterm": "graceful: SIGTERM of the active's agent",
    "failback": "failback of a preempting router (reservation_conflict_action = preempt)",
}
TARGETS = {"crash": 0.999, "switchover": 1.0, "sigterm": 1.0, "failback": 1.0}
SCHEDULERS = ("rr", "wrr", "wlc", "lc", "sh", "mh")
PLANES = ("nftables", "nftables+conntrackd", "ipvs", "ipvs+syncd")  # report order
LOST = ("reset", "closed", "timeout", "stuck", "error", "corrupt")


# ---------------------------------------------------------------- one connection


def outcome(rec: Mapping[str, Any], t_fault: float, t_stop: float,
            stuck: float = STUCK) -> str:
    """What became of one connection (a conn_client record) in a trial.

    ``unopened`` (never established: not counted), ``survived`` (open at the end, echoed
    a line sent after the fault, nothing unanswered for ``stuck`` s), ``reset`` (RST or
    EPIPE), ``closed`` (the server closed it), ``timeout`` (the kernel gave up), ``stuck``
    (open but silent since the fault, or a line unanswered for ``stuck`` s at the end),
    ``corrupt`` (an echo that was not the line sent), ``error`` (anything else).
    """
    state = rec["state"]
    if state == "unopened" or rec.get("opened") is None:
        return "unopened"
    if rec.get("mismatched", 0):
        return "corrupt"
    if state != "open":
        return state if state in LOST else "error"
    pending, last = rec.get("pending_since"), rec.get("last_echo")
    if last is None or last <= t_fault or (pending is not None and t_stop - pending >= stuck):
        return "stuck"
    return "survived"


def longest_stall(rec: Mapping[str, Any], t_stop: float) -> float:
    """The longest wait of one connection for an echo, counting one still running at
    ``t_stop`` (or at the connection's end)."""
    longest = float(rec.get("longest", 0.0))
    pending = rec.get("pending_since")
    if pending is not None:
        end = rec["ended"] if rec.get("ended") is not None else t_stop
        longest = max(longest, end - pending)
    return longest


def resolved(status: Sequence[Sequence[Any]], t_fault: float, now: float,
             stuck: float = STUCK) -> bool:
    """Whether every connection of a client ``status`` has settled after the fault: ended,
    or echoed a line since ``t_fault`` with nothing unanswered for ``stuck`` s."""
    for state, last, pending in status:
        if state != "open":
            continue
        if last is None or last <= t_fault:
            return False
        if pending is not None and now - pending >= stuck:
            return False
    return True


# ---------------------------------------------------------------- trials and cells


@dataclass
class Trial:
    """One fault and what it did to the connections open through it."""

    index: int
    old: str  # the active before the fault
    new: str | None  # the active after it (None: nobody served again)
    gap: float | None  # the failover gap seen by new connections (None: no recovery)
    outcomes: dict[str, int]  # outcome -> connections (unopened excluded)
    servers: dict[str, int]  # real server -> connections, at the start
    stall_max: float  # longest stall of a surviving connection (0: none survived)
    stall_p50: float  # median of the survivors' longest stalls
    duration: float = 0.0  # seconds from the fault to the end of the trial
    note: str = ""

    @property
    def connections(self) -> int:
        return sum(self.outcomes.values())

    @property
    def survived(self) -> int:
        return self.outcomes.get("survived", 0)

    @property
    def stall_ok(self) -> bool | None:
        """Longest stall <= gap + 100 ms (None: no survivor or no recovery to compare)."""
        if self.gap is None or not self.survived:
            return None
        return self.stall_max <= self.gap + STALL_SLACK


def trial_from_records(index: int, old: str, new: str | None, gap: float | None,
                       t_fault: float, t_stop: float, records: Sequence[Mapping[str, Any]],
                       note: str = "") -> Trial:
    """A trial's summary from the client's records."""
    outcomes: Counter[str] = Counter()
    servers: Counter[str] = Counter()
    stalls = []
    for rec in records:
        what = outcome(rec, t_fault, t_stop)
        if what == "unopened":
            continue
        outcomes[what] += 1
        servers[rec.get("server") or "?"] += 1
        if what == "survived":
            stalls.append(longest_stall(rec, t_stop))
    unopened = sum(1 for r in records if outcome(r, t_fault, t_stop) == "unopened")
    if unopened:
        note = (note + f" {unopened} connection(s) never opened (not counted)").strip()
    return Trial(index, old, new, gap, dict(outcomes), dict(sorted(servers.items())),
                 max(stalls, default=0.0), statistics.median(stalls) if stalls else 0.0,
                 round(t_stop - t_fault, 3), note)


@dataclass
class Cell:
    """The trials of one data plane, scheduler and fault (or why there are none)."""

    plane: str
    scheduler: str
    fault: str
    trials: list[Trial] = field(default_factory=list)
    skipped: str = ""  # why this cell was not measured
    note: str = ""  # e.g. "mh is a fallback here"
    meta: dict[str, Any] = field(default_factory=dict)  # command, machine, commit, ...

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.plane, self.scheduler, self.fault)

    def count(self, what: str) -> int:
        return sum(t.outcomes.get(what, 0) for t in self.trials)

    @property
    def connections(self) -> int:
        return sum(t.connections for t in self.trials)

    @property
    def survived(self) -> int:
        return self.count("survived")

    @property
    def share(self) -> float | None:
        n = self.connections
        return self.survived / n if n else None

    @property
    def other_lost(self) -> int:
        return sum(self.count(w) for w in LOST if w != "reset")

    @property
    def stall_max(self) -> float | None:
        stalls = [t.stall_max for t in self.trials if t.survived]
        return max(stalls) if stalls else None

    @property
    def gaps(self) -> list[float | None]:
        return [t.gap for t in self.trials]

    @property
    def gap_max(self) -> float | None:
        """The longest failover gap (inf if a trial never recovered; None: no trial)."""
        if not self.trials:
            return None
        return max(math.inf if g is None else g for g in self.gaps)

    @property
    def survival_ok(self) -> bool | None:
        share, target = self.share, TARGETS.get(self.fault)
        if share is None or target is None:
            return None
        return share >= target

    @property
    def stall_ok(self) -> bool | None:
        checks = [t.stall_ok for t in self.trials if t.stall_ok is not None]
        return all(checks) if checks else None


def cell_to_json(cell: Cell) -> dict[str, Any]:
    return asdict(cell)


def cell_from_json(doc: Mapping[str, Any]) -> Cell:
    trials = [Trial(**t) for t in doc.get("trials", [])]
    return Cell(doc["plane"], doc["scheduler"], doc["fault"], trials,
                doc.get("skipped", ""), doc.get("note", ""), dict(doc.get("meta", {})))


def merge(old: Iterable[Cell], new: Iterable[Cell]) -> list[Cell]:
    """``old`` with every cell of ``new`` replacing the one of the same plane, scheduler and
    fault (a skipped new cell does not replace a measured old one); sorted for the report."""
    cells = {c.key: c for c in old}
    for c in new:
        if c.skipped and c.key in cells and not cells[c.key].skipped:
            continue
        cells[c.key] = c
    return sorted(cells.values(), key=_order)


def _rank(items: Sequence[str], item: str) -> tuple[int, str]:
    return (items.index(item), "") if item in items else (len(items), item)


def _order(c: Cell) -> tuple[tuple[int, str], ...]:
    """Report order: fault, data plane (each baseline before its sync), scheduler."""
    return (_rank(FAULTS, c.fault), _rank(PLANES, c.plane), _rank(SCHEDULERS, c.scheduler))


# ---------------------------------------------------------------- markdown


def pct(share: float | None) -> str:
    if share is None:
        return "-"
    if share == 1.0:
        return "100 %"
    return f"{math.floor(share * 1000) / 10:.1f} %"


def secs(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _ok(value: bool | None) -> str:
    return "-" if value is None else ("met" if value else "MISSED")


def matrix(cells: Sequence[Cell], fault: str) -> str:
    """Survival share (resets) per data plane (rows) and scheduler (columns) for ``fault``."""
    mine = [c for c in cells if c.fault == fault]
    scheds = [s for s in SCHEDULERS if any(c.scheduler == s for c in mine)]
    scheds += sorted({c.scheduler for c in mine} - set(scheds))
    planes = list(dict.fromkeys(c.plane for c in sorted(mine, key=_order)))
    rows = ["| data plane | " + " | ".join(scheds) + " |",
            "|---|" + "---|" * len(scheds)]
    for plane in planes:
        out = []
        for s in scheds:
            c = next((c for c in mine if c.plane == plane and c.scheduler == s), None)
            if c is None:
                out.append("")
            elif c.skipped or not c.connections:
                out.append("skipped")
            else:
                out.append(f"{pct(c.share)} ({c.count('reset')} reset)")
        rows.append(f"| {plane} | " + " | ".join(out) + " |")
    return "\n".join(rows)


def details(cells: Sequence[Cell]) -> str:
    """Every measured cell with all its numbers."""
    rows = ["| fault | data plane | scheduler | trials x connections | survived | resets | "
            "other lost | longest stall (survivor) | failover gap (max) | survival target | "
            "stall target |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(cells, key=_order):
        if c.skipped or not c.trials:
            continue
        per = sorted({t.connections for t in c.trials})
        size = f"{len(c.trials)} x {per[0]}" if len(per) == 1 else f"{c.connections} total"
        target = TARGETS.get(c.fault)
        rows.append(
            f"| {c.fault} | {c.plane} | {c.scheduler} | {size} | {pct(c.share)} "
            f"({c.survived}) | {c.count('reset')} | {c.other_lost or 0} | "
            f"{secs(c.stall_max)} | {secs(c.gap_max)} | "
            f"{'-' if target is None else pct(target)}: {_ok(c.survival_ok)} | "
            f"{_ok(c.stall_ok)} |")
    return "\n".join(rows)


def notes(cells: Sequence[Cell]) -> list[str]:
    out = []
    skipped: dict[tuple[str, str], list[Cell]] = {}
    for c in sorted(cells, key=_order):
        if c.skipped:
            skipped.setdefault((c.plane, c.skipped), []).append(c)
    for (plane, why), group in skipped.items():
        scheds = ", ".join(dict.fromkeys(c.scheduler for c in group))
        faults = ", ".join(dict.fromkeys(c.fault for c in group))
        out.append(f"`{plane}` skipped ({scheds}; {faults}): {why}")
    seen = set()
    for c in sorted(cells, key=_order):
        if c.note and (c.plane, c.scheduler, c.note) not in seen:
            seen.add((c.plane, c.scheduler, c.note))
            out.append(f"`{c.plane}` / `{c.scheduler}`: {c.note}")
        for t in c.trials:
            if t.note:
                out.append(f"`{c.plane}` / `{c.scheduler}` / {c.fault} trial {t.index}: "
                           f"{t.note}")
    return out


def runs(cells: Sequence[Cell]) -> list[str]:
    """One line per distinct run (command, machine, commit) that measured the cells (the
    load average each cell recorded at its end is not part of what tells runs apart)."""
    by: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        if c.skipped and not c.trials:
            continue
        machine = str(c.meta.get("machine", "?")).split(", load average")[0]
        by.setdefault((str(c.meta.get("command", "?")), machine), []).append(c)
    out = []
    for (command, _), group in by.items():
        planes = ", ".join(dict.fromkeys(c.plane for c in group))
        meta = group[0].meta
        machine = str(meta.get("machine", "?"))
        size = (f"{meta.get('trials', '?')} trial(s) x {meta.get('connections', '?')} "
                f"connections per cell, a line every {meta.get('every', 0.1):g} s, from "
                f"{meta.get('sources', '?')} client addresses")
        took = meta.get("minutes")
        out.append(f"{planes}: `{command}` ({size}; "
                   + (f"{took:.0f} minutes; " if isinstance(took, int | float) else "")
                   + f"{machine})")
    return out


INTRO = (
    "Established connections through a change of director (issue 10), in the lab "
    "(`lvslab`: three routers running `pulse`, two real servers whose default route is the "
    "active router's nat_router address, real etcd). `bench/connections.py` opens C "
    "long-lived TCP connections from the client namespace through the VIP to the lab's line "
    "echo (`virtual echo`, port 7), spread over several client source addresses; each sends a "
    "line every 100 ms and checks its echo. Then the fault; a connection *survived* if it is "
    "still open at the end, has echoed a line sent after the fault and has nothing "
    "unanswered for 1 s. *Resets* are connections that got an RST (the new director sent "
    "their packets to another real server, which knows nothing of them); *other lost*: "
    "closed, timed out or silent. The *stall* of a connection is the longest it waited for "
    "an echo (from a line sent, or the previous echo if later, to the echo). The "
    "*failover gap* is the service gap of new connections (an HTTP GET through the VIP "
    "every 20 ms), the time the VIP move took; the target is stall <= gap + 100 ms.")


WHY = (
    "Reading it. Without sync the NAT state of a connection lives in one director's "
    "conntrack table. The new active takes the connection's next packet for a new one "
    "(conntrack picks up TCP mid-stream) and its DNAT rule picks a real server afresh: with "
    "a random pick (rr, wrr, wlc and lc all are on nftables) it is the same one with "
    "probability 1/N, N = 2 real servers here, so about 50 % survive (the issue's 42 % and "
    "60 % were this on 40 connections); the other server answers with an RST. A source hash "
    "(sh, mh) picks the same server on every router, so the connection carries on. The "
    "longest stall after a crash is TCP's own unless the director acts: a segment lost in "
    "the gap is retransmitted 0.2, 0.6, 1.4, 3.0 s ... after it was sent (the RTO doubles "
    "from its 200 ms minimum), so after a gap of 2.0-2.4 s the first retransmission that "
    "gets through would leave about 3.0-3.3 s after the fault (measured before the resume "
    "nudge: 3.2-3.4 s). With state sync the new active knows every connection and nudges "
    "both ends the moment the VIPs are up (docs/conntrack-sync.md, \"Resuming at once\": a "
    "challenge-ACK probe, then ICMP host unreachable that makes a backed-off Linux TCP "
    "retransmit at once, RFC 6069), so they resume within tens of milliseconds of the gap. "
    "Without sync (sh, mh alone) the new active does not know the connections and they "
    "wait for their own next retransmission.")
RACE = (
    "The rare reset with a source hash after a graceful hand-over is a race of the "
    "hand-over itself, seen in `conntrack -E` on the new active: a real server's reply "
    "reaches it through the nat_router address, which has already moved, before any packet "
    "of the client does; the new active tracks it as a new, un-NATed connection (real "
    "server -> client, UNREPLIED), and the client's next packet, DNATed to the same real "
    "server, clashes with that entry: the connection is reset. In 10 switchovers of 200 "
    "connections (sh) each of the 9 resets had such an entry and no other connection did. "
    "Dropping, on the director, a real server's packet that would open a new conntrack entry "
    "without a SYN would leave the server to retransmit once the client's packet has "
    "created the right entry.")


RERUN = """To refresh a data plane's rows (each run replaces only its own cells; as root):

```
.venv/bin/python bench/connections.py --write-docs                   # nftables, no sync
.venv/bin/python bench/connections.py --plane nftables+conntrackd --write-docs
.venv/bin/python scripts/ipvs_vm.py --out /tmp/vm -- .venv/bin/python bench/connections.py \\
    --plane ipvs,ipvs+syncd                                          # in the QEMU guest
.venv/bin/python bench/connections.py --merge /tmp/vm/connections.json --write-docs
```"""


def render(cells: Sequence[Cell], png: str | None = None) -> str:
    """The body of the "Connections" section for every cell."""
    cells = sorted(cells, key=_order)
    parts = [textwrap.fill(INTRO, 92, break_on_hyphens=False)]
    targets = ("Targets (issue 10): crash >= 99.9 % survived; graceful switchover and "
               "SIGTERM 100 %; failback 100 % after the warm-up gate; with nftables + "
               "conntrackd, IPVS + sync daemon, and `mh` without any sync. The data planes "
               "without sync are the baseline.")
    parts.append(textwrap.fill(targets, 92, break_on_hyphens=False))
    lines = runs(cells)
    if lines:
        parts.append("Runs (as root, from the repository):\n\n"
                     + "\n".join(textwrap.fill(f"* {x}", 92, subsequent_indent="  ",
                                               break_on_hyphens=False) for x in lines))
    parts.append(RERUN)
    measured = {c.plane for c in cells if c.trials}
    missing = [p for p in PLANES if p not in measured]
    if missing:
        parts.append(textwrap.fill(
            "Not measured yet: " + ", ".join(f"`{p}`" for p in missing) + " (their "
            "mechanisms are not on this commit, or need the QEMU guest).", 92,
            break_on_hyphens=False))
    if png:
        parts.append(f"![connections through a failover]({png})")
    for fault in FAULTS:
        if any(c.fault == fault for c in cells):
            title = FAULT_TITLES[fault]
            parts.append(f"**{title[0].upper()}{title[1:]}**: connections survived "
                         f"(resets)\n\n{matrix(cells, fault)}")
    if any(not c.skipped and c.trials for c in cells):
        parts.append("All numbers:\n\n" + details(cells))
    parts.append(textwrap.fill(WHY, 92, break_on_hyphens=False))
    if any(c.count("reset") for c in cells if c.scheduler in ("sh", "mh")
           and c.fault != "crash" and "+" not in c.plane):
        parts.append(textwrap.fill(RACE, 92, break_on_hyphens=False))
    found = notes(cells)
    if found:
        parts.append("Notes:\n\n" + "\n".join(
            textwrap.fill(f"* {n}", 92, subsequent_indent="  ", break_on_hyphens=False)
            for n in found[:40]))
    return "\n\n".join(parts)


def section(body: str, extra: str = "") -> str:
    return f"## {SECTION}\n\n{body.strip()}\n" + (f"\n{extra.strip()}\n" if extra else "")


def replace_section(doc: str, new_section: str) -> str:
    """``doc`` with its "## Connections" section replaced (or appended); others intact."""
    pattern = re.compile(rf"^## {SECTION}[ \t]*\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(doc):
        return pattern.sub(lambda _m: new_section.rstrip() + "\n\n", doc,
                           count=1).rstrip() + "\n"
    return doc.rstrip() + "\n\n" + new_section


# ---------------------------------------------------------------- the plot


def plot(cells: Sequence[Cell], path: Path) -> None:
    """Survival share per scheduler and data plane, one panel per fault (top), and the
    longest stall of a survivor against the failover gap (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [c for c in cells if c.trials and not c.skipped]
    faults = [f for f in FAULTS if any(c.fault == f for c in measured)]
    if not faults:
        return
    planes = list(dict.fromkeys(c.plane for c in sorted(measured, key=_order)))
    scheds = [s for s in SCHEDULERS if any(c.scheduler == s for c in measured)]
    fig, axes = plt.subplots(2, len(faults), figsize=(4.2 * len(faults) + 1, 6.8),
                             squeeze=False, sharey="row")
    width = 0.8 / max(len(planes), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, fault in enumerate(faults):
        top, bottom = axes[0][col], axes[1][col]
        for i, plane in enumerate(planes):
            xs, shares, stalls, gaps = [], [], [], []
            for j, s in enumerate(scheds):
                c = next((c for c in measured if c.key == (plane, s, fault)), None)
                if c is None or c.share is None:
                    continue
                x = j - 0.4 + width * (i + 0.5)
                xs.append(x)
                shares.append(100 * c.share)
                stalls.append(c.stall_max or 0.0)
                gaps.append(c.gap_max if c.gap_max is not None and
                            not math.isinf(c.gap_max) else float("nan"))
            color = colors[i % len(colors)]
            top.bar(xs, shares, width, color=color, label=plane if col == 0 else None)
            bottom.bar(xs, [max(x, STALL_FLOOR) for x in stalls], width, color=color)
            bottom.plot(xs, [g + STALL_SLACK for g in gaps], "_", color="black", ms=12,
                        mew=2)
        target = TARGETS[fault] * 100
        top.axhline(target, color="red", ls="--", lw=1)
        top.set_title(FAULT_TITLES[fault].split(" (")[0], fontsize=9)
        top.set_ylim(0, 105)
        bottom.set_yscale("log")
        bottom.set_ylim(STALL_FLOOR, 20)
        for ax in (top, bottom):
            ax.set_xticks(range(len(scheds)), scheds)
        bottom.set_xlabel("scheduler")
    axes[0][0].set_ylabel("connections survived (%)\n(red: target)")
    axes[1][0].set_ylabel("longest stall of a survivor (s)\n(black: failover gap + 100 ms)")
    fig.legend(loc="upper center", ncol=max(len(planes), 1), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
