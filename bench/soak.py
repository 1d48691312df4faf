"""Soak: hours of client load with a fault every few minutes, watching for growth (issue 11).

    sudo .venv/bin/python bench/soak.py --hours 1 [--mean-gap 180] [--seed 1] [--spare r3]
        [--out /tmp/soak] [--png docs/img/soak.png] [--write-docs]

It is a nemesis campaign (bench/nemesis.py: the same lab, probers, 20 long-lived
connections, checker) with faults every ``--mean-gap`` seconds on average, while every
``--every`` seconds it samples each agent's resident memory, open file descriptors and
asyncio tasks (its metrics: ``process_resident_memory_bytes``, ``process_open_fds``,
``lvs_asyncio_tasks``) and the number of keys under the cluster's etcd prefix.

Growth is the slope of a least-squares line, per hour, through each router's series over
the second half of the life of its longest-lived agent process (the first half is warm-up:
lazy imports, caches, allocator arenas; a leak keeps growing), on samples taken while no
fault ran nor in the 30 s after one. "Beyond noise": the slope exceeds twice its standard
error and 5 % of the series' mean per hour. ``--write-docs`` replaces the "Soak" section
of docs/benchmarks.md; ``--analyse OUT`` reports again on a finished soak's output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from bench.failover_report import replace_section  # noqa: E402
from bench.nemesis import Options, Result, campaign, summary, write_history  # noqa: E402
from bench.nemesis_check import Violation  # noqa: E402
from bench.nemesis_plan import Step  # noqa: E402
from bench.nemesis_report import write_png as write_timeline  # noqa: E402
from cluster.keys import Keys  # noqa: E402
from lvslab import Lab  # noqa: E402

SECTION = "Soak"
METRICS = {"rss_mb": ("process_resident_memory_bytes", 1 / 2**20),
           "fds": ("process_open_fds", 1.0),
           "tasks": ("lvs_asyncio_tasks", 1.0)}
WARM = 60.0  # s after an agent (re)starts before its samples count
JUDGED = 1800.0  # s: a shorter life may still be warming up (its slope is shown, not judged)
INTRO = """Hours of client load (20 long-lived connections, an HTTP request every 50 ms) with
a nemesis fault every few minutes; each agent's resident memory, open descriptors and
asyncio tasks and the etcd key count sampled every 10 s. A fault may restart an agent, so
each router's series is its longest-lived agent process, and the slope (least squares,
per hour) is fitted over the second half of that life, after its warm-up, on samples
taken while no fault ran nor in the 30 s after one; growth beyond noise = slope > 2
standard errors and > 5 % of the mean per hour. The checker of the campaign
(docs/faults.md) runs over the whole soak."""


@dataclass
class Sample:
    t: float
    router: str
    pid: int
    values: dict[str, float]


@dataclass
class Samples:
    agents: list[Sample] = field(default_factory=list)
    keys: list[tuple[float, int]] = field(default_factory=list)  # (t, etcd keys, no history)
    # (t, share of the last second some task waited for a CPU: /proc/pressure/cpu)
    pressure: list[tuple[float, float]] = field(default_factory=list)
    history: list[tuple[float, int]] = field(default_factory=list)  # (t, history/ keys)


def scrape(lab: Lab, router: str) -> dict[str, float]:
    url = f"http://{lab.address(router)}:9100/metrics"
    text = lab.exec("client", "curl", "-s", "-m", "2", url, timeout=10).stdout
    out = {}
    for name, (metric, scale) in METRICS.items():
        m = re.search(rf"^{metric} (\S+)$", text, re.M)
        if m:
            out[name] = float(m.group(1)) * scale
    return out


def key_count(lab: Lab) -> tuple[int, int] | None:
    """Keys under the cluster's prefix (etcdctl 3.4 has no --count-only): the live state
    (everything but ``history/``), and the history. The history grows with every failover,
    switchover and health transition up to its retention (cluster.history.RETENTION, 1,000
    events per kind): growth there is by design, so it is reported, not judged."""
    keys = Keys(lab.topology.cluster)
    res = lab.exec("client", "etcdctl", "--endpoints", lab.etcd_endpoints,
                   "--command-timeout=3s", "get", "--prefix", "--keys-only", keys.prefix,
                   timeout=10)
    if res.returncode != 0:
        return None
    names = [line for line in res.stdout.splitlines() if line.startswith(keys.prefix)]
    history = sum(1 for n in names if n.startswith(keys.history_prefix))
    return len(names) - history, history


def cpu_stall_us() -> int | None:
    """Microseconds some task has waited for a CPU since boot (PSI), None without PSI."""
    try:
        text = Path("/proc/pressure/cpu").read_text()
    except OSError:
        return None
    m = re.search(r"^some .*total=(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def pressure_share(prev: tuple[float, int], now: tuple[float, int]) -> float:
    """The share of the time between two PSI readings some task waited for a CPU."""
    dt = now[0] - prev[0]
    return max(0.0, min(1.0, (now[1] - prev[1]) / 1e6 / dt)) if dt > 0 else 0.0


@contextlib.contextmanager
def sampler(lab: Lab, every: float, samples: Samples) -> Iterator[Samples]:
    stop = threading.Event()

    def pressure() -> None:  # the host's CPU pressure, every second: was anyone starved?
        prev = None
        while not stop.wait(1.0):
            us = cpu_stall_us()
            if us is None:
                return
            now = (time.monotonic(), us)
            if prev is not None:
                samples.pressure.append((now[0], pressure_share(prev, now)))
            prev = now

    def run() -> None:
        while not stop.wait(every):
            now = time.monotonic()
            for r in lab.routers:
                pid = lab.pid(r)
                with contextlib.suppress(Exception):
                    values = scrape(lab, r) if pid and lab.alive(r) else {}
                    if values:
                        samples.agents.append(Sample(now, r, pid or 0, values))
            with contextlib.suppress(Exception):
                n = key_count(lab)
                if n is not None:
                    samples.keys.append((now, n[0]))
                    samples.history.append((now, n[1]))

    threads = [threading.Thread(target=f, daemon=True) for f in (run, pressure)]
    for thread in threads:
        thread.start()
    try:
        yield samples
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


@dataclass(frozen=True)
class Trend:
    series: str
    n: int
    mean: float
    slope: float  # per hour
    stderr: float  # of the slope, per hour
    judged: bool = True  # False: a life too short to tell growth from warm-up

    @property
    def grows(self) -> bool:
        """Growth beyond noise: > 2 standard errors and > 5 % of the mean per hour."""
        return (self.judged and self.slope > 2 * self.stderr
                and self.slope > 0.05 * abs(self.mean))

    @property
    def verdict(self) -> str:
        if not self.judged:
            return f"not judged (life < {JUDGED / 60:.0f} min)"
        return "YES" if self.grows else "no"


def trend(series: str, points: Sequence[tuple[float, float]]) -> Trend | None:
    """Least-squares slope (per hour) and its standard error."""
    n = len(points)
    if n < 5:
        return None
    xs = [t / 3600 for t, _ in points]
    ys = [v for _, v in points]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    stderr = math.sqrt(resid / (n - 2) / sxx) if n > 2 else float("inf")
    return Trend(series, n, my, slope, stderr)


def quiet(t: float, result: Result, settle: float = 30.0) -> bool:
    """No fault ran at ``t`` nor ended in the ``settle`` s before it."""
    return not any(a.started <= t <= a.healed + settle for a in result.applied
                   if not a.skipped)


def trends(result: Result, samples: Samples) -> list[Trend]:
    """Per router and series: the trend over the second half of the life of its
    longest-lived agent process (the first half is its warm-up: lazy imports, caches,
    allocator arenas), quiet samples only; and the count of etcd keys outside ``history/``
    over the second half of the soak (the first fault of a kind may leave a bounded key,
    such as the released marker; the history grows by design up to its retention)."""
    out: list[Trend] = []
    first: dict[tuple[str, int], float] = {}
    last: dict[tuple[str, int], float] = {}
    for s in samples.agents:
        first.setdefault((s.router, s.pid), s.t)
        last[(s.router, s.pid)] = s.t
    routers = sorted({s.router for s in samples.agents})
    for router in routers:
        lives = {pid: last[(r, pid)] - first[(r, pid)] for r, pid in first if r == router}
        pid = max(lives, key=lambda p: lives[p])
        half = first[(router, pid)] + max(WARM, lives[pid] / 2)
        for name in METRICS:
            points = [(s.t - result.t0, s.values[name]) for s in samples.agents
                      if s.router == router and s.pid == pid and name in s.values
                      and s.t >= half and quiet(s.t, result)]
            label = f"{router} {name} (pid {pid}, {lives[pid] / 60:.0f} min, 2nd half)"
            if (tr := trend(label, points)) is not None:
                out.append(replace(tr, judged=lives[pid] >= JUDGED))
    half = result.t0 + (result.end - result.t0) / 2
    keys = [(t - result.t0, float(n)) for t, n in samples.keys
            if t >= half and quiet(t, result)]
    if (tr := trend("etcd keys but history/ (2nd half of the soak)", keys)) is not None:
        out.append(replace(tr, judged=result.end - result.t0 >= JUDGED))
    return out


def pressure_around(samples: Samples, t: float, window: float = 5.0) -> float | None:
    """The highest share of a second some task waited for a CPU, within ``window`` s of
    ``t`` (None: not sampled): a gap with no fault under high pressure is the host's."""
    near = [p for at, p in samples.pressure if abs(at - t) <= window]
    return max(near) if near else None


