"""The local lab: a real cluster on one machine, in network namespaces (Python API).

    with Lab("t1", "10.81.0.0/24", routers=2, agent_cmd=["sleep", "3600"]) as lab:
        lab.exec("client", "curl", "-s", f"http://{lab.vip}/")
        lab.kill("r1", link_down=True); lab.start("r1")
        lab.cut_etcd("r2"); lab.restore_etcd("r2")
        lab.start(lab.kill_etcd_leader())   # an etcd member restarts with its data

Entering the context builds the lab (``up``); leaving it always tears it down (``down``).
Another process attaches to a running lab with ``Lab.attach(prefix)``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import build, etcd_cluster, faults, netns, procs, services
from . import state as st
from .config_file import lab_lvs_cf, read_config, validate
from .netns import LabError
from .topology import DEFAULT_CLUSTER, DEFAULT_PREFIX, DEFAULT_PUBLIC, Topology


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates network namespaces): run it as root")


@dataclass(frozen=True)
class HostInfo:
    """One host as ``status`` sees it."""

    name: str
    role: str
    namespace: str
    ns_exists: bool
    addresses: tuple[str, ...]
    pid: int | None
    alive: bool
    links_up: bool
    faults: tuple[str, ...]


class Lab:
    """One lab, named by its prefix; the namespaces are ``<prefix>-<host>``."""

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        subnet_public: str = DEFAULT_PUBLIC,
        subnet_private: str = "",
        routers: int = 3,
        servers: int = 2,
        *,
        agent_cmd: Sequence[str] | None = None,
        host_link: bool = False,
        state_dir: str | Path | None = None,
        config: str | Path | None = None,
        cluster: str = DEFAULT_CLUSTER,
        network: str = "nat",
        dataplane: str = "nftables",
        etcd_members: int = 1,
    ) -> None:
        self.topology = Topology(prefix, subnet_public, subnet_private, routers, servers,
                                 host_link, cluster, network, etcd_members)
        if network == "direct" and dataplane == "nftables" and not agent_cmd:
            raise LabError("a direct-routing lab needs the IPVS data plane (--dataplane ipvs): "
                           "nftables forwards by NAT, and the real servers' replies would "
                           "bypass it")
        self.state_dir = Path(state_dir) if state_dir else st.default_state_dir(prefix)
        self.agent_cmd = (tuple(agent_cmd) if agent_cmd
                          else tuple(services.default_agent_cmd(dataplane)))
        self.config_file = Path(config).resolve() if config else None
        self.heartbeat_port = 539
        self._state: st.LabState | None = None
        self._children: list[subprocess.Popen[Any]] = []

    @classmethod
    def attach(cls, prefix: str = DEFAULT_PREFIX, state_dir: str | Path | None = None) -> Lab:
        """The running lab of ``prefix``, from its state file."""
        state = st.load(state_dir or st.default_state_dir(prefix))
        topo = state.topology
        lab = cls(topo.prefix, topo.public, topo.private, topo.routers, topo.servers,
                  agent_cmd=state.agent_cmd, host_link=topo.host_link, state_dir=state.state_dir,
                  cluster=topo.cluster, network=topo.network,
                  etcd_members=topo.etcd_members)
        lab._state = state
        lab.heartbeat_port = _heartbeat_port(state.config_path)
        return lab

    # ------------------------------------------------------------ names and addresses

    @property
    def prefix(self) -> str:
        return self.topology.prefix

    def ns(self, host: str) -> str:
        """Namespace of ``host`` (``<prefix>-<host>``)."""
        return self.topology.ns(self.topology.host(host).name)

    def address(self, host: str, lan: str | None = None) -> str:
        """Address of ``host`` on ``lan`` ("public"/"private"; default its first)."""
        return self.topology.host(host).address(lan)

    def addresses(self, host: str) -> dict[str, str]:
        """{interface: address} of ``host``."""
        return {i.name: i.address for i in self.topology.host(host).ifaces}

    @property
    def hosts(self) -> list[str]:
        return [h.name for h in self.topology.hosts]

    @property
    def routers(self) -> list[str]:
        return self.topology.router_names

    @property
    def servers(self) -> list[str]:
        return self.topology.server_names

    @property
    def etcd_names(self) -> list[str]:
        """The etcd members: ``etcd`` alone, or ``etcd1``..``etcdN``."""
        return self.topology.etcd_names

    @property
    def etcd_endpoints(self) -> str:
        """Every member's client URL, comma-separated (``--etcd``, ``--endpoints``)."""
        return self.topology.etcd_endpoints

    @property
    def etcd_url(self) -> str:
        """The same as :attr:`etcd_endpoints` (for callers written before etcd clusters)."""
        return self.topology.etcd_endpoints

    @property
    def vip(self) -> str:
        return self.topology.vip

    @property
    def gateway(self) -> str:
        return self.topology.gateway

    @property
    def network(self) -> str:
        """How the lab forwards: ``nat`` or ``direct`` (direct routing)."""
        return self.topology.network

    @property
    def config_path(self) -> Path:
        return Path(self.state.config_path)

    @property
    def key_path(self) -> Path:
        return self.state_dir / "heartbeat.key"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_path(self, host: str) -> Path:
        return self.log_dir / f"{host}.log"

    @property
    def state(self) -> st.LabState:
        if self._state is None:
            raise LabError(f"lab {self.prefix} is not up")
        return self._state

    # ------------------------------------------------------------ building and tearing down

    def up(self) -> Lab:
        """Build everything (after tearing down a lab of the same prefix) and start it."""
        require_root()
        for tool in ("ip", "nft", "etcd"):
            services.check_program([tool])
        services.check_program(self.agent_cmd)
        if self.config_file is not None:
            text, cfg = read_config(self.config_file)
        else:
            text = lab_lvs_cf(self.topology)
            cfg = validate(text, "generated lvs.cf")
        self.down()
        try:
            self._up(text, cfg.heartbeat_port)
        except BaseException:
            self.down()
            raise
        return self

    def _up(self, config_text: str, heartbeat_port: int) -> None:
        topo = self.topology
        self.state_dir.mkdir(parents=True, mode=0o700)
        self.log_dir.mkdir()
        config_path = self.state_dir / "lvs.cf"
        config_path.write_text(config_text)
        self.heartbeat_port = heartbeat_port
        st.write_secret(self.key_path, secrets.token_hex(32) + "\n")
        self._state = st.LabState(topo, str(self.state_dir), str(config_path), self.agent_cmd,
                                  time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                  etcd_token=f"{topo.prefix}-{secrets.token_hex(8)}")
        build.build(topo)
        st.save(self.state)
        self.start_etcd()
        services.push_config(topo, str(config_path))
        for host in [*topo.server_names, *topo.router_names]:
            self.start(host)

    def down(self) -> list[str]:
        """Kill every process of the lab, delete its namespaces, host link and state dir.

        Works without (or with a damaged) state file; idempotent. Returns the namespaces
        removed.
        """
        require_root()
        removed = build.teardown(self.prefix, self.state_dir)
        for child in self._children:
            if child.poll() is None:
                child.kill()
            child.wait()
        self._children.clear()
        self._state = None
        return removed

    def vip_url(self) -> str | None:
        """``http://VIP[:port]/`` of the config's first active TCP virtual on the lab's VIP
        (the one the generated config has), or None if it has none."""
        cfg = read_config(self.config_path)[1]
        for v in cfg.virtuals:
            if (v.active and v.protocol == "tcp" and v.fwmark is None
                    and str(v.address.ip) == self.vip):
                return f"http://{self.vip}/" if v.port == 80 else f"http://{self.vip}:{v.port}/"
        return None

    def wait_served(self, within: float = 30.0, url: str | None = None) -> float:
        """Wait until a request through the VIP (``url``, default ``http://VIP/``), sent from
        the client namespace, gets a 200 from a real server; the seconds that took.

        ``LabError`` saying what was seen and where to look if not within ``within`` s.
        """
        url = url or f"http://{self.vip}/"
        start = time.monotonic()
        while True:
            res = self.exec("client", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "-m", "1", url, timeout=10)
            took = time.monotonic() - start
            if res.returncode == 0 and res.stdout.strip() == "200":
                return took
            if took >= within:
                break
            time.sleep(0.05)
        last = (f"HTTP {res.stdout.strip()}" if res.returncode == 0
                else _CURL_ERRORS.get(res.returncode, f"curl exit status {res.returncode}"))
        dead = [h.name for h in self.status() if h.role != "client" and not h.alive]
        flag = "" if self.prefix == DEFAULT_PREFIX else f" --prefix {self.prefix}"
        raise LabError(
            f"lab {self.prefix} was built, but {url} was not served from the client within "
            f"{within:g} s (last try: {last})"
            + (f"; not running: {', '.join(dead)}" if dead else "")
            + f". Look at `lvslab status{flag}` and the logs in {self.log_dir}/; "
            f"`lvslab down{flag}` removes the lab.")

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ------------------------------------------------------------ commands and processes

    def exec(self, host: str, *cmd: object, check: bool = False, timeout: float = 30,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside ``host``'s namespace; its CompletedProcess (text output)."""
        return netns.run_in(self.ns(host), *cmd, check=check, timeout=timeout, input=input,
                            env=procs.env())

    def popen(self, host: str, *cmd: object, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` inside ``host``'s namespace (killed by ``down``)."""
        kwargs.setdefault("env", procs.env())
        proc = subprocess.Popen(netns.ns_exec(self.ns(host), *cmd), **kwargs)
        self._children.append(proc)
        return proc

    def pid(self, host: str) -> int | None:
        """Pid of ``host``'s main process (etcd, agent, httpd) if it is alive."""
        pid = self.state.pids.get(self.topology.host(host).name)
        return pid if pid is not None and netns.pid_in(pid, self.ns(host)) else None

    def alive(self, host: str) -> bool:
        return self.pid(host) is not None

    def command(self, host: str) -> list[str]:
        """The main process command of ``host`` (none for the client)."""
        h = self.topology.host(host)
        if h.role == "router":
            return services.agent_command(self.agent_cmd, self.topology, h.name,
                                          self.state.config_path, str(self.key_path),
                                          str(self.state_dir / "run" / h.name))
        if h.role == "server":
            return services.httpd_command(self.topology, h.name)
        if h.role == "etcd":
            return self._etcd(h.name).command()
        raise LabError(f"{host} runs nothing of its own (it is the {h.role})")

    def start(self, host: str) -> int:
        """(Re)start ``host``'s main process after bringing its links up; its pid."""
        h = self.topology.host(host)
        if h.role == "client":
            raise LabError("the client runs nothing of its own")
        if self.alive(host):
            raise LabError(f"{host} is already running (pid {self.pid(host)})")
        build.set_links(self.topology, h, up=True)
        log = self.log_path(h.name)
        if h.role == "etcd":
            etcd = self._etcd(h.name)
            etcd.spawn()
            self._wait_etcd_listens(etcd)
            assert etcd.proc is not None
            proc: subprocess.Popen[Any] = etcd.proc
        else:
            cmd = self.command(host)
            services.check_program(cmd)
            proc = procs.start(self.ns(host), cmd, log, cwd=self.state_dir)
            procs.wait_started(proc, self.ns(host), log)
            if h.role == "server":
                procs.wait_listening(proc, services.HTTP_PORT, f"httpd on {host}", log)
                procs.wait_listening(proc, services.ECHO_PORT, f"echo on {host}", log)
        self._children.append(proc)
        self._save(self.state.with_pid(h.name, proc.pid))
        return proc.pid

    def start_agent(self, router: str) -> int:
        """Restart a killed router's agent."""
        faults.check_router(self.topology, router)
        return self.start(router)

    def kill(self, host: str, link_down: bool = False) -> None:
        """SIGKILL ``host``'s main process; ``link_down`` first sets its links down (a crash)."""
        h = self.topology.host(host)
        if link_down:
            build.set_links(self.topology, h, up=False)
        pid = self.pid(host)
        if pid is None:
            if link_down:
                return
            raise LabError(f"{host} has no running process")
        procs.kill(pid, self.ns(host), signal.SIGKILL)
        procs.wait_gone(pid, self.ns(host))
        self._reap()
        self._save(self.state.with_pid(h.name, None))

    # ------------------------------------------------------------ etcd

    def start_etcd(self, within: float = 30.0) -> list[str]:
        """Start every etcd member not running (together: a new cluster needs a majority
        before any member serves), then wait for a leader; the members started."""
        started = [m for m in self.etcd_names if not self.alive(m)]
        members = {m: self._etcd(m) for m in started}
        for name, etcd in members.items():
            build.set_links(self.topology, self.topology.host(name), up=True)
            etcd.spawn()
            assert etcd.proc is not None
            self._children.append(etcd.proc)
        for name, etcd in members.items():
            self._wait_etcd_listens(etcd)
            assert etcd.proc is not None
            self._save(self.state.with_pid(name, etcd.proc.pid))
        self.wait_etcd(within)
        return started

    def kill_etcd(self) -> list[str]:
        """SIGKILL every running etcd member (all of etcd down); the members killed."""
        killed = self._etcd_running()
        for member in killed:
            self.kill(member)
        return killed

    def _wait_etcd_listens(self, etcd: services.LabEtcd) -> None:
        try:
            etcd.wait_ready(20)
        except RuntimeError as exc:
            raise LabError(f"{exc}:\n{procs.tail(etcd.log_path)}") from None

    def wait_etcd(self, within: float = 30.0) -> str:
        """Wait until the etcd cluster has a leader that a majority follows; its name."""
        deadline = time.monotonic() + within
        while (leader := self.etcd_leader()) is None:
            if time.monotonic() > deadline:
                seen = self.etcd_status()
                raise LabError(
                    f"the etcd of lab {self.prefix} has no leader after {within:g} s "
                    f"(answering: {', '.join(seen) or 'none'}); see the etcd logs in "
                    f"{self.log_dir}/")
            time.sleep(0.1)
        return leader

    def etcd_status(self) -> dict[str, etcd_cluster.MemberStatus]:
        """{member: its endpoint status} of the members that answer, asked from the client
        (only the members whose process runs: a dead one would cost a timeout)."""
        return etcd_cluster.status(self.topology, members=self._etcd_running())

    def etcd_leader(self) -> str | None:
        """The leading etcd member (None: none, or it does not answer)."""
        return etcd_cluster.leader(self.topology, members=self._etcd_running())

    def _etcd_running(self) -> list[str]:
        return [m for m in self.etcd_names if self.alive(m)]

    def kill_etcd_leader(self) -> str:
        """SIGKILL the leading etcd member; its name (restart it with ``start(name)``)."""
        leader = self.etcd_leader()
        if leader is None:
            raise LabError(f"the etcd of lab {self.prefix} has no leader to kill")
        self.kill(leader)
        return leader

    def etcd_data_dir(self, member: str) -> Path:
        """A member's data dir; a lone member's is ``etcd-data`` itself, as it always was."""
        base = self.state_dir / "etcd-data"
        return base if self.topology.etcd_members == 1 else base / member

    def _etcd(self, member: str) -> services.LabEtcd:
        return services.LabEtcd(self.topology, member, self.etcd_data_dir(member),
                                self.log_path(member), self.state.etcd_token or None)

    def _save(self, state: st.LabState) -> None:
        self._state = state
        st.save(state)

    def _reap(self) -> None:
        for child in [c for c in self._children if c.poll() is not None]:
            self._children.remove(child)

    # ------------------------------------------------------------ status

    def status(self) -> list[HostInfo]:
        active = faults.active(self.topology)
        out = []
        for h in self.topology.hosts:
            ns = self.ns(h.name)
            there = netns.exists(ns)
            pid = self.state.pids.get(h.name)
            out.append(HostInfo(
                h.name, h.role, ns, there, tuple(i.address for i in h.ifaces), pid,
                pid is not None and netns.pid_in(pid, ns),
                there and build.links_up(self.topology, h), tuple(active.get(h.name, ()))))
        return out

    # ------------------------------------------------------------ faults

    def cut_etcd(self, router: str) -> None:
        """Drop traffic between ``router`` and every etcd member (routers still hear each
        other)."""
        faults.cut_etcd(self.topology, router)

    def restore_etcd(self, router: str) -> None:
        faults.restore_etcd(self.topology, router)

    def cut_etcd_peers(self, member: str) -> None:
        """Cut etcd ``member`` from the other members (a minority of one); the routers and
        the client still reach it."""
        faults.cut_etcd_peers(self.topology, member)

    def restore_etcd_peers(self, member: str) -> None:
        faults.restore_etcd_peers(self.topology, member)

    def partition(self, side_a: str | Iterable[str], side_b: str | Iterable[str]) -> None:
        """No heartbeats between the two groups of routers (both links); etcd still works."""
        faults.partition(self.topology, side_a, side_b, self.heartbeat_port)

    def heal(self, side_a: str | Iterable[str], side_b: str | Iterable[str]) -> None:
        faults.heal(self.topology, side_a, side_b)

    def drop_heartbeats(self, sender: str, receiver: str) -> None:
        """``receiver`` stops hearing ``sender`` (only that direction)."""
        faults.drop_heartbeats(self.topology, sender, receiver, self.heartbeat_port)

    def restore_heartbeats(self, sender: str, receiver: str) -> None:
        faults.restore_heartbeats(self.topology, sender, receiver)

    def isolate(self, host: str) -> None:
        """All of ``host``'s links down."""
        faults.isolate(self.topology, host)

    def reconnect(self, host: str) -> None:
        faults.reconnect(self.topology, host)

    def clear_faults(self) -> None:
        faults.clear(self.topology)


_CURL_ERRORS = {7: "connection refused", 28: "no answer within 1 s",
                52: "empty reply", 56: "connection reset"}


def _heartbeat_port(config_path: str) -> int:
    try:
        return read_config(config_path)[1].heartbeat_port
    except LabError:
        return 539
