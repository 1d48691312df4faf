"""The nemesis: random faults, alone and overlapping, against a real lab, and a checker over
the whole history (issue 11; faults and bounds: docs/faults.md).

    sudo .venv/bin/python bench/nemesis.py --minutes 10 --seed 7 [--faults crash,cpu,...]
        [--replay steps.json] [--no-shrink] [--out DIR] [--png FILE]

The lab: three routers running pulse (nftables, conntrackd syncing connections), two real
servers, a three-member etcd. While the faults run, the client probes ARP for each VIP
every 10 ms on both LANs (capturing every frame that claims one), keeps 20 long-lived echo
connections open, and sends a short HTTP request every 50 ms. Afterwards the checker
(bench/nemesis_check.py) looks at everything; the output directory gets ``history.json``
(plan, what ran, ownership, gaps, connections, violations) and ``timeline.png``.

A failing campaign prints the seed, the violations, and the steps around the first one,
saved as ``suspects.json``: ``--replay suspects.json`` runs just those again, and
then (unless ``--no-shrink``) ever fewer of them are replayed to find the shortest history
that still breaks the same check (``shortest.json``).
Exit status: 0 when the checker found nothing, 1 otherwise.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import json
import math
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.failover_kit import Cluster, Report, Watch  # noqa: E402

from bench.conn_lab import ClientProc, source_addresses  # noqa: E402
from bench.nemesis_check import (  # noqa: E402
    Applied,
    Claim,
    Conn,
    History,
    Overlap,
    Violation,
    check,
    service_gaps,
    shrink,
    suspects,
)
from bench.nemesis_faults import ACTS, ETCD_ONLY, RESTARTS, Ctx, Unlocked  # noqa: E402
from bench.nemesis_plan import ACTIVE, KINDS, Shape, Step, dump, load, plan  # noqa: E402
from bench.nemesis_report import write_png  # noqa: E402
from cluster.keys import Keys  # noqa: E402
from lvslab import Lab, netns  # noqa: E402
from lvslab.config_file import lab_lvs_cf  # noqa: E402
from lvslab.procs import PYTHON  # noqa: E402
from lvslab.topology import Topology  # noqa: E402

PREFIX, PUBLIC, PRIVATE = "nem", "10.66.0.0/24", "10.66.1.0/24"
CONVERGE = 30.0  # s the cluster has to become whole after the last heal
PROBE = 0.01  # s between ARP probes of each VIP (issue 11: every 10 ms)
CONNECTIONS = 20
TTL = 2.0  # the lab's lease TTL
GONE = {"crash", "sigkill", "sigkill-family"}  # the router's agent is down until the heal
TABLES_SCRIPT = Path(__file__).with_name("nemesis_tables.py")


@dataclass
class Options:
    seconds: float = 90.0
    seed: int = 1
    faults: tuple[str, ...] | None = None
    replay: Path | None = None
    steps: Sequence[Step] | None = None  # run exactly these (a shrink trial)
    out: Path = Path("/tmp/nemesis")
    png: Path | None = None
    prefix: str = PREFIX
    public: str = PUBLIC
    private: str = PRIVATE
    mean_gap: float = 3.0
    spare: str | None = None  # a router whose agent no fault restarts (soak: one long life)


@dataclass
class Result:
    seed: int
    steps: list[Step]
    applied: list[Applied]
    history: History
    violations: list[Violation]
    report: Report | None
    t0: float
    end: float
    out: Path
    sampled: Any = None


def campaign_config(topo: Topology) -> str:
    """The lab's lvs.cf with conntrackd syncing connections on the private LAN and health
    checks that take a dead server out within a second."""
    text = lab_lvs_cf(topo)
    text = text.replace("heartbeat = 1\n", "heartbeat = 1\nsyncdaemon = 1\nsyncd_iface = eth1\n",
                        1)
    text = re.sub(r"(?m)^    timeout = .*$", "    timeout = 1", text)
    return re.sub(r"(?m)^    reentry = .*$", "    reentry = 2", text)


@contextlib.contextmanager
def campaign_lab(opts: Options) -> Iterator[tuple[Lab, Ctx]]:
    topo = Topology(opts.prefix, opts.public, opts.private, routers=3, servers=2,
                    etcd_members=3)
    text = campaign_config(topo)
    opts.out.mkdir(parents=True, exist_ok=True)
    config = opts.out / "lvs.cf"
    config.write_text(text)
    with Lab(opts.prefix, opts.public, opts.private, routers=3, servers=2, config=config,
             etcd_members=3) as lab:
        try:
            yield lab, Ctx(lab, text, opts.out)
        finally:
            logs = opts.out / "logs"
            shutil.rmtree(logs, ignore_errors=True)
            shutil.copytree(lab.log_dir, logs, dirs_exist_ok=True)


class ExitWatch:
    """Notices agents that exit while the nemesis did not stop them (and restarts them)."""

    def __init__(self, lab: Lab, ctx: Ctx, lock: threading.Lock) -> None:
        self.lab, self.ctx, self.lock = lab, ctx, lock
        self.exits: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with self.lock:
                for r in self.lab.routers:
                    if r not in self.ctx.down and not self.lab.alive(r):
                        self.exits.append((time.monotonic(), r))
                        with contextlib.suppress(Exception):
                            self.lab.start_agent(r)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def active_router(lab: Lab, cluster: Cluster) -> str | None:
    holders = cluster.holders()
    return holders[0] if len(holders) == 1 else None


class Runner:
    """Every step in a thread of its own: act at its time, hold, heal. Acts and heals that
    change the lab take the lab's lock; those that only talk to etcd (config pushes, junk
    keys) do not, since they may wait for an etcd that another fault has taken away."""

    def __init__(self, lab: Lab, ctx: Ctx, cluster: Cluster, t0: float,
                 lock: threading.Lock, spare: str | None = None) -> None:
        self.lab, self.ctx, self.cluster, self.t0, self.lock = lab, ctx, cluster, t0, lock
        self.spare = spare
        self.state = threading.Lock()  # guards the fields below
        self.applied: dict[int, Applied] = {}
        self.running: dict[int, Applied] = {}
        self.busy: set[str] = set()
        self.stale: list[tuple[float, str]] = []

    def run(self, steps: Sequence[Step]) -> tuple[list[Applied], list[tuple[float, str]]]:
        """Start and heal every step at its time; what ran, and the node keys of routers
        found down longer than the lease TTL (with etcd healthy) that were still there."""
        threads = []
        for step in sorted(steps, key=lambda s: s.at):
            time.sleep(max(0.0, self.t0 + step.at - time.monotonic()))
            thread = threading.Thread(target=self._step, args=(step,), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(120)
        return [self.applied[i] for i in sorted(self.applied)], self.stale

    def _lab(self, kind: str) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext() if kind in ETCD_ONLY else self.lock

    def _step(self, step: Step) -> None:
        kind = KINDS[step.kind]
        with self._lab(step.kind):
            target = step.target
            if target == ACTIVE:
                target = active_router(self.lab, self.cluster) or ""
            with self.state:
                if target and target == self.spare and step.kind in RESTARTS:
                    # spared: the fault hits the next router instead
                    others = [r for r in self.lab.routers if r != target and r not in self.busy]
                    target = others[step.seed % len(others)] if others else ""
                if kind.target == "router" and (not target or target in self.busy):
                    why = "no active router" if not target else f"{target} is under a fault"
                    self.applied[step.index] = Applied(step, target, skipped=why)
                    return
                if kind.target == "router":
                    self.busy.add(target)
            started = time.monotonic()
            try:
                heal = ACTS[step.kind](self.ctx, target, random.Random(step.seed))
            except Exception as exc:  # a lab act failed: record, never stop the campaign
                with self.state:
                    self.busy.discard(target)
                    self.applied[step.index] = Applied(step, target, started, started,
                                                       skipped=f"act failed: {exc}")
                return
        note = "; ".join(self.ctx.notes)
        print(f"  +{started - self.t0:6.2f}s #{step.index} {step.kind} {target} "
              f"({step.hold:.1f} s) {note}", flush=True)
        with self.state:
            self.running[step.index] = Applied(step, target, started, note=note)
        time.sleep(max(0.0, started + step.hold - time.monotonic()))
        self.ctx.notes.clear()
        with self._lab(step.kind) if not isinstance(heal, Unlocked) else contextlib.nullcontext():
            if step.kind in GONE and time.monotonic() - started > TTL + 1.5:
                with self.state:
                    calm = etcd_calm(self.applied.values(), self.running.values(),
                                     started - 1.0, step.index)
                if calm:
                    found = node_key(self.lab, target)
                    with self.state:
                        self.stale += found
            begun = time.monotonic()
            try:
                heal()
            except Exception as exc:
                self.ctx.notes.append(f"heal failed: {exc}")
            healed = time.monotonic()
        if healed - begun > 1.0:
            self.ctx.notes.append(f"healing took {healed - begun:.1f} s")
        note = "; ".join(n for n in (note, *self.ctx.notes) if n)
        with self.state:
            self.busy.discard(target)
            self.running.pop(step.index, None)
            self.applied[step.index] = Applied(step, target, started, healed, note=note)


def etcd_calm(done: Iterable[Applied], running: Iterable[Applied], since: float,
              me: int) -> bool:
    """No etcd fault ran since ``since`` (without a leader, etcd lets no lease expire)."""
    etcd = {"member", "etcd"}
    if any(KINDS[a.kind].target in etcd for a in running if a.step.index != me):
        return False
    return not any(KINDS[a.kind].target in etcd and not a.skipped and a.healed > since
                   for a in done)


def node_key(lab: Lab, router: str) -> list[tuple[float, str]]:
    """[(now, key)] if ``router``'s node key is still in etcd (its agent is down), else []."""
    key = Keys(lab.topology.cluster).node(router)
    res = lab.exec("client", "etcdctl", "--endpoints", lab.etcd_endpoints,
                   "--command-timeout=2s", "get", "--keys-only", key, timeout=10)
    return [(time.monotonic(), key)] if res.returncode == 0 and key in res.stdout else []


