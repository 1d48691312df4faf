"""Failover benchmark (issue #4): the service gap a client sees when the active router
fails, in the lab (real pulse agents in network namespaces, real etcd), against keepalived.

    sudo .venv/bin/python bench/failover.py [--trials 20] [--quick]
        [--scenarios crash,fast,graceful,keepalived] [--write-docs [--section NAME]]
        [--workdir DIR]

A prober in the lab's client namespace makes a TCP connection and an HTTP GET to VIP:80
every 10 ms (timeout 100 ms). A trial's gap runs from the last successful probe before
the fault to the first one after it. Scenarios:

* ``crash``: links down + SIGKILL of the active's agent (default timers); targets
  p50 <= 2.5 s, p99 <= 3 s.
* ``fast``: the same with fast_eviction = 1, keepalive 0.1, deadtime 0.5; p50 <= 0.8 s.
* ``graceful`` = ``switchover`` (lvsctl switchover from the client) + ``sigterm``
  (SIGTERM of the active's agent); p50 <= 100 ms.
* ``keepalived``: the same crash with keepalived (VRRP defaults) moving the VIP and the
  agent's nftables DNAT programmed by hand; the baseline of the pulse/keepalived ratio.
* ``bfd``: the crash at BFD-class timers (keepalive 0.03, deadtime 0.1, fast eviction);
  p50 <= 0.15 s. ``keepalived-bfd``: keepalived's crash at VRRPv3 advert_int 0.03.

Needs root. Prints a markdown table; ``--write-docs`` replaces the "Failover" section of
docs/benchmarks.md with it, the command and machine notes. Probe records, keepalived
files and the labs' logs stay in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.failover_report import (  # noqa: E402
    SECTION,
    Summary,
    ratio,
    replace_section,
    section,
    table,
)
from bench.failover_trials import (  # noqa: E402
    PREFIX,
    PRIVATE,
    PUBLIC,
    SCENARIOS,
    ScenarioResult,
    expand,
    run_scenario,
)
from lvslab import LabError  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
WHERE_THE_TIME_GOES = (
    "Where the time goes (agent logs below; docs/protocol.md): after a crash the backups "
    "declare the active dead `deadtime` after its last heartbeat, campaign once its leader "
    "key is gone (lease TTL 2 s after its last refresh, refreshed every 0.5 s), and the "
    "winner adds the VIPs no earlier than last heartbeat + ack window + margin (rule 4: "
    "2.25 s at the defaults). The last heartbeat falls 0-0.5 s before the crash, so the gap "
    "lies between about 1.75 and 2.3 s; lease expiry and the rule-4 wait end within a few "
    "hundred ms of each other, and either can be the last. With fast eviction the lease is "
    "revoked at `deadtime` and rule 4 (0.5 + 0.125 s after the last heartbeat, sent at "
    "most 0.1 s before the crash) is always the last step: 0.53-0.63 s plus the GARP. "
    "keepalived's backup becomes master 3 x advert_int + skew (0.22 s at priority 200) "
    "after the master's last advertisement, sent 0-1 s before the crash: 2.2-3.2 s after "
    "the crash. At BFD-class timers (keepalive 0.03, deadtime 0.1, fast eviction) the "
    "same steps take: the backups declare the active dead 0.1 s after its last heartbeat "
    "(sent 0-0.03 s before the crash), vote and revoke its lease and win the key within "
    "about 10 ms, and rule 4 adds the VIPs at last heartbeat + 0.1 + 0.025 s: 0.095-0.125 s "
    "after the crash, plus a few ms for the VIPs and the GARP and the prober's 10 ms "
    "resolution. keepalived at VRRPv3 advert_int 0.03: master down after 3 x 0.03 + skew "
    "(0.007 s at priority 200) = 0.097 s after the last advertisement, sent 0-0.03 s "
    "before the crash.")
SWITCHOVER_MS = re.compile(r"is active .*?(\d+) ms after the request")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Failover benchmark in the lab (needs root).")
    ap.add_argument("--trials", type=int, default=None,
                    help="trials per scenario (default 20, --quick 3)")
    ap.add_argument("--quick", action="store_true", help="3 trials each (development)")
    ap.add_argument("--scenarios", default="crash,fast,graceful,keepalived",
                    help="comma list of: " + ", ".join([*SCENARIOS, "graceful"]))
    ap.add_argument("--write-docs", action="store_true",
                    help=f"write the results into {DOCS.relative_to(REPO)}")
    ap.add_argument("--section", default=SECTION,
                    help="the docs section to write (another name keeps the Failover one)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench-failover"),
                    help="probe records, keepalived files, lab logs (emptied first)")
    ap.add_argument("--json", type=Path, help="also write every trial as JSON here")
    args = ap.parse_args(argv)
    if args.trials is None:
        args.trials = 3 if args.quick else 20
    if args.trials < 1:
        ap.error("--trials must be at least 1")
    try:
        args.scenario_list = expand([s.strip() for s in args.scenarios.split(",") if s.strip()])
    except ValueError as exc:
        ap.error(str(exc))
    return args


def machine_notes() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}, kernel {platform.release()}, "
            f"{os.cpu_count()} x {cpu}, load average {load} at the end, commit {commit} "
            "(plus uncommitted work)")


def summaries(results: list[ScenarioResult]) -> list[Summary]:
    out = []
    for r in results:
        sc = SCENARIOS[r.name]
        out.append(Summary(r.name, sc.title, r.gaps, sc.target_p50, sc.target_p99))
    return out


def ratio_lines(sums: list[Summary]) -> list[str]:
    by = {s.scenario: s for s in sums}
    lines = []
    for name, base in (("crash", "keepalived"), ("fast", "keepalived"),
                       ("bfd", "keepalived-bfd")):
        for q in (50, 99):
            value = ratio(by.get(name), by.get(base), q)
            if value is not None:
                lines.append(f"pulse {name} / {base} at p{q}: {value:.2f}")
    return lines


def render_docs(command: str, sums: list[Summary], results: list[ScenarioResult],
                trials: int) -> str:
    ratios = ratio_lines(sums)
    prose = [
        "Service gap seen by a client during a failover, in the lab (`lvslab`: real "
        "`pulse` agents in network namespaces, real etcd, nftables DNAT, three routers, "
        "two real servers). A prober in the client namespace makes a TCP connection and an "
        "HTTP GET to VIP:80 every 10 ms (timeout 100 ms); a trial's gap runs from the last "
        "successful probe before the fault to the first one after it (resolution 10 ms). "
        "Crash = the active router's links down, then SIGKILL of its agent. The keepalived "
        "baseline runs in the same lab: keepalived (VRRP at its defaults: advert_int 1, "
        "preemption, priorities 250/200/150) moves the VIP and the nat_router address, the "
        "agent's nftables DNAT is programmed by hand on every router. "
        "`keepalived-bfd` runs it with VRRPv3 at advert_int 0.03 (VRRPv2 carries whole "
        "seconds; VRRPv3 centiseconds, RFC 5798, and keepalived rounds advert_int to 10 ms).",
        "Graceful hand-overs usually show no gap at all: the old router releases the VIP "
        "but keeps forwarding what still reaches it (its nftables DNAT stays, and the real "
        "servers' replies still find it as their gateway) until the new router's "
        "gratuitous ARP has moved the client.",
        f"Command (as root): `{command}`. Machine: {machine_notes()}. Other jobs ran on "
        "the same two cores during the run.",
    ]
    parts = [textwrap.fill(p, 92, break_on_hyphens=False) for p in prose] + [table(sums)]
    if ratios:
        parts.append(textwrap.fill("Ratio (lower is better for pulse): " + "; ".join(ratios)
                                   + ".", 92))
    parts.append(textwrap.fill(WHERE_THE_TIME_GOES, 92, break_on_hyphens=False))
    notes = []
    for r in results:
        if r.error:
            notes.append(f"* `{r.name}` stopped early: {r.error.splitlines()[0]}")
        reported = [float(m.group(1)) for t in r.trials
                    if (m := SWITCHOVER_MS.search(t.note))]
        if reported:
            notes.append(f"* `lvsctl switchover` itself reported the new router active "
                         f"{statistics.median(reported):.0f} ms (median; max "
                         f"{max(reported):.0f} ms) after its request (etcd round trips "
                         "included).")
        for t in r.trials:
            if t.note and not SWITCHOVER_MS.search(t.note):
                notes.append(f"* `{r.name}` trial {t.index}: {t.note}")
    if notes:
        parts.append("Notes:\n\n" + "\n".join(textwrap.fill(n, 92, subsequent_indent="  ")
                                              for n in notes[:12]))
    for r in (r for r in results if r.name in ("crash", "fast", "bfd")):
        for index, lines in list(r.timelines.items())[:1]:
            if lines:
                gap = next((t.gap for t in r.trials if t.index == index), None)
                gap_s = "never" if gap is None else f"{gap * 1000:.0f} ms"
                parts.append(f"Agent logs around `{r.name}` trial {index} (median, gap "
                             f"{gap_s}; seconds after the fault):\n\n```\n"
                             + "\n".join(_short(x) for x in lines[-25:]) + "\n```")
    return "\n\n".join(parts)


def _short(line: str) -> str:
    return line.replace(" INFO agent.", " ").replace(" WARNING agent.", " WARNING ")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("failover.py: needs root (the lab creates network namespaces)", file=sys.stderr)
        return 1
    workdir: Path = args.workdir
    if workdir.exists():
        import shutil

        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    command = shlex.join([".venv/bin/python", "bench/failover.py", *(argv if argv is not None
                                                          else sys.argv[1:])])
    print(f"lab {PREFIX} ({PUBLIC}, {PRIVATE}); {args.trials} trial(s) per scenario; "
          f"files in {workdir}")
    results: list[ScenarioResult] = []
    started = time.monotonic()
    try:
        for sc in args.scenario_list:
            print(f"{sc.name}: {sc.title}", flush=True)
            t0 = time.monotonic()
            results.append(run_scenario(sc, args.trials, workdir,
                                        say=lambda s: print(s, flush=True)))
            print(f"  ({time.monotonic() - t0:.0f} s)")
    except KeyboardInterrupt:
        print("interrupted: the lab was torn down", file=sys.stderr)
    except LabError as exc:
        print(f"failover.py: {exc}", file=sys.stderr)
    sums = summaries(results)
    print()
    print(table(sums))
    for line in ratio_lines(sums):
        print(line)
    for r in results:
        for index, lines in r.timelines.items():
            print(f"\n{r.name} trial {index}: agent logs (seconds after the fault)")
            print("\n".join(lines))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([{"scenario": r.name, "error": r.error,
                                          "trials": [vars(t) for t in r.trials]}
                                         for r in results], indent=2))
    if args.write_docs and results:
        doc = DOCS.read_text() if DOCS.exists() else ""
        body = render_docs(command, sums, results, args.trials)
        DOCS.write_text(replace_section(doc, section(body, args.section), args.section))
        print(f"wrote the {args.section} section of {DOCS}")
    return 0 if results and all(r.error is None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
