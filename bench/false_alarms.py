"""False alarms under CPU saturation: how low can each side set its timers? (issue 11)

Every core of the machine is kept busy (``stress-ng --cpu``, at the agents' own nice
level) while the lab runs with no fault at all. For each timer setting, from slow to fast,
the lab is built, settles unloaded, then runs ``--seconds`` under saturation; anything that
moves the VIP (or would) is a false failover:

* ``owner changes``: the VIP answered from another router's MAC (an ARP prober in the
  client namespace asks for the VIP every 20 ms);
* ``takeovers``: a router became active / master (pulse: "becoming ACTIVE"; keepalived:
  "Entering MASTER STATE" in its log);
* pulse also: an active that let go (``released VIPs``), a new leader key (``won the
  leader key``), and, as near misses that moved nothing, ``PeerDead`` verdicts and the
  agent's own ``stalled for`` warnings (the longest stall it saw).

pulse runs with fast eviction (a silent active is evicted at ``deadtime``: without it the
2 s lease keeps any heartbeat miss from moving the VIP) and ``keepalive`` about a third of
``deadtime``; keepalived with VRRPv3 (centisecond adverts) at ``advert_int``: a backup
declares the master dead after 3 x advert_int + skew. A system's sweep stops at its first
setting with a false failover (``--all`` runs every setting).

    sudo .venv/bin/python bench/false_alarms.py --system pulse [--seconds 60]
    sudo .venv/bin/python bench/false_alarms.py --system keepalived [--seconds 60]
    .venv/bin/python bench/false_alarms.py --report --write-docs   # table + picture

Each run merges its outcomes into ``--json`` (default bench/results/false-alarms.json),
so the sweeps can run one system at a time (short turns on a shared machine);
``--report`` renders the table, ``--png`` and, with ``--write-docs``, the "False alarms
under CPU saturation" section of docs/benchmarks.md from that file.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lvslab import Lab

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

SECTION = "False alarms under CPU saturation"
JSON = REPO / "bench" / "results" / "false-alarms.json"
PNG = REPO / "docs" / "img" / "false-alarms.png"
PREFIX = "bfa"
PUBLIC, PRIVATE = "10.91.0.0/24", "10.91.1.0/24"
BACKUP_PRIORITY = 200  # keepalived's second router (its skew time)
ARP_EVERY = 0.02
ARP_HOLD = 0.5  # claims of one MAC this close are one ownership interval (the prober stalls)

# (keepalive, deadtime): keepalive about deadtime / 3, the BFD-class 0.03 / 0.1.
PULSE_STEPS: tuple[tuple[float, float], ...] = (
    (0.3, 1.0), (0.15, 0.5), (0.1, 0.3), (0.06, 0.2), (0.03, 0.1), (0.015, 0.05),
    (0.01, 0.03))
KEEPALIVED_STEPS: tuple[float, ...] = (1.0, 0.5, 0.3, 0.1, 0.05, 0.03, 0.02, 0.01)


# ---------------------------------------------------------------- pure


@dataclass(frozen=True)
class Setting:
    """One timer setting of one system."""

    system: str  # pulse | keepalived
    keepalive: float  # pulse: heartbeat interval; keepalived: advert_int
    deadtime: float = 0.0  # pulse only

    @property
    def label(self) -> str:
        if self.system == "pulse":
            return f"keepalive {self.keepalive:g}, deadtime {self.deadtime:g}"
        return f"advert_int {self.keepalive:g}"

    @property
    def detect(self) -> float:
        """Silence after which a backup declares the active dead (seconds)."""
        if self.system == "pulse":
            return self.deadtime
        return master_down(self.keepalive, BACKUP_PRIORITY)


def master_down(advert_int: float, priority: int) -> float:
    """VRRPv3's Master_Down_Interval (RFC 5798): 3 x advert + (256 - prio) x advert / 256."""
    return 3 * advert_int + (256 - priority) * advert_int / 256


def steps(system: str) -> list[Setting]:
    if system == "pulse":
        return [Setting("pulse", k, d) for k, d in PULSE_STEPS]
    return [Setting("keepalived", a) for a in KEEPALIVED_STEPS]


