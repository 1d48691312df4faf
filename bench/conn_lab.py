"""The connection benchmark in the lab: data planes, the lab's config, the client, faults.

One lab per data plane and scheduler (prefix ``bcn``; a second one with preemption for
the failback fault). In it the HTTP prober of bench/failover_probe.py measures the
failover gap, and per trial bench/conn_client.py holds C connections to the line echo
through the VIP while the fault happens; :class:`Runner` turns that into a
:class:`~bench.conn_report.Trial`.

Data planes (``--plane``): what the agent runs and which lvs.cf settings turn state sync
on. A plane whose mechanism is not there (no IPVS in this kernel, no conntrackd process,
no sync daemon, a setting the config refuses) is skipped with the reason, never measured
as something it is not.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.conn_report import Trial, resolved, trial_from_records
from bench.failover_lab import ProbeLog, vip_holders, wait_new_server, wait_stable, wait_until
from bench.failover_probe import outage
from lvslab import Lab, LabError, Topology, netns, services
from lvslab.config_file import lab_lvs_cf, validate
from lvslab.echo import ECHO_PORT
from lvslab.procs import PYTHON, wait_gone

PREFIX = "bcn"
#: How long a new lab may take to serve: a pulse starts in 35-80 s in the QEMU guest
#: (scripts/ipvs_vm.py sets PIRANHA_VM_OUT there), in about a second on the host.
SERVED_WITHIN = 180.0 if os.environ.get("PIRANHA_VM_OUT") else 30.0
#: lvsctl switchover: seconds it waits for the new active (the guest's agents are slow to
#: answer and lvsctl itself takes 10-20 s to start there).
SWITCHOVER_WAIT = 90.0 if os.environ.get("PIRANHA_VM_OUT") else 10.0
PUBLIC, PRIVATE = "10.91.0.0/24", "10.91.1.0/24"
SOURCE_OFFSET = 150  # client source addresses: .150, .151, ... of the public LAN
MAX_SOURCES = 100
CLIENT_SCRIPT = Path(__file__).with_name("conn_client.py")
PROBE_EVERY = 0.02  # the failover-gap prober: one HTTP GET through the VIP every 20 ms
RECOVERY_TIMEOUT = 20.0


@dataclass(frozen=True)
class Plane:
    """A data plane and its connection-state sync, as the lab runs it."""

    name: str
    dataplane: str  # pulse --dataplane
    settings: tuple[tuple[str, str], ...] = ()  # lvs.cf globals that turn sync on
    mechanism: str = ""  # "" | "conntrackd" | "syncd": what must run on the active router
    title: str = ""


PLANES: dict[str, Plane] = {p.name: p for p in (
    Plane("nftables", "nftables", title="nftables, no state sync (main today)"),
    # conntrackd, run by the agent (issue 10); the setting is the one the conntrackd branch
    # reads: --set KEY=VALUE adds or overrides globals if it differs.
    Plane("nftables+conntrackd", "nftables", (("syncdaemon", "1"), ("syncd_iface", "eth1")),
          "conntrackd", "nftables + conntrackd (FTFW on the private link)"),
    Plane("ipvs", "ipvs", title="IPVS, no sync daemon"),
    Plane("ipvs+syncd", "ipvs", (("syncdaemon", "1"), ("syncd_iface", "eth1")), "syncd",
          "IPVS + its connection sync daemon"),
)}


@dataclass
class Options:
    """How big a trial is and how the lab is configured (from the command line)."""

    connections: int = 200
    every: float = 0.1
    sources: int = 20
    trials: int = 3
    settle_max: float = 30.0  # s after the fault before unresolved connections count stuck
    hold: float = 1.0  # s after the service is back before a trial may end
    settings: tuple[tuple[str, str], ...] = ()  # extra lvs.cf globals (--set)
    virtual_settings: tuple[tuple[str, str], ...] = ()  # extra echo-virtual keys
    agent_args: tuple[str, ...] = ()
    workdir: Path = Path("/tmp/bench-connections")
    prefix: str = PREFIX
    public: str = PUBLIC
    private: str = PRIVATE
    routers: int = 3


# ---------------------------------------------------------------- the lab's config


def lab_config(topo: Topology, scheduler: str, settings: Sequence[tuple[str, str]] = (),
               virtual_settings: Sequence[tuple[str, str]] = (), preempt: bool = False
               ) -> str:
    """The lab's lvs.cf with the echo virtual's scheduler, extra globals (replacing ones of
    the same name) and extra keys in the echo virtual; ``preempt``: failback on."""
    text = lab_lvs_cf(topo)
    glob = list(settings)
    if preempt:
        glob.append(("reservation_conflict_action", "preempt"))
    for key, value in glob:
        line = f"{key} = {value}"
        text, n = re.subn(rf"(?m)^{re.escape(key)} = .*$", line, text)
        if not n:
            text = text.replace("heartbeat = 1\n", f"heartbeat = 1\n{line}\n", 1)
    head, sep, echo = text.partition("virtual echo {\n")
    if not sep:
        raise LabError("the lab's generated lvs.cf has no 'virtual echo' block")
    extra = "".join(f"    {k} = {v}\n" for k, v in virtual_settings)
    echo, n = re.subn(r"(?m)^    scheduler = .*\n", f"    scheduler = {scheduler}\n{extra}",
                      echo, count=1)
    if not n:
        raise LabError("the lab's echo virtual has no scheduler line")
    return head + sep + echo


def agent_cmd(plane: Plane, extra: Sequence[str] = ()) -> list[str]:
    """The lab's pulse command with the plane's data plane and ``extra`` arguments."""
    cmd = services.default_agent_cmd()
    i = cmd.index("--dataplane")
    cmd[i + 1] = plane.dataplane
    return [*cmd, *extra]


def source_addresses(topo: Topology, n: int) -> list[str]:
    """The client's ``n`` source addresses (.150 upwards on the public LAN)."""
    if not 1 <= n <= MAX_SOURCES:
        raise LabError(f"--sources must be 1..{MAX_SOURCES}, not {n}")
    base = topo.host("client").address().rsplit(".", 1)[0]
    return [f"{base}.{SOURCE_OFFSET + i}" for i in range(n)]