def write_png(result: Result, samples: Samples, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(METRICS) + 2, 1, figsize=(12, 10.5), sharex=True)
    for ax, name in zip(axes, METRICS, strict=False):
        for router in sorted({s.router for s in samples.agents}):
            pts = [((s.t - result.t0) / 60, s.values[name]) for s in samples.agents
                   if s.router == router and name in s.values]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", markersize=2, label=router)
        ax.set_ylabel(name)
        ax.legend(fontsize=7, loc="upper left")
    ax = axes[-2]
    ax.plot([(t - result.t0) / 60 for t, _ in samples.keys], [n for _, n in samples.keys],
            ".", markersize=2, color="black", label="live state")
    ax.plot([(t - result.t0) / 60 for t, _ in samples.history],
            [n for _, n in samples.history], ".", markersize=2, color="grey",
            label="history/ (grows to its retention)")
    ax.set_ylabel("etcd keys")
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[-1]
    ax.plot([(t - result.t0) / 60 for t, _ in samples.pressure],
            [100 * p for _, p in samples.pressure], "-", linewidth=0.5, color="purple")
    ax.set_ylabel("host CPU\npressure %")
    for v in result.violations:
        for axis in axes:
            axis.axvline((v.t - result.t0) / 60, color="red", linewidth=0.8)
    for a in result.applied:
        if not a.skipped:
            for axis in axes:
                axis.axvspan((a.started - result.t0) / 60, (a.healed - result.t0) / 60,
                             color="orange", alpha=0.15, linewidth=0)
    axes[-1].set_xlabel("minutes (orange: a fault running; red: a violation)")
    fig.suptitle(f"soak: {(result.end - result.t0) / 3600:.2f} h, seed {result.seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(result: Result, ts: Sequence[Trend], argv: Sequence[str],
           samples: Samples | None = None) -> str:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    ran = [a for a in result.applied if not a.skipped]
    lines = [
        f"Command (as root): `.venv/bin/python bench/soak.py {' '.join(argv)}`. Machine: "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, kernel {platform.release()}, "
        f"commit {head}. {len(ran)} faults over {(result.end - result.t0) / 60:.0f} min "
        f"({', '.join(sorted({a.kind for a in ran}))}).",
        "",
        "| series | samples | mean | slope per hour | std. error | growth beyond noise |",
        "|---|---|---|---|---|---|",
    ]
    for t in ts:
        lines.append(f"| {t.series} | {t.n} | {t.mean:.2f} | {t.slope:+.3f} | {t.stderr:.3f} "
                     f"| {t.verdict} |")
    def detail(v: Violation) -> str:
        text = f"{v.check} at +{v.t - result.t0:.0f} s: {v.detail}"
        p = pressure_around(samples, v.t) if samples is not None else None
        return text + (f" (host CPU pressure up to {100 * p:.0f} % around it)"
                       if p is not None else "")

    lines += ["", "Checker: " + ("no violation" if not result.violations else
                                 f"{len(result.violations)} violation(s): " + "; ".join(
                                     detail(v) for v in result.violations[:5]))]
    if samples is not None and samples.pressure:
        shares = [p for _, p in samples.pressure]
        lines.append(f"Host CPU pressure (share of each second some task waited for a CPU): "
                     f"mean {100 * sum(shares) / len(shares):.0f} %, "
                     f"max {100 * max(shares):.0f} %.")
    lines += ["", "![soak](img/soak.png)"]
    return "\n".join(lines)


