"""What the failover benchmark asks of the lab: who holds the VIP, is the cluster settled,
the prober's records, a fast-eviction config, the agents' log lines around a fault.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bench.failover_probe import Probe, read_probes
from cluster.keys import Keys
from lvslab import Lab, LabError
from lvslab.config_file import lab_lvs_cf
from lvslab.procs import PYTHON
from lvslab.topology import Topology

PROBE_SCRIPT = Path(__file__).with_name("failover_probe.py")

# Agent log lines worth showing around a failover (the sequence of a takeover).
TIMELINE_RE = re.compile(
    r"heartbeat|lease|campaign|leader|candidate|active|backup|VIP|vip|GARP|garp|arp|"
    r"evict|switchover|released|takeover|dead|alive|ERROR|WARNING|Traceback", re.I)
NOISE_RE = re.compile(r"listening on|PeerRestarted|PeerAlive|scheduler '|granted \(TTL")


def timed_config(topo: Topology, keepalive: float, deadtime: float,
                 fast_eviction: bool = True) -> str:
    """The lab's lvs.cf with other heartbeat timers (and fast eviction, by default)."""
    text = lab_lvs_cf(topo)
    text, n1 = re.subn(r"(?m)^keepalive = .*$", f"keepalive = {keepalive:g}", text)
    extra = "\nfast_eviction = 1" if fast_eviction else ""
    text, n2 = re.subn(r"(?m)^deadtime = .*$", f"deadtime = {deadtime:g}{extra}", text)
    if (n1, n2) != (1, 1):
        raise LabError("the lab's generated lvs.cf changed shape: cannot derive the timers")
    return text


def fast_config(topo: Topology) -> str:
    """The lab's lvs.cf with fast eviction, keepalive 0.1 s and deadtime 0.5 s."""
    return timed_config(topo, 0.1, 0.5)


def bfd_config(topo: Topology) -> str:
    """BFD-class timers: keepalive 0.03 s, deadtime 0.1 s, fast eviction."""
    return timed_config(topo, 0.03, 0.1)


def vip_holders(lab: Lab) -> list[str]:
    """Routers whose eth0 holds the VIP now (not the kernel's view of a dead link's)."""
    out = []
    for r in lab.routers:
        proc = lab.exec(r, "ip", "-j", "-4", "addr", "show", "dev", "eth0", timeout=10)
        try:
            ifaces = json.loads(proc.stdout or "[]")
        except ValueError:
            continue
        for iface in ifaces:
            if "UP" in iface.get("flags", []) and any(
                    a.get("local") == lab.vip for a in iface.get("addr_info", [])):
                out.append(r)
    return out


def wait_new_server(lab: Lab, probes: ProbeLog, old: str, timeout: float) -> str | None:
    """The router other than ``old`` that holds the VIP, once it alone does and the probes
    see the service healthy; None if that takes longer than ``timeout`` seconds."""
    found: list[str] = []

    def served() -> bool:
        holders = vip_holders(lab)
        if len(holders) == 1 and holders[0] != old and probes.healthy():
            found.append(holders[0])
            return True
        return False

    try:
        wait_until("another router serving the VIP", served, timeout, every=0.05)
    except LabError:
        return None
    return found[-1]


def etcd_roles(lab: Lab) -> dict[str, str]:
    """{router: role} of the routers registered in etcd (read with etcdctl from the client)."""
    keys = Keys(lab.topology.cluster)
    proc = lab.exec("client", "etcdctl", f"--endpoints={lab.etcd_url}", "--command-timeout=2s",
                    "get", "--prefix", keys.nodes_prefix, "--print-value-only", timeout=10)
    roles = {}
    for line in proc.stdout.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "node" in doc:
            roles[str(doc["node"])] = str(doc.get("role", "?"))
    return roles


class ProbeLog:
    """The prober running in the client namespace, and its records read incrementally."""

    def __init__(self, lab: Lab, path: Path, interval: float = 0.01, timeout: float = 0.1):
        self.path = path
        self.probes: list[Probe] = []
        self._offset = 0
        self._tail = ""
        path.unlink(missing_ok=True)
        self.proc = lab.popen("client", PYTHON, str(PROBE_SCRIPT), "--host", lab.vip,
                              "--interval", interval, "--timeout", timeout, "--out", path)

    def poll(self) -> list[Probe]:
        """Read what the prober wrote since the last call; every record so far."""
        if self.proc.poll() is not None and not self.path.exists():
            raise LabError(f"the prober exited with {self.proc.returncode}")
        try:
            with open(self.path) as f:
                f.seek(self._offset)
                chunk = f.read()
                self._offset = f.tell()
        except FileNotFoundError:
            return self.probes
        text = self._tail + chunk
        lines = text.split("\n")
        self._tail = lines.pop()  # an unfinished line waits for the next poll
        self.probes.extend(read_probes(lines))
        return self.probes

    def since(self, t: float) -> list[Probe]:
        return [p for p in self.poll() if p.t >= t]

    def healthy(self, span: float = 0.3, now: float | None = None) -> bool:
        """Every probe of the last ``span`` seconds (ending 0.15 s ago) succeeded."""
        now = time.monotonic() if now is None else now
        recent = [p for p in self.since(now - span - 0.15) if p.t <= now - 0.15]
        # In the QEMU guest a probe takes 40-80 ms: fewer of them fit in the span.
        need = 3 if os.environ.get("PIRANHA_VM_OUT") else span / 0.03
        return len(recent) >= need and all(p.ok for p in recent)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except Exception:
                self.proc.kill()
        self.poll()


def wait_until(what: str, cond: Callable[[], bool], timeout: float, every: float = 0.1) -> float:
    """Wait until ``cond()``; the seconds it took. ``LabError`` naming ``what`` on timeout."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - start


def wait_stable(lab: Lab, probes: ProbeLog, *, etcd: bool = True, hold: float = 1.0,
                timeout: float = 60.0) -> str:
    """Wait until exactly one router holds the VIP for ``hold`` s, the service answers and
    (``etcd``: pulse) every router is registered, one active and the rest backup; the active.
    """
    state: dict[str, object] = {"holder": None, "since": 0.0}

    def settled() -> bool:
        holders = vip_holders(lab)
        now = time.monotonic()
        holder = holders[0] if len(holders) == 1 else None
        if holder != state["holder"]:
            state.update(holder=holder, since=now)
            return False
        if holder is None or now - float(state["since"]) < hold or not probes.healthy():
            return False
        if etcd:
            roles = etcd_roles(lab)
            want = {r: "active" if r == holder else "backup" for r in lab.routers}
            return roles == want
        return True

    wait_until("a settled cluster (one VIP holder, all routers registered)", settled,
               timeout, every=0.2)
    return str(state["holder"])


def log_timeline(lab: Lab, wall_fault: float, before: float = 3.0, after: float = 6.0,
                 hosts: list[str] | None = None, limit: int = 60) -> list[str]:
    """Agent log lines of ``hosts`` (default: every router) near a fault, in time order."""
    out: list[tuple[float, str]] = []
    for host in hosts or lab.routers:
        try:
            text = lab.log_path(host).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            ts = _log_time(line)
            if ts is None or not wall_fault - before <= ts <= wall_fault + after:
                continue
            if TIMELINE_RE.search(line) and not NOISE_RE.search(line):
                rest = line[24:] if len(line) > 24 else line
                out.append((ts, f"{ts - wall_fault:+7.3f}s {rest}"))
    out.sort()
    return [line for _, line in out][:limit]


def _log_time(line: str) -> float | None:
    """Wall time of a ``logging`` line ("2026-01-02 03:04:05,678 ...")."""
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None
