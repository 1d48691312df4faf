"""Kit for the failover tests: real labs (etcd, pulse agents, namespaces), the "never two
owners" watcher, and helpers to wait for and read the cluster's state.

    with lab_for("a", routers=3) as c:        # a Cluster: the lab plus helpers
        active = c.restore()                  # whole again: no faults, every agent up
        with c.watch(http=True) as w:         # ARP probers on both LANs, HTTP prober
            c.lab.kill(active, link_down=True)
            c.wait_one_holder(other_than=active)
        w.report.assert_one_owner_at_a_time() # the ownership analysis of every VIP

Every lab is named ``fo<pid><tag>`` (``tag``: one letter) with its own subnets; labs of dead
runs are removed first. Everything blocks: the tests are plain functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cluster.keys import Keys
from lvslab import Lab, LabError, Topology, netns, procs
from lvslab.config_file import lab_lvs_cf
from support import arpwatch

T = TypeVar("T")
PROBE_EVERY = 0.02  # seconds between ARP probes of each VIP
HOLD = 5 * PROBE_EVERY  # answers further apart split an ownership interval
WAIT = 15.0  # generous timeout for anything the cluster should do
KEEP = Path(os.environ.get("FAILOVER_LOGS", "/tmp/failover-logs"))  # logs of the last run
LVSCTL = str(Path(sys.executable).parent / "lvsctl")
netns_mark = pytest.mark.netns


def prefix(tag: str) -> str:
    """Lab prefix of this run: ``fo<pid><tag>`` (at most 10 characters)."""
    return f"fo{os.getpid()}{tag}"


def remove_dead_labs() -> None:
    """Tear down labs (and logs) of earlier runs whose process is gone."""
    for ns in netns.namespaces():
        m = re.match(r"^fo(\d+)([a-z])-", ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            Lab(f"fo{m.group(1)}{m.group(2)}").down()
    for old in KEEP.glob("[0-9]*"):
        if not os.path.exists(f"/proc/{old.name}"):
            shutil.rmtree(old, ignore_errors=True)


def wait_for(probe: Callable[[], T], within: float = WAIT, every: float = 0.05,
             what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; that value. Fails after ``within``."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g}s waiting for {what} (last: {value!r})")
        time.sleep(every)


def write_config(path: Path, tag: str, routers: int, servers: int = 1,
                 **settings: object) -> Path:
    """The lab's usual lvs.cf with global ``settings`` replaced or added (e.g. keepalive=0.1)."""
    public, private = subnets(tag)
    text = lab_lvs_cf(Topology(prefix(tag), public, private, routers, servers))
    for key, value in settings.items():
        line = f"{key} = {value}"
        text, n = re.subn(rf"(?m)^{key} = .*$", line, text)
        if not n:
            text = text.replace("heartbeat = 1\n", f"heartbeat = 1\n{line}\n", 1)
    path.write_text(text)
    return path


def subnets(tag: str) -> tuple[str, str]:
    """Public and private /24 of the lab ``tag`` (10.80.x.0 upwards, one pair per letter)."""
    n = 80 + ord(tag) - ord("a")
    return f"10.{n}.0.0/24", f"10.{n}.1.0/24"


@contextlib.contextmanager
def lab_for(tag: str, routers: int = 2, servers: int = 1, etcd_members: int | None = None,
            **settings: object) -> Iterator[Cluster]:
    """A running lab with real agents, torn down afterwards; waits for its first active.

    ``etcd_members``: 1, 3 or 5; by default ``$FAILOVER_ETCD_MEMBERS``, else 1 (a test not
    about etcd does not need a cluster; ``FAILOVER_ETCD_MEMBERS=3`` runs them all on one).
    ``settings``: lvs.cf globals that differ from the lab's (e.g. ``fast_eviction=1``).
    The agents' logs and the watchers' records are kept in ``KEEP/<pid>/lab-<tag>`` (until
    the next run).
    """
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    remove_dead_labs()
    keep = KEEP / str(os.getpid()) / f"lab-{tag}"
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    config = write_config(keep / "lvs.cf", tag, routers, servers, **settings) if settings else None
    public, private = subnets(tag)
    with Lab(prefix(tag), public, private, routers=routers, servers=servers,
             config=config,
             etcd_members=etcd_members or int(os.environ.get("FAILOVER_ETCD_MEMBERS", 1)),
             ) as lab:
        try:
            cluster = Cluster(lab)
            cluster.wait_healthy()
            yield cluster
        finally:
            shutil.copytree(lab.state_dir, keep, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("etcd-data", "*.key"))


