"""Freeze trials: the active router's agent stopped (SIGSTOP) past its lease, N times.

The scenario of issue 9: three routers; the active's agent (alternately alone and with its
VIP guardian) is frozen for ``--seconds`` (default 6 s, three lease TTLs) at a random phase
of its timers, then resumed. An ARP prober asks for the VIP every 10 ms from the client and
records every frame on the client LAN that claims it. Per trial:

* two-owner samples: probes answered by two routers (must be 0);
* late claims: frames from the frozen router while it was certainly unlicensed (frozen past
  TTL - margin, or after its leader key was deleted and before it won it again; must be 0);
* the gap: how long nobody answered for the VIP.

    .venv/bin/python bench/freeze.py --trials 20 [--seconds 6] [--png docs/img/freeze.png]
                                    [--json out.json] [--write-docs]

Needs root (network namespaces). The picture: one row per trial, who answered for the VIP
when (relative to the freeze), the freeze, and any late claim or two-owner sample in red.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.failover_kit import Cluster, LeaderEvent, Report, lab_for  # noqa: E402

TTL, MARGIN = 2.0, 0.25
SECTION = "Freeze"


@dataclass
class Trial:
    index: int
    guardian: bool
    old: str
    new: str
    frozen: float
    resumed: float
    two_owner: int  # overlapping ownership intervals seen by the prober
    late: list[float]  # times (s after the freeze) of claims while certainly unlicensed
    gap: float  # longest stretch without an answer, seconds
    owners: list[tuple[str, float, float]]  # (router, start, end) relative to the freeze


def unlicensed(events: list[LeaderEvent], router: str, frozen: float,
               resumed: float) -> list[tuple[float, float]]:
    """As tests/test_failover_freeze.py: the stretches the router was surely unlicensed."""
    out = [(frozen + TTL - MARGIN, resumed)]
    gone = next((e.t for e in events if e.kind == "DELETE" and e.t > frozen), None)
    if gone is not None:
        again = next((e.t for e in events if e.kind == "PUT" and e.node == router
                      and e.t > gone), float("inf"))
        out.append((gone, again - 0.5))
    return out


def trial(cluster: Cluster, index: int, seconds: float, guardian: bool) -> Trial:
    old = cluster.restore()
    with cluster.watch(every=0.01) as watch, cluster.leader_events() as key:
        time.sleep(0.3 + random.uniform(0, 0.5))
        with cluster.frozen(old, guardian) as frozen:
            time.sleep(seconds)
        resumed = time.monotonic()
        new = cluster.wait_one_holder()
        time.sleep(1.5)
    report: Report = watch.report
    own = report.own[cluster.vip]
    late = [e.t - frozen for a, b in unlicensed(key, old, frozen, resumed)
            for e in report.claims(old, a, b)]
    owners = [(report.names[i.mac], i.start - frozen, i.end - frozen) for i in own.intervals]
    return Trial(index, guardian, old, new, 0.0, resumed - frozen, len(own.overlaps),
                 sorted(late), max(report.gaps(frozen), default=0.0), owners)


def plot(trials: list[Trial], seconds: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"r1": "tab:blue", "r2": "tab:orange", "r3": "tab:green"}
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(trials) + 1.6))
    ax.axvspan(0, seconds, color="0.93", zorder=0)
    for row, t in enumerate(trials):
        y = len(trials) - row
        for router, start, end in t.owners:
            if end < -1 or start > seconds + 4:
                continue
            ax.plot([max(start, -1), min(end, seconds + 4)], [y, y], lw=6,
                    color=colors.get(router, "gray"), solid_capstyle="butt")
        for at in t.late:
            ax.plot(at, y, "x", color="red", ms=9, mew=2)
        if t.two_owner:
            ax.plot(seconds + 3.8, y, "o", color="red")
    ax.set_yticks(range(1, len(trials) + 1),
                  [f"#{t.index} {'+g' if t.guardian else '  '}" for t in reversed(trials)],
                  fontsize=7, family="monospace")
    ax.set_xlim(-1, seconds + 6.5)  # room on the right for the legend
    ax.set_xlabel("seconds after the active's agent was frozen (grey: frozen)")
    handles = [plt.Line2D([], [], color=c, lw=6, label=f"{r} answers for the VIP")
               for r, c in colors.items()]
    handles += [plt.Line2D([], [], color="red", marker="x", lw=0, ms=9, mew=2,
                           label="claim while unlicensed"),
                plt.Line2D([], [], color="red", marker="o", lw=0, label="two owners seen")]
    ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.9)
    ax.set_title(f"Active frozen {seconds:g} s, {len(trials)} trials (+g: with its guardian): "
                 f"{sum(t.two_owner for t in trials)} two-owner samples, "
                 f"{sum(len(t.late) for t in trials)} late claims", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def baseline_line(path: Path | None) -> str:
    """A paragraph on an earlier run (``--json`` of another commit, run from a worktree of
    it with this script and the test kit) for comparison; its picture if docs/img has it."""
    if path is None:
        return ""
    doc = json.loads(path.read_text())
    runs, commit = doc["trials"], doc["commit"]
    bad = [t["index"] for t in runs if t["two_owner"] or t["late"]]
    picture = REPO / "docs" / "img" / f"freeze-{commit}.png"
    return (f"\nThe same benchmark on commit {commit} (before the licence was asked at the "
            f"instant of every act): {sum(t['two_owner'] for t in runs)} two-owner samples "
            f"and {sum(len(t['late']) for t in runs)} late claims in {len(runs)} trials"
            + (f" (trials {', '.join(map(str, bad))})" if bad else "")
            + (f"; [picture](img/{picture.name})" if picture.exists() else "") + ".\n")


def section(trials: list[Trial], seconds: float, png: Path, command: str,
            baseline: str = "") -> str:
    gaps = sorted(t.gap for t in trials)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                         capture_output=True, text=True).stdout.strip()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    p50 = gaps[len(gaps) // 2]
    rows = "\n".join(
        f"| {t.index} | {'yes' if t.guardian else 'no'} | {t.old} | {t.new} | {t.two_owner} "
        f"| {len(t.late)} | {t.gap:.2f} s |" for t in trials)
    return f"""## {SECTION}