def converge(lab: Lab, cluster: Cluster, within: float = CONVERGE) -> tuple[float | None, str]:
    """Seconds until the cluster is whole again (None: not within ``within``) and what was
    still wrong at the last look."""
    start = time.monotonic()
    with contextlib.suppress(Exception):
        lab.clear_faults()
        lab.start_etcd()
    why = ""
    while time.monotonic() - start < within:
        try:
            active = cluster.healthy()
            why = "no whole cluster (agents, one holder, roles, peers, leader key)"
            if active is not None:
                why = health_problem(cluster) or tables_problem(lab)
                if not why:
                    return time.monotonic() - start, ""
        except Exception as exc:  # etcd still coming back, a metrics scrape failed
            why = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    return None, why


def health_problem(cluster: Cluster) -> str:
    """'' if every real server is up in every virtual (lvsctl status), else what is not."""
    st = cluster.status()
    if st is None:
        return "lvsctl status failed"
    bad = [f"{v.get('name')}/{s.get('name')}={s.get('state')}"
           for v in st.get("virtuals", []) for s in v.get("servers", [])
           if s.get("state") != "up"]
    return f"real servers not up: {', '.join(bad)}" if bad else ""


def tables_problem(lab: Lab) -> str:
    """'' if every router's kernel table is what etcd's state says it should be."""
    out = []
    for r in lab.routers:
        res = lab.exec(r, PYTHON, str(TABLES_SCRIPT), "--etcd", lab.etcd_endpoints,
                       "--cluster", lab.topology.cluster, timeout=30)
        try:
            diffs = json.loads(res.stdout.strip().splitlines()[-1])["differences"]
        except (ValueError, IndexError, KeyError):
            diffs = [f"check failed: {res.stderr.strip()[-200:]}"]
        out += [f"{r}: {d}" for d in diffs]
    return f"kernel tables differ from the desired state: {'; '.join(out)}" if out else ""