# ---------------------------------------------------------------- the cluster


class Cluster:
    """A lab and what the tests ask of it: who holds the VIP, who leads, faults, restore."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.routers = lab.routers
        self.vip, self.gateway = lab.vip, lab.gateway
        self.macs = {r: self.mac(r, "eth0") for r in self.routers}
        self.private_macs = {r: self.mac(r, "eth1") for r in self.routers}
        self.names = {m: r for r, m in [*self.macs.items(), *self.private_macs.items()]}
        self.records = lab.state_dir / "watch"
        self.records.mkdir(exist_ok=True)

    def mac(self, host: str, ifname: str = "eth0") -> str:
        return str(netns.ip_json(self.lab.ns(host), "link", "show", "dev", ifname)[0]["address"])

    # -- who holds the VIPs ----------------------------------------------------------------

    def holders(self, ip: str | None = None) -> list[str]:
        """Routers that have ``ip`` (default: the VIP) on an interface now."""
        ip = ip or self.vip
        out = []
        for r in self.routers:
            addrs = netns.ip_json(self.lab.ns(r), "-4", "addr", "show")
            if any(a.get("local") == ip for link in addrs for a in link.get("addr_info", [])):
                out.append(r)
        return out

    def one_holder(self) -> str | None:
        """The router holding both the VIP and the NAT gateway, if exactly one does."""
        vip, gw = self.holders(self.vip), self.holders(self.gateway)
        return vip[0] if len(vip) == 1 and vip == gw else None

    def wait_one_holder(self, within: float = WAIT, other_than: str | None = None) -> str:
        """Wait until exactly one router holds the VIPs (not ``other_than``); which one."""
        return wait_for(lambda: (r := self.one_holder()) != other_than and r, within,
                        what=f"exactly one VIP holder other than {other_than}")

    # -- etcd and metrics --------------------------------------------------------------------

    def lvsctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``lvsctl --etcd <every etcd member> ARGS`` run in the client namespace."""
        return self.lab.exec("client", LVSCTL, "--etcd", self.lab.etcd_endpoints, *args,
                             timeout=timeout)

    def status(self) -> dict[str, Any] | None:
        """``lvsctl status -o json``, or None if etcd does not answer."""
        proc = self.lvsctl("--timeout", "2", "status", "-o", "json")
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def leader(self) -> str | None:
        """The router named in the leader key (None: no leader or etcd unreachable)."""
        st = self.status()
        return st["leader"]["node"] if st and st.get("leader") else None

    def metrics(self, router: str) -> dict[str, float]:
        """The router's Prometheus metrics, ``{'name{labels}': value}`` ({} if unreachable)."""
        url = f"http://{self.lab.address(router)}:9100/metrics"
        proc = self.lab.exec("client", "curl", "-s", "-m", "2", url)
        out = {}
        for line in proc.stdout.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def role(self, router: str) -> str | None:
        """The role the router's metrics report (None if unreachable)."""
        m = self.metrics(router)
        return next((r for r in ("active", "candidate", "backup")
                     if m.get(f'lvs_role{{role="{r}"}}') == 1.0), None)

    def roles(self) -> dict[str, str | None]:
        return {r: self.role(r) for r in self.routers}

    # -- processes ---------------------------------------------------------------------------

    def kill_family(self, router: str) -> None:
        """SIGKILL the agent and every other process in its namespace (its VIP guardian)
        first, links up: only the kernel's address lifetime can remove its VIPs then."""
        agent = self.lab.pid(router)
        for pid in netns.ns_pids(self.lab.ns(router)):
            if pid != agent:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.lab.kill(router)

    def family(self, router: str) -> tuple[int, list[int]]:
        """The router's agent pid and the other processes in its namespace (its guardian)."""
        agent = self.lab.pid(router)
        assert agent is not None, f"{router} has no running agent"
        return agent, [p for p in netns.ns_pids(self.lab.ns(router)) if p != agent]

    @contextlib.contextmanager
    def frozen(self, router: str, guardian: bool = False) -> Iterator[float]:
        """SIGSTOP the router's agent (and with ``guardian`` every other process in its
        namespace) for the block; yields the time of the freeze. SIGCONT on exit."""
        agent, others = self.family(router)
        pids = [agent, *others] if guardian else [agent]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield time.monotonic()
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def leader_events(self) -> Iterator[list[LeaderEvent]]:
        """``etcdctl watch`` of the leader key from the client: every PUT (with the node it
        names) and DELETE, stamped with its arrival time."""
        key = Keys(self.lab.topology.cluster).leader
        proc = self.lab.popen("client", "etcdctl", "--endpoints", self.lab.etcd_endpoints, "watch",
                              key, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        events: list[LeaderEvent] = []

        def read() -> None:
            assert proc.stdout is not None
            lines = iter(proc.stdout)
            for line in lines:
                kind = line.strip().decode(errors="replace")
                if kind == "DELETE":
                    events.append(LeaderEvent(time.monotonic(), kind))
                    next(lines, None)  # the key
                elif kind == "PUT":
                    at = time.monotonic()
                    next(lines, None)  # the key
                    value = next(lines, b"{}")
                    try:
                        node = str(json.loads(value).get("node", ""))
                    except (ValueError, AttributeError):
                        node = ""
                    events.append(LeaderEvent(at, kind, node))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            time.sleep(0.3)  # etcdctl connects and starts watching
            yield events
        finally:
            proc.terminate()
            proc.wait(5)
            reader.join(5)

    def terminate(self, router: str) -> None:
        """SIGTERM the router's agent (graceful hand-over); returns at once."""
        pid = self.lab.pid(router)
        assert pid is not None, f"{router} has no running agent"
        os.kill(pid, signal.SIGTERM)

    def wait_exit(self, router: str) -> None:
        wait_for(lambda: not self.lab.alive(router), what=f"{router}'s agent to exit")

    # -- back to normal ------------------------------------------------------------------------

    def healthy(self) -> str | None:
        """The active router if the cluster is whole: every agent up, one holder of both
        VIPs, active by its metrics and in etcd, every peer alive on every router."""
        if not all(self.lab.alive(r) for r in self.routers):
            return None
        holder = self.one_holder()
        if holder is None:
            return None
        for r in self.routers:
            m = self.metrics(r)
            want = "active" if r == holder else "backup"
            if m.get(f'lvs_role{{role="{want}"}}') != 1.0:
                return None
            if any(m.get(f'lvs_peer_alive{{peer="{p}"}}') != 1.0 for p in self.routers
                   if p != r):
                return None
        return holder if self.leader() == holder else None

    def wait_healthy(self, within: float = 20.0) -> str:
        return wait_for(self.healthy, within, every=0.2, what="a whole cluster")

    def restore(self) -> str:
        """Undo every fault, restart what is dead, wait until whole; the active router."""
        self.lab.clear_faults()
        self.lab.start_etcd()  # the members that are down; waits for a leader
        for r in self.routers:
            if not self.lab.alive(r):
                self.lab.start_agent(r)
        return self.wait_healthy()

    # -- watching ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self, http: bool = False, owned: bool = True, every: float = PROBE_EVERY,
              ) -> Iterator[Watch]:
        """ARP probers for the VIP (client) and the NAT gateway (a real server), and with
        ``http`` an HTTP prober of the VIP; ``watch.report`` once the block ends. ``owned``:
        wait until the probers see an owner of both before returning."""
        w = Watch(self, http, owned, every)
        try:
            yield w
        finally:
            w.stop()