@dataclass
class LogCounts:
    """What the agents' logs say happened during the window."""

    takeovers: int = 0  # became active / master
    releases: int = 0  # pulse: an active released its VIPs
    leader_changes: int = 0  # pulse: a new leader key
    peer_dead: int = 0  # pulse: a peer declared dead (a near miss if nothing moved)
    stalls: int = 0  # pulse: the agent noticed it had stalled (longer than its margin)
    longest_stall: float = 0.0

    def add(self, other: LogCounts) -> None:
        self.takeovers += other.takeovers
        self.releases += other.releases
        self.leader_changes += other.leader_changes
        self.peer_dead += other.peer_dead
        self.stalls += other.stalls
        self.longest_stall = max(self.longest_stall, other.longest_stall)


STALL_RE = re.compile(r"stalled for (\d+(?:\.\d+)?) s")


def count_pulse_log(text: str) -> LogCounts:
    """Count the events of a pulse agent's log (the part written during the window)."""
    c = LogCounts()
    for line in text.splitlines():
        if "becoming ACTIVE" in line:
            c.takeovers += 1
        elif "released VIPs (" in line:  # pulse's, not vip.manager's "released VIPs:"
            c.releases += 1
        elif "won the leader key" in line:
            c.leader_changes += 1
        elif "PeerDead(" in line:
            c.peer_dead += 1
        elif m := STALL_RE.search(line):
            c.stalls += 1
            c.longest_stall = max(c.longest_stall, float(m.group(1)))
    return c


def count_keepalived_log(text: str) -> LogCounts:
    """Count the state changes in a keepalived log (the part written during the window)."""
    return LogCounts(takeovers=sum("Entering MASTER STATE" in line
                                   for line in text.splitlines()))


def owner_changes(owners: list[str]) -> int:
    """Changes in a succession of owners (consecutive repeats already collapsed or not)."""
    return sum(1 for a, b in itertools.pairwise(owners) if a != b)