def plane_problem(plane: Plane) -> str:
    """Why ``plane`` cannot run on this machine at all ("" if it can)."""
    if plane.dataplane == "ipvs" and not Path("/proc/net/ip_vs").exists():
        return ("this kernel has no IPVS: run it in the QEMU guest "
                "(scripts/ipvs_vm.py -- .venv/bin/python bench/connections.py ...)")
    return ""


def mechanism_problem(lab: Lab, plane: Plane, active: str) -> str:
    """Why the plane's sync mechanism is not running on the active router ("" if it is)."""
    if plane.mechanism == "conntrackd":
        names = [_comm(p) for p in netns.ns_pids(lab.ns(active))]
        if "conntrackd" not in names:
            return (f"no conntrackd process runs on the active router {active} with "
                    f"{_settings(plane.settings)} (is the conntrackd branch merged? its "
                    "setting may differ: --set KEY=VALUE)")
    if plane.mechanism == "syncd":
        out = lab.exec(active, "ipvsadm", "-L", "--daemon", timeout=10)
        if "master sync daemon" not in out.stdout:
            return (f"no IPVS master sync daemon on the active router {active} "
                    f"({(out.stdout or out.stderr).strip() or 'ipvsadm --daemon: none'})")
    return ""


def scheduler_note(lab: Lab, scheduler: str) -> str:
    """What the agents logged about the echo virtual's scheduler (a fallback), if anything."""
    pattern = re.compile(rf":{ECHO_PORT}: (scheduler '{re.escape(scheduler)}' [^\n]*)")
    for router in lab.routers:
        with contextlib.suppress(OSError):
            found = pattern.search(lab.log_path(router).read_text(errors="replace"))
            if found:
                return f"the agent logged: {found.group(1).strip()[:160]}"
    return ""


def _settings(settings: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"`{k} = {v}`" for k, v in settings) or "no extra settings"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# ---------------------------------------------------------------- the client