class Watch:
    """Two arpwatch probers, one per LAN: the client asks for the VIP, rs1 for the gateway."""

    def __init__(self, cluster: Cluster, http: bool = False, owned: bool = True,
                 every: float = PROBE_EVERY) -> None:
        self.cluster = cluster
        n = len(list(cluster.records.glob("*-vip.jsonl")))
        self.paths = {cluster.vip: cluster.records / f"{n}-vip.jsonl",
                      cluster.gateway: cluster.records / f"{n}-gw.jsonl"}
        self.http_path = cluster.records / f"{n}-http.txt" if http else None
        self.procs: list[subprocess.Popen[bytes]] = []
        self._report: Report | None = None
        try:
            for ip, host in ((cluster.vip, "client"), (cluster.gateway, "rs1")):
                # ARP only: a dead agent's NAT rules still answer stale clients from the
                # VIP, but that is no claim of the address
                self._start(host, *arpwatch.argv("eth0", self.paths[ip], probe=[ip],
                                                 every=every))
            if self.http_path is not None:
                self._start("client", sys.executable, "-c", HTTP_PROBE, cluster.vip,
                            self.http_path, HTTP_EVERY, HTTP_TIMEOUT)
            if owned:
                wait_for(lambda: self.snapshot().owned(), what="the probers to see an owner")
            if http and owned:
                self.wait_http_ok(after=0.0, within=30)
        except BaseException:
            self._end()
            raise

    def _start(self, host: str, *cmd: object) -> None:
        proc = self.cluster.lab.popen(host, *cmd, stdout=subprocess.PIPE)
        self.procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], WAIT)
        line = proc.stdout.readline() if ready and proc.stdout else b""
        if line.strip() != b"ready":
            raise LabError(f"{cmd[1]} in {host} did not start: {line!r}")

    def wait_http_ok(self, after: float, within: float = WAIT) -> None:
        """Wait until a request started after ``after`` succeeded (the service is back)."""
        wait_for(lambda: any(r.ok and r.start > after for r in self.snapshot().http), within,
                 what="an HTTP request through the VIP to succeed")

    def snapshot(self) -> Report:
        """The analysis of what was recorded so far (the watchers keep running)."""
        c = self.cluster
        own, frames = {}, {}
        for ip, path in self.paths.items():
            macs = c.macs if ip == c.vip else c.private_macs
            events = arpwatch.read_events(path)
            own[ip] = arpwatch.ownership(events, macs.values(), vips=[ip], hold=HOLD)[ip]
            frames[ip] = tuple(e for e in events if e.kind in arpwatch.CLAIM_KINDS
                               and e.ip == ip and e.mac in c.names)
        http = read_http(self.http_path) if self.http_path else ()
        return Report(own, c.names, c.vip, http, frames)

    def stop(self) -> Report:
        """Stop the probers; the analysis of the whole record."""
        self._end()
        if self._report is None:
            self._report = self.snapshot()
        return self._report

    def _end(self) -> None:
        for proc in self.procs:
            procs.stop(proc)
        self.procs = []

    @property
    def report(self) -> Report:
        return self.stop()


