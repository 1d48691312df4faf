"""The failover benchmark's scenarios: one lab each, N trials of one fault, the gaps.

Each scenario builds its own lab (prefix ``bfo``), starts the prober in the client
namespace, then repeats: wait until the cluster is settled, a random pause (so faults
fall at every phase of heartbeats and lease refreshes), the fault, wait for another
router to serve, measure the gap from the probe records, undo the fault.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.failover_keepalived import STAND_IN, Keepalived, program_dataplane
from bench.failover_lab import (
    ProbeLog,
    log_timeline,
    timed_config,
    wait_new_server,
    wait_stable,
)
from bench.failover_probe import outage
from lvslab import Lab, LabError
from lvslab.procs import wait_gone
from lvslab.services import lvsctl_in

PREFIX = "bfo"
PUBLIC, PRIVATE = "10.90.0.0/24", "10.90.1.0/24"
RECOVERY_TIMEOUT = 20.0  # seconds a trial waits for another router to serve


@dataclass
class Trial:
    index: int
    old: str
    new: str | None
    gap: float | None
    failed: int
    wall_fault: float
    note: str = ""


@dataclass
class ScenarioResult:
    name: str
    trials: list[Trial] = field(default_factory=list)
    timelines: dict[int, list[str]] = field(default_factory=dict)  # trial -> log lines
    error: str | None = None

    @property
    def gaps(self) -> tuple[float | None, ...]:
        return tuple(t.gap for t in self.trials)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    fault: str  # crash | switchover | sigterm
    keepalived: bool = False
    timers: tuple[float, float] | None = None  # pulse: (keepalive, deadtime), fast eviction
    advert_int: float = 1.0  # keepalived
    vrrp_version: int = 2
    target_p50: float | None = None
    target_p99: float | None = None


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("crash", "pulse crash (link down + SIGKILL), defaults", "crash",
             target_p50=2.5, target_p99=3.0),
    Scenario("fast", "pulse crash, fast eviction (keepalive 0.1, deadtime 0.5)", "crash",
             timers=(0.1, 0.5), target_p50=0.8),
    Scenario("bfd", "pulse crash, BFD-class timers (keepalive 0.03, deadtime 0.1, fast "
             "eviction)", "crash", timers=(0.03, 0.1), target_p50=0.15),
    Scenario("switchover", "pulse graceful: lvsctl switchover", "switchover", target_p50=0.1),
    Scenario("sigterm", "pulse graceful: SIGTERM of the active's agent", "sigterm",
             target_p50=0.1),
    Scenario("keepalived", "keepalived VRRP crash (link down + SIGKILL), defaults", "crash",
             keepalived=True),
    Scenario("keepalived-bfd", "keepalived VRRPv3 crash, advert_int 0.03", "crash",
             keepalived=True, advert_int=0.03, vrrp_version=3),
)}
GROUPS = {"graceful": ("switchover", "sigterm")}


def expand(names: list[str]) -> list[Scenario]:
    """Scenario names (``graceful`` = switchover + sigterm) to scenarios, in run order."""
    out: list[str] = []
    for name in names:
        for n in GROUPS.get(name, (name,)):
            if n not in SCENARIOS:
                known = ", ".join([*SCENARIOS, *GROUPS])
                raise ValueError(f"unknown scenario {n!r} (known: {known})")
            if n not in out:
                out.append(n)
    return [SCENARIOS[n] for n in out]


def run_scenario(sc: Scenario, trials: int, workdir: Path,
                 say: Callable[[str], None] = print) -> ScenarioResult:
    """Build the lab, run ``trials`` trials, tear everything down (always); the gaps."""
    result = ScenarioResult(sc.name)
    config = None
    if sc.timers is not None:
        config = workdir / f"lvs-{sc.name}.cf"
        from lvslab.topology import Topology

        config.write_text(timed_config(Topology(PREFIX, PUBLIC, PRIVATE), *sc.timers))
    lab = Lab(PREFIX, PUBLIC, PRIVATE, agent_cmd=STAND_IN if sc.keepalived else None,
              config=config)
    keepalived: Keepalived | None = None
    probes: ProbeLog | None = None
    try:
        lab.up()
        if sc.keepalived:
            say(f"  nftables DNAT programmed: {program_dataplane(lab)} service(s) per router")
            keepalived = Keepalived(lab, workdir, sc.advert_int, sc.vrrp_version)
            keepalived.start_all()
        probes = ProbeLog(lab, workdir / f"{sc.name}-probes.jsonl")
        runner = _Runner(sc, lab, probes, keepalived, say)
        for i in range(1, trials + 1):
            trial = runner.trial(i)
            result.trials.append(trial)
            gap = "never" if trial.gap is None else f"{trial.gap * 1000:.0f} ms"
            say(f"  trial {i:2d}: {trial.old} -> {trial.new or '?'}  gap {gap}  "
                f"({trial.failed} failed probes){'  ' + trial.note if trial.note else ''}")
        _timelines(result, lab, keepalived is not None)
    except LabError as exc:
        result.error = str(exc)
        say(f"  ERROR: {exc}")
        if keepalived is not None:
            for r in lab.routers:
                say(f"  keepalived {r}: " + " | ".join(keepalived.log_tail(r, 5)))
    finally:
        if probes is not None:
            probes.stop()
        if keepalived is not None:
            keepalived.stop_all()
        _save_logs(lab, workdir / f"{sc.name}-logs")
        lab.down()
    return result


def _timelines(result: ScenarioResult, lab: Lab, keepalived: bool) -> None:
    """Agent log lines around the median and the worst trial (pulse only)."""
    done = [t for t in result.trials if t.gap is not None]
    if keepalived or not result.trials:
        return
    picks = []
    if done:
        ordered = sorted(done, key=lambda t: t.gap or 0.0)
        picks += [ordered[len(ordered) // 2], ordered[-1]]
    picks += [t for t in result.trials if t.gap is None][:1]
    for t in picks:
        result.timelines[t.index] = log_timeline(lab, t.wall_fault, before=0.3,
                                                 after=(t.gap or 5.0) + 0.3)


def _save_logs(lab: Lab, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    if lab.log_dir.is_dir():
        shutil.copytree(lab.log_dir, dest, dirs_exist_ok=True)


class _Runner:
    """The trials of one scenario on one running lab."""

    def __init__(self, sc: Scenario, lab: Lab, probes: ProbeLog,
                 keepalived: Keepalived | None, say: Callable[[str], None]) -> None:
        self.sc, self.lab, self.probes, self.keepalived, self.say = (
            sc, lab, probes, keepalived, say)

    def settle(self) -> str:
        # keepalived preempts: a returning r1 takes the VIP back; hold past its master_down.
        if self.keepalived is not None:
            return wait_stable(self.lab, self.probes, etcd=False, hold=4.0, timeout=60)
        return wait_stable(self.lab, self.probes, etcd=True, hold=1.0, timeout=60)

    def trial(self, index: int) -> Trial:
        old = self.settle()
        time.sleep(random.uniform(0.0, 0.5))
        t_fault, wall_fault = time.monotonic(), time.time()
        note = self.fault(old)
        new = self.wait_served(old)
        found = outage(self.probes.since(t_fault - 2.0), t_fault)
        if new is None:
            note = (note + " no other router served within "
                    f"{RECOVERY_TIMEOUT:g} s").strip()
        self.undo(old)
        return Trial(index, old, new, found.gap if new is not None else None, found.failed,
                     wall_fault, note)

    def fault(self, active: str) -> str:
        fault = self.sc.fault
        if fault == "crash":
            if self.keepalived is not None:
                self.keepalived.crash(active)
            else:
                self.lab.kill(active, link_down=True)
            return ""
        if fault == "sigterm":
            pid = self.lab.pid(active)
            if pid is None:
                raise LabError(f"the agent of {active} is not running")
            os.kill(pid, signal.SIGTERM)
            return ""
        if fault == "switchover":
            proc = lvsctl_in(self.lab.topology, "client", "switchover", "--wait", "10",
                             timeout=30)
            if proc.returncode != 0:
                return f"lvsctl switchover failed: {(proc.stderr or proc.stdout).strip()}"
            return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        raise ValueError(f"unknown fault {fault!r}")

    def wait_served(self, old: str) -> str | None:
        """Wait until another router holds the VIP and the service answers again."""
        new = wait_new_server(self.lab, self.probes, old, RECOVERY_TIMEOUT)
        if new is not None:
            time.sleep(0.2)  # let in-flight probes land before measuring
        return new

    def undo(self, old: str) -> None:
        """Bring the faulted router back (crash, SIGTERM); a switchover needs nothing."""
        fault = self.sc.fault
        if fault == "switchover":
            return
        if fault == "sigterm":
            pid = self.lab.state.pids.get(old)
            if pid is not None and not wait_gone(pid, self.lab.ns(old), within=10):
                self.lab.kill(old)
        if self.keepalived is not None:
            self.keepalived.restart(old)
        else:
            self.lab.start(old)