class ClientProc:
    """bench/conn_client.py in the client namespace, driven line by line."""

    def __init__(self, lab: Lab, connections: int, every: float, sources: Sequence[str],
                 log: Path, port: int = ECHO_PORT) -> None:
        self.log = log
        with open(log, "ab") as err:
            self.proc = lab.popen("client", PYTHON, str(CLIENT_SCRIPT), "--host", lab.vip,
                                  "--port", port, "--connections", connections,
                                  "--every", every, "--sources", ",".join(sources),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.close()
            tail = self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""
            raise LabError(f"the connection client did not answer within {timeout:g} s "
                           f"(exit {self.proc.poll()}): {tail}")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def _ask(self, command: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\n".encode())
        self.proc.stdin.flush()
        return self._read(timeout)

    def ready(self, timeout: float = 30.0) -> dict[str, Any]:
        return self._read(timeout)

    def status(self) -> list[list[Any]]:
        return list(self._ask("status", 10.0)["status"])

    def stop(self) -> list[dict[str, Any]]:
        records = list(self._ask("stop", 30.0)["records"])
        self.close()
        return records

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# ---------------------------------------------------------------- faults and trials


def crash(lab: Lab, router: str) -> None:
    """Links down, then SIGKILL of the agent and every other process of the router (its
    VIP guardian, a conntrackd...)."""
    lab.kill(router, link_down=True)
    for pid in netns.ns_pids(lab.ns(router)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in netns.ns_pids(lab.ns(router)):
        wait_gone(pid, lab.ns(router))


def reboot(lab: Lab, router: str) -> None:
    """Bring a crashed router back as after a reboot: empty conntrack table, links up,
    agent started."""
    lab.exec(router, "conntrack", "-F", timeout=10)  # absent tool: nothing to flush
    lab.start(router)


@dataclass
class Runner:
    """Trials on one running lab; ``probes`` is the failover-gap prober."""

    lab: Lab
    probes: ProbeLog
    opts: Options
    sources: list[str]
    say: Callable[[str], None] = print
    tag: str = ""  # names the client logs
    _n: int = field(default=0, init=False)

    def settle(self, etcd: bool = True) -> str:
        return wait_stable(self.lab, self.probes, etcd=etcd, hold=1.0,
                           timeout=max(60.0, SERVED_WITHIN))  # a restarted agent: slow in QEMU

    def client(self) -> ClientProc:
        self._n += 1
        log = self.opts.workdir / f"client-{self.tag}{self._n}.log"
        client = ClientProc(self.lab, self.opts.connections, self.opts.every, self.sources,
                            log)
        try:
            ready = client.ready(timeout=30.0)
        except BaseException:
            client.close()
            raise
        if ready.get("failed"):
            self.say(f"    {ready['failed']} connection(s) did not open: {ready.get('errors')}")
        return client

    def keep(self, fault: str, index: int, t_fault: float, t_stop: float,
             records: list[dict[str, Any]]) -> None:
        """The client's records of a trial, for a closer look (in the workdir)."""
        path = self.opts.workdir / f"records-{self.tag}-{fault}-{index}.json"
        path.write_text(json.dumps({"t_fault": t_fault, "t_stop": t_stop,
                                    "records": records}))

    def trial(self, fault: str, index: int) -> Trial:
        """One trial of ``fault``: crash | switchover | sigterm | failback (the lab must
        have preemption) | none | server (SIGKILL of rs1's httpd and echo)."""
        if fault == "failback":
            return self._failback(index)
        old = self.settle()
        client = self.client()
        try:
            time.sleep(1.0 + random.uniform(0.0, 0.5))
            t_fault = time.monotonic()
            note = self.fault(fault, old)
            new, t_back = (old, time.monotonic()) if fault in ("none", "server") \
                else self.wait_served(old)
            t_stop = self.resolve(client, t_fault, t_back)
            records = client.stop()
        finally:
            client.close()
        self.keep(fault, index, t_fault, t_stop, records)
        gap = None if fault == "server" or new is None else self.gap(t_fault)
        if new is None:
            note = (note + f" no other router served within {RECOVERY_TIMEOUT:g} s").strip()
        self.undo(fault, old)
        return trial_from_records(index, old, new, gap, t_fault, t_stop, records, note)

    def _failback(self, index: int) -> Trial:
        top = self.lab.routers[0]  # the highest priority: it preempts
        if self.settle() != top and not self._wait_holder(top, self.timeout_failback()):
            raise LabError(f"{top} (the highest priority) did not become active: "
                           "is reservation_conflict_action = preempt in the config?")
        self.settle()
        crash(self.lab, top)
        mid, _ = self.wait_served(top)
        if mid is None:
            raise LabError(f"nobody took over from {top} before the failback")
        self.settle(etcd=False)
        client = self.client()
        try:
            time.sleep(1.0 + random.uniform(0.0, 0.5))
            t_fault = time.monotonic()
            reboot(self.lab, top)
            back = self._wait_holder(top, self.timeout_failback())
            t_stop = self.resolve(client, t_fault, time.monotonic())
            records = client.stop()
        finally:
            client.close()
        self.keep("failback", index, t_fault, t_stop, records)
        note = "" if back else f"{top} did not take the VIP back"
        gap = self.gap(t_fault) if back else None
        return trial_from_records(index, mid, top if back else None, gap, t_fault, t_stop,
                                  records, note)

    def timeout_failback(self) -> float:
        return RECOVERY_TIMEOUT + 30.0  # hold_down, the warm-up gate, the switchover

    def fault(self, fault: str, active: str) -> str:
        if fault == "crash":
            crash(self.lab, active)
        elif fault == "sigterm":
            pid = self.lab.pid(active)
            if pid is None:
                raise LabError(f"the agent of {active} is not running")
            os.kill(pid, signal.SIGTERM)
        elif fault == "switchover":
            proc = services.lvsctl_in(self.lab.topology, "client", "switchover", "--wait",
                                      f"{SWITCHOVER_WAIT:g}", timeout=SWITCHOVER_WAIT + 60)
            if proc.returncode != 0:
                return f"lvsctl switchover failed: {(proc.stderr or proc.stdout).strip()}"
        elif fault == "server":
            self.lab.kill("rs1")
        elif fault != "none":
            raise ValueError(f"unknown fault {fault!r}")
        return ""

    def undo(self, fault: str, old: str) -> None:
        if fault == "crash":
            reboot(self.lab, old)
        elif fault == "sigterm":
            pid = self.lab.state.pids.get(old)
            if pid is not None and not wait_gone(pid, self.lab.ns(old), within=10):
                self.lab.kill(old)
            self.lab.start(old)
        elif fault == "server":
            self.lab.start("rs1")

    def wait_served(self, old: str) -> tuple[str | None, float]:
        """Another router holds the VIP and new connections are served: (it, when)."""
        new = wait_new_server(self.lab, self.probes, old, RECOVERY_TIMEOUT)
        return new, time.monotonic()

    def _wait_holder(self, router: str, within: float) -> bool:
        try:
            wait_until(f"{router} holding the VIP", lambda: vip_holders(self.lab) == [router]
                       and self.probes.healthy(), within, every=0.05)
        except LabError:
            return False
        return True

    def resolve(self, client: ClientProc, t_fault: float, t_back: float) -> float:
        """Wait until every connection has settled (or ``settle_max`` after the fault);
        the end of the trial."""
        while True:
            now = time.monotonic()
            if now >= t_back + self.opts.hold and resolved(client.status(), t_fault, now):
                return now
            if now >= t_fault + self.opts.settle_max:
                return now
            time.sleep(0.25)

    def gap(self, t_fault: float) -> float | None:
        time.sleep(0.2)  # in-flight probes land
        return outage(self.probes.since(t_fault - 2.0), t_fault).gap


# ---------------------------------------------------------------- one lab


@contextlib.contextmanager
def running_lab(opts: Options, plane: Plane, scheduler: str, preempt: bool, tag: str,
                say: Callable[[str], None] = print) -> Any:
    """A lab for ``plane`` and ``scheduler`` (preemption on for failback), settled, with
    the client's source addresses and the gap prober: (lab, runner). Torn down after."""
    topo = Topology(opts.prefix, opts.public, opts.private, routers=opts.routers, servers=2)
    config = opts.workdir / f"lvs-{tag}.cf"
    text = lab_config(topo, scheduler, [*plane.settings, *opts.settings],
                      opts.virtual_settings, preempt)
    validate(text, str(config))  # LabError: the config refuses it (the caller skips)
    config.write_text(text)
    lab = Lab(opts.prefix, opts.public, opts.private, routers=opts.routers, servers=2,
              agent_cmd=agent_cmd(plane, opts.agent_args), config=config)
    probes: ProbeLog | None = None
    try:
        lab.up()
        lab.wait_served(SERVED_WITHIN)
        sources = source_addresses(topo, opts.sources)
        for addr in sources:
            netns.add_addr(lab.ns("client"), "eth0", f"{addr}/{topo.prefixlen('public')}")
        probes = ProbeLog(lab, opts.workdir / f"probes-{tag}.jsonl", interval=PROBE_EVERY)
        runner = Runner(lab, probes, opts, sources, say, tag)
        runner.settle()
        yield lab, runner
    finally:
        if probes is not None:
            probes.stop()
        dest = opts.workdir / f"logs-{tag}"
        if lab.log_dir.is_dir():
            import shutil

            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(lab.log_dir, dest)
        lab.down()