@dataclass(frozen=True)
class Report:
    """Ownership of the VIP and the gateway as the probers saw it, with router names."""

    own: dict[str, arpwatch.Ownership]
    names: dict[str, str]  # MAC -> router
    vip: str
    http: tuple[Request, ...] = ()  # the HTTP prober's requests, if it ran
    frames: dict[str, tuple[arpwatch.Event, ...]] = field(default_factory=dict)  # claims

    def claims(self, router: str, start: float, end: float = float("inf"),
               ip: str | None = None) -> list[arpwatch.Event]:
        """Frames (ARP answers, gratuitous ARP, NA) in which ``router`` claimed ``ip``
        (default: every watched address) during [start, end]."""
        ips = [ip] if ip else list(self.frames)
        return [e for i in ips for e in self.frames.get(i, ())
                if self.names[e.mac] == router and start <= e.t <= end]

    def outages(self, start: float = 0.0) -> list[float]:
        """HTTP outages after ``start``: from the last success before failed requests to
        the end of the first success after them (seconds)."""
        out, last_ok, failed = [], None, False
        for req in self.http:
            if not req.ok:
                failed = failed or (last_ok is not None and req.start >= start)
            elif failed and last_ok is not None:
                out.append(req.end - last_ok)
                failed = False
            if req.ok:
                last_ok = req.end
        return out

    def outage(self, start: float = 0.0) -> float:
        """The longest HTTP outage after ``start`` (0 if none)."""
        return max(self.outages(start), default=0.0)

    def owned(self) -> bool:
        return all(o.intervals for o in self.own.values())

    def owners(self, ip: str | None = None) -> list[str]:
        """The succession of owners of ``ip`` (default the VIP), by router name."""
        return [self.names[m] for m in self.own[ip or self.vip].owners]

    def owners_during(self, start: float, end: float, ip: str | None = None) -> set[str]:
        return {self.names[m] for m in self.own[ip or self.vip].owners_during(start, end)}

    def gaps(self, start: float = 0.0, end: float = float("inf"), ip: str | None = None,
             ) -> list[float]:
        """Durations of the stretches without an owner that intersect [start, end]."""
        return [g.duration for g in self.own[ip or self.vip].gaps_during(start, end)]

    def assert_one_owner_at_a_time(self) -> None:
        """Never two owners of any VIP, no foreign claims, and the watchers really probed."""
        for ip, own in self.own.items():
            assert own.probes > 10, f"{ip}: the prober sent only {own.probes} probes"
            assert own.intervals, f"{ip}: nobody ever answered"
            assert own.overlaps == (), f"{ip}: two owners at once: {self.describe(ip)}"
            assert own.foreign == (), f"{ip}: claimed by non-routers: {own.foreign[:3]}"

    def describe(self, ip: str | None = None) -> str:
        own = self.own[ip or self.vip]
        runs = ", ".join(f"{self.names[i.mac]} {i.start:.3f}..{i.end:.3f}"
                         for i in own.intervals)
        over = ", ".join(f"{'+'.join(self.names[m] for m in o.macs)} {o.start:.3f}..{o.end:.3f}"
                         for o in own.overlaps)
        blind = ", ".join(f"{g.start:.3f}+{g.duration:.3f}" for g in own.blind)
        return f"owners [{runs}] overlaps [{over}] prober stalls [{blind}]"