@dataclass
class Outcome:
    """One setting run under saturation for ``seconds``."""

    setting: Setting
    seconds: float
    per_core: int = 1  # stress-ng workers per core
    nice: int = 0  # their nice level (the agents run at 0)
    owner_changes: int = 0
    two_owners: int = 0  # overlapping ownership intervals seen by the prober
    counts: LogCounts = field(default_factory=LogCounts)
    busy: float = 0.0  # share of CPU time busy during the window (all cores)
    probes: int = 0
    error: str | None = None
    when: str = ""
    commit: str = ""
    command: str = ""  # the sweep that measured it

    @property
    def false_failovers(self) -> int:
        """Anything that moved (or started to move) the VIP with no fault."""
        c = self.counts
        return max(self.owner_changes, c.takeovers, c.releases, c.leader_changes)

    @property
    def survived(self) -> bool:
        return self.error is None and self.false_failovers == 0

    @property
    def load(self) -> tuple[int, int]:
        return (self.per_core, self.nice)

    @property
    def key(self) -> tuple[Setting, int, int]:
        return (self.setting, self.per_core, self.nice)

    def to_json(self) -> dict[str, object]:
        doc = asdict(self)
        doc["false_failovers"] = self.false_failovers
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Outcome:
        d = dict(doc)
        d.pop("false_failovers", None)
        d["setting"] = Setting(**d["setting"])  # type: ignore[arg-type]
        d["counts"] = LogCounts(**d["counts"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


def lowest_survived(outcomes: list[Outcome], system: str,
                    load: tuple[int, int] = (1, 0)) -> Setting | None:
    """The fastest setting of ``system`` that survived under ``load`` (workers per core,
    nice), every slower one surviving too."""
    mine = sorted((o for o in outcomes if o.setting.system == system and o.load == load),
                  key=lambda o: -o.setting.detect)
    best = None
    for o in mine:
        if not o.survived:
            break
        best = o.setting
    return best


def merge(old: list[Outcome], new: list[Outcome]) -> list[Outcome]:
    """``old`` with every setting measured in ``new`` replaced by its new outcome."""
    fresh = {o.key for o in new}
    kept = [o for o in old if o.key not in fresh]
    return sorted([*kept, *new], key=lambda o: (o.per_core, -o.nice, o.setting.system,
                                                -o.setting.detect))


def load_label(load: tuple[int, int]) -> str:
    per_core, nice = load
    return f"{per_core}/core, nice {nice}"


def table(outcomes: list[Outcome]) -> str:
    rows = ["| load | system | timers | declared dead after | seconds | false failovers | "
            "VIP owner changes | takeovers | peer-dead verdicts | agent stalls (longest) | "
            "CPU busy |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        c = o.counts
        stalls = f"{c.stalls} ({c.longest_stall * 1000:.0f} ms)" if o.setting.system == "pulse" \
            else "-"
        dead = str(c.peer_dead) if o.setting.system == "pulse" else "-"
        verdict = "error: " + o.error.splitlines()[0] if o.error else str(o.false_failovers)
        rows.append(f"| {load_label(o.load)} | {o.setting.system} | {o.setting.label} | "
                    f"{o.setting.detect * 1000:.0f} ms | {o.seconds:g} | {verdict} | "
                    f"{o.owner_changes} | {c.takeovers} | {dead} | {stalls} | "
                    f"{o.busy * 100:.0f} % |")
    return "\n".join(rows)


# ---------------------------------------------------------------- the lab (shell)


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Hogs:
    """``stress-ng --cpu`` workers on every core (``per_core`` each), at ``nice`` (0: the
    agents' own level; negative: a neighbour the scheduler favours over the agents)."""

    def __init__(self, per_core: int, nice: int = 0) -> None:
        self.n = max(1, (os.cpu_count() or 1) * per_core)
        self.nice = nice
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Hogs:
        if shutil.which("stress-ng") is None:
            raise SystemExit("false_alarms.py: stress-ng is missing (scripts/setup.sh installs it)")
        self.proc = subprocess.Popen(
            ["nice", "-n", str(self.nice), "stress-ng", "--cpu", str(self.n), "--quiet"],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.5)  # the workers run
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # the group we started
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def run_setting(setting: Setting, seconds: float, per_core: int, workdir: Path,
                say: Callable[[str], None] = print, nice: int = 0,
                control: float = 0.0) -> Outcome:
    """Build the lab at ``setting``, let it settle, saturate every core for ``seconds``.

    ``control`` > 0: halfway through, freeze every process of the VIP holder's namespace
    for that many seconds (SIGSTOP, SIGCONT): a real fault the count must see (the check
    that the bench can fail)."""
    from support import arpwatch

    from bench.failover_keepalived import STAND_IN, Keepalived, program_dataplane
    from bench.failover_lab import ProbeLog, timed_config, wait_stable
    from lvslab import Lab, LabError, netns
    from lvslab.topology import Topology

    out = Outcome(setting, seconds, per_core, nice, when=time.strftime("%Y-%m-%d %H:%M %Z"),
                  commit=_commit())
    # Own pid files and logs, kept until the same setting runs again under the same load.
    workdir = workdir / f"{setting.system}-{setting.keepalive:g}-{per_core}x-nice{nice}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    pulse = setting.system == "pulse"
    config = None
    if pulse:
        config = workdir / "lvs.cf"
        config.write_text(timed_config(Topology(PREFIX, PUBLIC, PRIVATE), setting.keepalive,
                                       setting.deadtime))
    lab = Lab(PREFIX, PUBLIC, PRIVATE, agent_cmd=None if pulse else STAND_IN, config=config)
    keepalived = None
    watcher = None
    try:
        lab.up()
        if not pulse:
            program_dataplane(lab)
            keepalived = Keepalived(lab, workdir, setting.keepalive, version=3)
            keepalived.start_all()
        probes = ProbeLog(lab, workdir / "probes.jsonl")
        try:
            wait_stable(lab, probes, etcd=pulse, hold=2.0, timeout=60)
        finally:
            probes.stop()
        logs = {r: (keepalived.dir / f"{r}.log" if keepalived else lab.log_path(r))
                for r in lab.routers}
        start = {r: _size(p) for r, p in logs.items()}
        macs = {r: str(netns.ip_json(lab.ns(r), "link", "show", "dev", "eth0")[0]["address"])
                for r in lab.routers}
        record = workdir / "arp.jsonl"
        record.unlink(missing_ok=True)
        watcher = lab.popen("client", *arpwatch.argv("eth0", record, probe=[lab.vip],
                                                     every=ARP_EVERY), stdout=subprocess.PIPE)
        if watcher.stdout is None or watcher.stdout.readline().strip() != b"ready":
            raise LabError("the ARP prober did not start")
        say(f"  {setting.label}: settled; {seconds:g} s with every core busy")
        with Hogs(per_core, nice):
            busy0, total0 = cpu_times()
            if control > 0:
                time.sleep(seconds / 2)
                _freeze(lab, control)
                time.sleep(max(0.0, seconds / 2 - control))
            else:
                time.sleep(seconds)
            busy1, total1 = cpu_times()
        out.busy = (busy1 - busy0) / max(1.0, total1 - total0)
        time.sleep(1.0)  # whatever the load started finishes before we look
        watcher.terminate()
        watcher.wait(10)
        events = arpwatch.read_events(record)
        own = arpwatch.ownership(events, macs.values(), vips=[lab.vip], hold=ARP_HOLD)[lab.vip]
        out.owner_changes = owner_changes(own.owners)
        out.two_owners = len(own.overlaps)
        out.probes = own.probes
        count = count_pulse_log if pulse else count_keepalived_log
        for r, path in logs.items():
            out.counts.add(count(_read_from(path, start[r])))
    except (LabError, OSError, subprocess.SubprocessError) as exc:
        out.error = str(exc)
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        if keepalived is not None:
            keepalived.stop_all()
        if lab.log_dir.is_dir():
            shutil.copytree(lab.log_dir, workdir / "logs", dirs_exist_ok=True)
        lab.down()
    return out


def _freeze(lab: Lab, seconds: float) -> None:
    """SIGSTOP every process in the VIP holder's namespace for ``seconds``, then SIGCONT."""
    from bench.failover_lab import vip_holders
    from lvslab import netns

    holders = vip_holders(lab)
    pids = [p for h in holders for p in netns.ns_pids(lab.ns(h))]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    time.sleep(seconds)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _commit() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "?"


# ---------------------------------------------------------------- report


def plot(outcomes: list[Outcome], path: Path) -> None:
    """One row per system and load; each setting at its declared-dead time: a green dot if
    it ran without a false failover, a red cross if not; pulse's near misses (dead
    verdicts that moved nothing, the agents' longest stall) written under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted({(o.load, o.setting.system) for o in outcomes},
                  key=lambda r: (r[0][0], -r[0][1], r[1] != "pulse"))
    fig, ax = plt.subplots(figsize=(10, 1.1 * len(rows) + 1.6))
    for y, (load, system) in enumerate(reversed(rows)):
        mine = [o for o in outcomes if o.load == load and o.setting.system == system]
        for o in mine:
            x = o.setting.detect * 1000
            if o.error:
                ax.plot(x, y, "s", color="0.6", ms=9)
                continue
            ax.plot(x, y, "o" if o.survived else "X", ms=10,
                    color="tab:green" if o.survived else "tab:red")
            c = o.counts
            if o.false_failovers:
                ax.annotate(f"{o.false_failovers} false", (x, y), fontsize=7, ha="center",
                            textcoords="offset points", xytext=(0, 9), color="tab:red")
            elif system == "pulse" and (c.peer_dead or c.stalls):
                ax.annotate(f"{c.peer_dead} dead verdicts\nstall {c.longest_stall * 1000:.0f}"
                            " ms", (x, y), fontsize=6, ha="center", va="top",
                            textcoords="offset points", xytext=(0, -9))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{system}\nstress-ng {load_label(load)}"
                        for load, system in reversed(rows)], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xscale("log")
    ax.set_xlabel("silence before the active is declared dead (ms, log scale): pulse deadtime, "
                  "keepalived 3 x advert_int + skew")
    seconds = sorted({o.seconds for o in outcomes})
    ax.set_title("No fault, every core busy: green = no false failover, red = at least one "
                 f"({'/'.join(f'{s:g}' for s in seconds)} s per setting)", fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


WHY = (
    "Why neither side fails: both agents sleep nearly all the time, and the kernel's "
    "scheduler (EEVDF, kernel 6.18) lets a task that wakes from sleep run ahead of CPU-bound "
    "workers that have used up their share, so a heartbeat waits for a few ms at most, "
    "whatever the number of workers or, within nice, their weight: two workers at nice -19 "
    "(70 times an agent's weight) changed nothing for pulse, nor did 8 workers per core in an "
    "exploratory run (`--system pulse --only 0.01,0.015,0.03 --all --per-core 8 --seconds "
    "20`: no dead verdict, no stall). What the agents did see are pauses of the whole "
    "machine: in the 50 ms run every pulse agent noticed a 45-54 ms stall at the same "
    "instant and all three declared one another dead in the same millisecond (the dead "
    "verdicts above); heartbeats arrived again within 10 ms and no router took over (fast "
    "eviction needs every live backup's vote in etcd first). Every process stalling at once "
    "points to the virtual machine itself being paused by its host (its steal counter "
    "barely moves); such pauses come with or without load, and no scheduling priority inside "
    "the machine helps against them: they set the floor. At deadtime 0.1 s the longest one "
    "seen (54 ms) leaves about twice the headroom; at 0.05 s it does not. So pulse's agent "
    "does not raise its own priority (keepalived can, with `vrrp_rt_priority`, off by "
    "default; both ran at their defaults): nothing measured called for it, and a realtime "
    "agent that spins (a large reconcile, a bug) would take a core from everything else.")
CONTROL = (
    "The bench can fail: with `--control 0.3` it freezes every process of the VIP holder's "
    "namespace for 0.3 s halfway through the window; at pulse 0.03/0.1 and keepalived 0.03 "
    "each counted it as a false failover (one owner change and one takeover each; "
    "`.venv/bin/python bench/false_alarms.py --system both --only 0.03 --control 0.3 "
    "--seconds 10 --json /tmp/fa-control.json`).")


def near_misses(outcomes: list[Outcome]) -> list[str]:
    """pulse settings whose agents declared a peer dead or stalled, though nothing moved."""
    out = []
    for o in outcomes:
        c = o.counts
        if o.setting.system == "pulse" and o.survived and (c.peer_dead or c.stalls):
            out.append(f"* stress-ng {load_label(o.load)}, pulse {o.setting.label}: "
                       f"dead verdicts {c.peer_dead}, agent stalls longer than the margin "
                       f"{c.stalls} (longest {c.longest_stall * 1000:.0f} ms), no takeover")
    return out


def render(outcomes: list[Outcome], command: str, png: Path, notes: str) -> str:
    lines = []
    for load in sorted({o.load for o in outcomes}, key=lambda lo: (lo[0], -lo[1])):
        for system in ("pulse", "keepalived"):
            if not any(o.setting.system == system and o.load == load for o in outcomes):
                continue
            best = lowest_survived(outcomes, system, load)
            where = f"stress-ng {load_label(load)}"
            if best is None:
                lines.append(f"* {where}, {system}: no setting survived")
            else:
                lines.append(f"* {where}, {system}: {best.label} (declared dead after "
                             f"{best.detect * 1000:.0f} ms)")
    commands = ", ".join(f"`{c}`" for c in dict.fromkeys(o.command for o in outcomes
                                                         if o.command))
    rel = os.path.relpath(png, REPO / "docs")
    misses = near_misses(outcomes)
    wrap = textwrap.fill
    return "\n\n".join([
        f"## {SECTION}",
        __doc__.split("\n\n", 1)[1].split("\n    sudo", 1)[0].strip(),
        wrap("Commands (as root, each sweep in its own turn of the heavy-test lock), then the "
             f"report: {commands}, `{command}`. {notes}", 92, break_on_hyphens=False),
        table(outcomes),
        "Lowest timers without a false failover (every slower setting survived too):\n\n"
        + "\n".join(lines),
        f"![false failovers against timers]({rel})",
        *(["Near misses (pulse logs them; keepalived's backups log nothing until they take "
           "over):\n\n" + "\n".join(wrap(m, 92, subsequent_indent="  ") for m in misses)]
          if misses else []),
        wrap(WHY, 92, break_on_hyphens=False),
        wrap(CONTROL, 92, break_on_hyphens=False),
    ]) + "\n"


def write_docs(text: str) -> None:
    path = REPO / "docs" / "benchmarks.md"
    doc = path.read_text()
    pattern = re.compile(rf"^## {re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    doc = pattern.sub(lambda _m: text + "\n", doc) if pattern.search(doc) \
        else doc.rstrip() + "\n\n" + text
    path.write_text(doc)


def machine_notes(outcomes: list[Outcome]) -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    whens = sorted(o.when for o in outcomes if o.when)
    commits = sorted({o.commit for o in outcomes if o.commit})
    return (f"Machine: kernel {platform.release()}, {os.cpu_count()} x {cpu}; runs "
            f"{whens[0] if whens else '?'} to {whens[-1] if whens else '?'}, commit(s) "
            f"{', '.join(commits) or '?'}; etcd: one member.")


# ---------------------------------------------------------------- main


def load(path: Path) -> list[Outcome]:
    if not path.exists():
        return []
    return [Outcome.from_json(d) for d in json.loads(path.read_text())["outcomes"]]


def save(path: Path, outcomes: list[Outcome]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"outcomes": [o.to_json() for o in outcomes]}, indent=1) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", choices=("pulse", "keepalived", "both"), default="both")
    ap.add_argument("--seconds", type=float, default=60.0, help="saturated seconds per setting")
    ap.add_argument("--per-core", type=int, default=1, help="stress-ng workers per core")
    ap.add_argument("--nice", type=int, default=0,
                    help="nice level of the stress-ng workers (the agents run at 0)")
    ap.add_argument("--only", help="comma list of timers to run (pulse: keepalive values; "
                                   "keepalived: advert_int values)")
    ap.add_argument("--control", type=float, default=0.0, metavar="SECONDS",
                    help="freeze the VIP holder this long halfway (must count as a false "
                         "failover: checks the bench; not merged into --json)")
    ap.add_argument("--all", action="store_true", help="do not stop at the first false failover")
    ap.add_argument("--json", type=Path, default=JSON)
    ap.add_argument("--png", type=Path, default=PNG)
    ap.add_argument("--report", action="store_true", help="only render what --json holds")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench-false-alarms"))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outcomes = load(args.json)
    if not args.report:
        if os.geteuid() != 0:
            print("false_alarms.py: needs root (network namespaces)", file=sys.stderr)
            return 1
        args.workdir.mkdir(parents=True, exist_ok=True)
        only = {float(x) for x in args.only.split(",")} if args.only else None
        systems = ["pulse", "keepalived"] if args.system == "both" else [args.system]
        sweep = shlex.join([".venv/bin/python", "bench/false_alarms.py",
                            *(argv if argv is not None else sys.argv[1:])])
        new: list[Outcome] = []
        for system in systems:
            print(f"{system}:", flush=True)
            for setting in steps(system):
                if only is not None and setting.keepalive not in only:
                    continue
                o = run_setting(setting, args.seconds, args.per_core, args.workdir,
                                say=lambda s: print(s, flush=True), nice=args.nice,
                                control=args.control)
                o.command = sweep
                new.append(o)
                c = o.counts
                print(f"  {setting.label}: false failovers {o.false_failovers} (owner changes "
                      f"{o.owner_changes}, takeovers {c.takeovers}, releases {c.releases}, "
                      f"peer dead {c.peer_dead}, stalls {c.stalls} longest "
                      f"{c.longest_stall * 1000:.0f} ms), busy {o.busy * 100:.0f} %"
                      + (f"  ERROR {o.error}" if o.error else ""), flush=True)
                if args.control:
                    continue  # a check of the bench, not a result
                outcomes = merge(outcomes, [o])
                save(args.json, outcomes)
                if not o.survived and not args.all:
                    break
    print()
    print(table(outcomes))
    if outcomes:
        plot(outcomes, args.png)
        print(f"picture: {args.png}")
    if args.write_docs and outcomes:
        command = shlex.join([".venv/bin/python", "bench/false_alarms.py",
                              *(argv if argv is not None else sys.argv[1:])])
        write_docs(render(outcomes, command, args.png, machine_notes(outcomes)))
        print("wrote the section of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