def load_run(out: Path) -> tuple[Result, Samples]:
    """A finished soak's result and samples, from its output directory (``--analyse``)."""
    from bench.nemesis_check import Applied, History

    hist = json.loads((out / "history.json").read_text())
    steps = {d["index"]: Step(**d) for d in hist["steps"]}
    applied = [Applied(steps[a["step"]], a["router"], a["started"], a["healed"],
                       a["skipped"], a["note"]) for a in hist["applied"]]
    violations = [Violation(v["check"], v["t"], v["detail"], tuple(v["steps"]))
                  for v in hist["violations"]]
    end = max([hist["t0"], *(a.healed for a in applied)])
    raw = json.loads((out / "samples.json").read_text())
    samples = Samples([Sample(**d) for d in raw["agents"]], [tuple(k) for k in raw["keys"]],
                      [tuple(p) for p in raw.get("pressure", [])],
                      [tuple(h) for h in raw.get("history", [])])
    if samples.agents:
        end = max(end, samples.agents[-1].t)
    result = Result(hist["seed"], list(steps.values()), applied, History(applied=applied),
                    violations, None, hist["t0"], end, out)
    return result, samples


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--mean-gap", type=float, default=180.0)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--spare", default="r3", help="a router no fault restarts (its agent "
                    "lives through the whole soak); '' spares none")
    ap.add_argument("--out", type=Path, default=Path("/tmp/soak"))
    ap.add_argument("--png", type=Path)
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--analyse", type=Path, help="report on a finished soak's --out")
    args = ap.parse_args(args_list)
    if args.analyse is not None:
        result, samples = load_run(args.analyse)
        ts = trends(result, samples)
        png = args.png or args.analyse / "soak.png"
        write_png(result, samples, png)
        text = report(result, ts, args_list, samples)
        print(text)
        if args.write_docs:
            doc = REPO / "docs" / "benchmarks.md"
            doc.write_text(replace_section(doc.read_text(),
                                           f"## {SECTION}\n\n{INTRO}\n\n{text}\n", SECTION))
        return 1 if result.violations or any(t.grows for t in ts) else 0
    opts = Options(seconds=args.hours * 3600, seed=args.seed, out=args.out,
                   mean_gap=args.mean_gap, prefix="soak", public="10.65.0.0/24",
                   private="10.65.1.0/24", spare=args.spare or None)
    samples = Samples()
    result = campaign(opts, during=lambda lab: sampler(lab, args.every, samples))
    write_history(result, opts.out / "history.json")
    write_timeline(result, opts.out / "timeline.png")
    (opts.out / "samples.json").write_text(json.dumps(
        {"agents": [asdict(s) for s in samples.agents], "keys": samples.keys,
         "pressure": samples.pressure, "history": samples.history}))
    ts = trends(result, samples)
    png = args.png or opts.out / "soak.png"
    write_png(result, samples, png)
    text = report(result, ts, args_list, samples)
    print(summary(result))
    print(text)
    if args.write_docs:
        doc = REPO / "docs" / "benchmarks.md"
        doc.write_text(replace_section(doc.read_text(), f"## {SECTION}\n\n{INTRO}\n\n{text}\n",
                                       SECTION))
    return 1 if result.violations or any(t.grows for t in ts) else 0


if __name__ == "__main__":
    sys.exit(main())