@dataclass(frozen=True)
class LeaderEvent:
    """A change of the leader key seen by ``etcdctl watch``: PUT (by ``node``) or DELETE."""

    t: float
    kind: str
    node: str = ""


@dataclass(frozen=True)
class Request:
    """One request of the HTTP prober: when it started and ended, and if it got a 200."""

    start: float
    end: float
    ok: bool


def read_http(path: Path) -> tuple[Request, ...]:
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            start, end, ok = line.split()
            rows.append(Request(float(start), float(end), ok == "1"))
    return tuple(sorted(rows, key=lambda r: r.start))


HTTP_EVERY, HTTP_TIMEOUT = 0.05, 0.3
HTTP_PROBE = """
import signal, socket, sys, time
host, out, every, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
with open(out, "a", buffering=1) as f:
    print("ready", flush=True)
    due = time.monotonic()
    while not stop:
        start, data = time.monotonic(), b""
        try:
            with socket.create_connection((host, 80), timeout=timeout) as s:
                s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
                while chunk := s.recv(4096):
                    data += chunk
        except OSError:
            pass
        ok = data.startswith(b"HTTP/1.") and b" 200 " in data[:16]
        f.write(f"{start:.6f} {time.monotonic():.6f} {int(ok)}\\n")
        due = max(due + every, time.monotonic())
        time.sleep(max(0.0, due - time.monotonic()))
"""


def measured(what: str, **values: object) -> None:
    """Print a measurement (``pytest -s``) and add it to ``KEEP/<pid>/measured.txt``."""
    parts = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items())
    print(f"\nMEASURED {what}: {parts}", flush=True)
    with open(KEEP / str(os.getpid()) / "measured.txt", "a") as out:
        out.write(f"{what}: {parts}\n")