The scenario of issue 9: the active's agent (every other trial with its VIP guardian) frozen
with SIGSTOP for {seconds:g} s, three lease TTLs, at a random phase of its timers; an ARP
prober asks for the VIP every 10 ms from the client and records every frame claiming it.
*Two-owner* counts probes answered by two routers; *late claims* counts frames from the
frozen router while it was certainly unlicensed (see tests/test_failover_freeze.py); the gap
is the longest time nobody answered for the VIP.

Command (as root): `{command}`. Machine: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},
commit {rev}, load average {load} at the end.

Result: {sum(t.two_owner for t in trials)} two-owner samples and \
{sum(len(t.late) for t in trials)} late claims in {len(trials)} trials; gap p50 {p50:.2f} s, \
max {gaps[-1]:.2f} s (the VIP's 1 s lifetime runs out during the freeze; the next router adds
it once the frozen one's lease has expired and `ack_window + margin` after its last
heartbeat).
{baseline}
![freeze trials]({png.relative_to(REPO / 'docs') if png.is_relative_to(REPO / 'docs') else png})

| trial | guardian frozen too | old active | new active | two-owner | late claims | gap |
|---|---|---|---|---|---|---|
{rows}
"""


def write_docs(text: str) -> None:
    path = REPO / "docs" / "benchmarks.md"
    doc = path.read_text()
    pattern = re.compile(rf"^## {SECTION}\n.*?(?=^## |\Z)", re.S | re.M)
    doc = pattern.sub(text + "\n", doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + text
    path.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3 * TTL)
    parser.add_argument("--png", type=Path, default=REPO / "docs" / "img" / "freeze.png")
    parser.add_argument("--json", type=Path, help="write the trials here")
    parser.add_argument("--baseline", type=Path, help="--json of an earlier run to compare")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    random.seed(args.seed)
    trials = []
    with lab_for("z", routers=3) as cluster:
        for i in range(1, args.trials + 1):
            t = trial(cluster, i, args.seconds, guardian=i % 2 == 0)
            trials.append(t)
            print(f"trial {i}: {t.old} -> {t.new} two-owner {t.two_owner} late "
                  f"{len(t.late)} gap {t.gap:.2f} s", flush=True)
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip()
        args.json.write_text(json.dumps({"commit": commit,
                                         "trials": [asdict(t) for t in trials]}, indent=1))
    plot(trials, args.seconds, args.png)
    bad = sum(t.two_owner + len(t.late) for t in trials)
    print(f"{len(trials)} trials: {sum(t.two_owner for t in trials)} two-owner samples, "
          f"{sum(len(t.late) for t in trials)} late claims; picture {args.png}")
    if args.write_docs:
        command = ".venv/bin/python bench/freeze.py " + " ".join(sys.argv[1:])
        write_docs(section(trials, args.seconds, args.png, command,
                           baseline_line(args.baseline)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