def stale_keys(lab: Lab) -> list[tuple[float, str]]:
    """Node keys of routers whose agent is not running (checked once the faults healed)."""
    keys = Keys(lab.topology.cluster)
    res = lab.exec("client", "etcdctl", "--endpoints", lab.etcd_endpoints,
                   "--command-timeout=3s", "get", "--prefix", "--keys-only", keys.nodes_prefix)
    now = time.monotonic()
    return [(now, k) for k in res.stdout.split()
            if k.startswith(keys.nodes_prefix)
            and k[len(keys.nodes_prefix):] in lab.routers
            and not lab.alive(k[len(keys.nodes_prefix):])]


# Holding starts at "becoming ACTIVE" (licensed then; the VIPs go up right after, and an
# agent killed before it logs "acquired" may already have announced them) or "acquired",
# and ends at the VIP manager's "released VIPs".
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+) \S+ "
                      r"(?:agent\.vip\.manager: (acquired (\d+) VIP|released VIPs)"
                      r"|agent\.pulse: (becoming ACTIVE))")


RESTART_LINE = re.compile(r"^--- (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) start: ")


class ClockOffsets:
    """Samples (wall clock - monotonic clock) twice a second while in use: agents log wall
    clock times, the probers record monotonic ones, and on a VM the wall clock is slewed
    (0.4 s over a 90 s campaign was seen), so one offset taken at the end is not enough."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.samples: list[tuple[float, float]] = []  # (wall, offset)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        mono, wall = time.monotonic(), time.time()
        self.samples.append((wall, wall - mono))

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> ClockOffsets:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def at(self, wall: float) -> float:
        """The offset at wall clock time ``wall`` (the nearest sample's)."""
        if not self.samples:
            return time.time() - time.monotonic()
        i = bisect.bisect_left(self.samples, (wall, -math.inf))
        near = self.samples[max(0, i - 1):i + 1]
        return min(near, key=lambda s: abs(s[0] - wall))[1]


def holding(log_dir: Path, routers: Iterable[str], offset: float | Callable[[float], float],
            ) -> dict[str, list[tuple[float, float]]]:
    """Per router, from its agent's log: when it held its VIPs (monotonic clock;
    ``offset`` = wall clock - monotonic clock, or a function of the wall clock time)."""
    offset_at = offset if callable(offset) else (lambda _wall, o=offset: o)
    out: dict[str, list[tuple[float, float]]] = {}
    for path in [log_dir / f"{r}.log" for r in routers]:
        if not path.exists():
            continue
        since: float | None = None
        spans: list[tuple[float, float]] = []
        for line in path.read_text(errors="replace").splitlines():
            if (r := RESTART_LINE.match(line)) and since is not None:  # a new agent
                wall = datetime.strptime(r.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
                spans.append((since, max(since, wall - offset_at(wall))))
                since = None
                continue
            m = LOG_LINE.match(line)
            if not m:
                continue
            wall = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            t = wall - offset_at(wall)
            if m.group(5) is not None or (m.group(4) is not None and int(m.group(4)) > 0):
                since = t if since is None else since
            elif m.group(3) is not None and m.group(4) is None and since is not None:
                spans.append((since, t))
                since = None
        if since is not None:
            spans.append((since, float("inf")))
        out[path.stem] = spans
    return out


def tracebacks(log_dir: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(log_dir.glob("r*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "Traceback" in line:
                out.append((path.name, line.strip()[:200]))
    return out


def analyse(report: Report, cluster: Cluster) -> tuple[list[Overlap], list[Claim],
                                                        list[Claim]]:
    overlaps, foreign, claims = [], [], []
    for ip, own in report.own.items():
        for o in own.overlaps:
            overlaps.append(Overlap(ip, o.start, o.end,
                                    tuple(report.names.get(m, m) for m in o.macs)))
        for e in own.foreign:
            foreign.append(Claim(e.t, ip, e.mac))
        for e in report.frames.get(ip, ()):
            claims.append(Claim(e.t, ip, report.names[e.mac]))
    return overlaps, foreign, claims


def conns(records: Sequence[dict[str, object]]) -> list[Conn]:
    out = []
    for r in records:
        if r.get("opened") is None:
            continue
        state = str(r.get("state"))
        ended = r.get("ended")
        broke = float(ended) if state != "open" and isinstance(ended, float | int) else None
        out.append(Conn(int(r["id"]), str(r.get("server", "")), broke, state))  # type: ignore[arg-type]
    return out


def replayable(steps: Sequence[Step]) -> list[Step]:
    """``steps`` moved to start three seconds into a campaign, spacing kept."""
    shift = min((s.at for s in steps), default=0.0) - 3.0
    return [dataclasses.replace(s, at=round(s.at - shift, 3)) for s in steps]


def reproduces(opts: Options, steps: list[Step], check_name: str) -> bool:
    """Does a campaign of just ``steps`` (moved to its start) break ``check_name`` again?"""
    steps = replayable(steps)
    trial = dataclasses.replace(opts, steps=steps, replay=None, out=opts.out / "shrink",
                                seconds=max(s.end for s in steps) + 5.0)
    result = campaign(trial)
    found = any(v.check == check_name for v in result.violations)
    print(f"  shrink: {len(steps)} steps ({', '.join(s.kind for s in steps)}): "
          f"{'fails' if found else 'passes'}", flush=True)
    return found


def campaign(opts: Options,
             during: Callable[[Lab], contextlib.AbstractContextManager[Any]] | None = None,
             ) -> Result:
    """Run a campaign; ``during(lab)`` is entered while the faults run (the soak's
    sampler) and what it yields lands in ``Result.sampled``."""
    topo = Topology(opts.prefix, opts.public, opts.private, routers=3, servers=2,
                    etcd_members=3)
    if opts.steps is not None:
        steps = list(opts.steps)
    elif opts.replay is not None:
        steps = replayable(load(opts.replay.read_text()))
        opts.seconds = max(opts.seconds, max((s.end for s in steps), default=0.0) + 5.0)
    else:
        steps = plan(opts.seed, opts.seconds,
                     Shape(tuple(topo.router_names), tuple(topo.etcd_names),
                             tuple(topo.server_names)),
                     opts.faults, mean_gap=opts.mean_gap)
    print(f"nemesis: seed {opts.seed}, {len(steps)} steps over {opts.seconds:g} s", flush=True)
    with campaign_lab(opts) as (lab, ctx):
        cluster = Cluster(lab)
        cluster.wait_healthy(within=60)
        lock = threading.Lock()
        sources = source_addresses(topo, 4)
        for addr in sources:
            netns.add_addr(lab.ns("client"), "eth0", f"{addr}/{topo.prefixlen('public')}")
        client = ClientProc(lab, CONNECTIONS, 0.1, sources, opts.out / "conn-client.log")
        ready = client.ready()
        print(f"  {ready.get('open')} connections open ({ready.get('failed')} failed)",
              flush=True)
        watch = Watch(cluster, http=True, every=PROBE)
        exits = ExitWatch(lab, ctx, lock)
        clocks = ClockOffsets()  # the wall clock drifts against the monotonic one here
        t0 = time.monotonic()
        try:
            with clocks, during(lab) if during else contextlib.nullcontext() as sampled:
                applied, stale = Runner(lab, ctx, cluster, t0, lock, opts.spare).run(steps)
                time.sleep(max(0.0, t0 + opts.seconds - time.monotonic()))
                converged, why = converge(lab, cluster)
                time.sleep(2.0)  # the service after convergence, in the record
        finally:
            exits.stop()
            report = watch.stop()
            records = client.stop()
            for proc in ctx.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(20)
        end = time.monotonic()
        overlaps, foreign, claims = analyse(report, cluster)
        history = History(
            applied=applied, overlaps=overlaps, foreign=foreign, claims=claims,
            gaps=service_gaps((r.start, r.end, r.ok) for r in report.http),
            conns=conns(records), exits=exits.exits, stale_keys=stale + stale_keys(lab),
            wrong=ctx.wrong, converged=converged, convergence=why)
    history.tracebacks = tracebacks(opts.out / "logs")
    history.holding = holding(opts.out / "logs", topo.router_names, clocks.at)
    violations = check(history)
    return Result(opts.seed, steps, applied, history, violations, report, t0, end, opts.out,
                  sampled)


def write_history(result: Result, path: Path) -> None:
    rep = result.report
    owners = {}
    if rep is not None:
        owners = {ip: [[rep.names.get(i.mac, i.mac), i.start - result.t0, i.end - result.t0]
                       for i in own.intervals] for ip, own in rep.own.items()}
    doc = {
        "seed": result.seed,
        "t0": result.t0,
        "steps": [asdict(s) for s in result.steps],
        "applied": [{**asdict(a), "step": a.step.index} for a in result.applied],
        "owners": owners,
        "gaps": [asdict(g) for g in result.history.gaps],
        "connections": [asdict(c) for c in result.history.conns],
        "exits": result.history.exits,
        "stale_keys": result.history.stale_keys,
        "converged_after": result.history.converged,
        "convergence": result.history.convergence,
        "tracebacks": result.history.tracebacks,
        "violations": [asdict(v) for v in result.violations],
    }
    path.write_text(json.dumps(doc, indent=1))


def summary(result: Result) -> str:
    ran = [a for a in result.applied if not a.skipped]
    kinds = sorted({a.kind for a in ran})
    longest = max((g.duration for g in result.history.gaps), default=0.0)
    lines = [f"nemesis seed {result.seed}: {len(ran)} faults ran "
             f"({len(result.applied) - len(ran)} skipped) over "
             f"{result.end - result.t0:.0f} s: {', '.join(kinds)}",
             f"  longest service gap {longest:.2f} s"
             f" ({len(result.history.gaps)} gaps); connections kept "
             f"{sum(c.broke is None for c in result.history.conns)}/{len(result.history.conns)};"
             f" converged after {result.history.converged or float('nan'):.1f} s"]
    if not result.violations:
        lines.append("  no violation")
    for v in result.violations:
        lines.append(f"  VIOLATION {v.check} at +{v.t - result.t0:.2f}s: {v.detail}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    ap.add_argument("--faults", default="", help=f"comma list of: {', '.join(KINDS)}")
    ap.add_argument("--replay", type=Path, help="run these steps (a suspects.json)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/nemesis"))
    ap.add_argument("--png", type=Path, help="also write the timeline here")
    ap.add_argument("--mean-gap", type=float, default=3.0, help="mean seconds between faults")
    ap.add_argument("--shrink", action=argparse.BooleanOptionalAction, default=True,
                    help="on a violation, replay ever fewer of the steps around it to find "
                         "the shortest history that still breaks the same check "
                         "(default; each trial is a short campaign)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    faults = tuple(f for f in args.faults.split(",") if f) or None
    opts = Options(seconds=args.minutes * 60, seed=seed, faults=faults, replay=args.replay,
                   out=args.out, png=args.png, mean_gap=args.mean_gap)
    result = campaign(opts)
    write_history(result, opts.out / "history.json")
    write_png(result, opts.out / "timeline.png")
    if opts.png is not None:
        shutil.copy(opts.out / "timeline.png", opts.png)
    print(summary(result))
    if result.violations:
        suspect = suspects(result.violations, result.applied)
        (opts.out / "suspects.json").write_text(dump(suspect))
        print(f"seed {seed}; the steps around the first violation: "
              f"{', '.join(f'#{s.index} {s.kind}' for s in suspect)}\n"
              f"replay them: {sys.argv[0]} --replay {opts.out / 'suspects.json'}")
        if args.shrink and suspect:
            name = result.violations[0].check
            if reproduces(opts, suspect, name):
                shortest = shrink(suspect, lambda steps: reproduces(opts, steps, name))
                (opts.out / "shortest.json").write_text(dump(shortest))
                print(f"shortest history that still breaks '{name}': "
                      f"{', '.join(f'#{s.index} {s.kind} {s.target}' for s in shortest)}\n"
                      f"replay it: {sys.argv[0]} --replay {opts.out / 'shortest.json'}")
            else:
                print(f"the steps around it alone do not break '{name}' again: replay the "
                      f"whole campaign with --seed {seed}")
        return 1
    print(f"history: {opts.out / 'history.json'}, timeline: {opts.out / 'timeline.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
