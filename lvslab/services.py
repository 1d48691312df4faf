"""What runs on each lab host: etcd, the agent on routers, httpd (and the line echo) on
real servers."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .echo import ECHO_PORT
from .etcd_server import LocalEtcd
from .netns import LabError, ns_exec, pid_in, sh
from .procs import PYTHON, env, listening, venv_tool
from .topology import ETCD_PEER_PORT, ETCD_PORT, METRICS_PORT, PUBLIC, Topology

HTTP_PORT = 80
PLACEHOLDERS = ("node", "etcd", "cluster", "config", "metrics", "keyfile", "statedir")
_LVSCTL = "import sys; from cluster.lvsctl.main import main; sys.argv[0] = 'lvsctl'; main()"


DATAPLANES = ("nftables", "ipvs", "auto")


def default_agent_cmd(dataplane: str = "nftables") -> list[str]:
    """The real agent, from the venv the lab runs in, on the given data plane (``pulse
    --dataplane``: nftables, ipvs, or auto = IPVS where the kernel has it)."""
    if dataplane not in DATAPLANES:
        raise LabError(f"data plane must be one of {', '.join(DATAPLANES)}, not {dataplane!r}")
    return [venv_tool("pulse"), "--etcd", "{etcd}", "--cluster", "{cluster}", "--node", "{node}",
            "--config", "{config}", "--dataplane", dataplane, "--metrics-address", "{metrics}",
            "--heartbeat-key-file", "{keyfile}", "--state-dir", "{statedir}"]


def agent_command(template: Sequence[str], topo: Topology, node: str, config: str,
                  keyfile: str, statedir: str = "") -> list[str]:
    """``template`` with ``{node}``, ``{etcd}``, ... replaced (other braces are left alone).

    ``statedir``: the agent's own state directory (conntrackd's socket and lock file):
    one per router, since the lab's routers share the filesystem.
    """
    values = {"node": node, "etcd": topo.etcd_endpoints, "cluster": topo.cluster, "config": config,
              "metrics": f"{topo.host(node).address(PUBLIC)}:{METRICS_PORT}",
              "keyfile": keyfile, "statedir": statedir}
    out = []
    for arg in template:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


def check_program(argv: Sequence[str]) -> None:
    """``LabError`` if the program of ``argv`` cannot be found."""
    prog = argv[0] if argv else ""
    found = Path(prog).is_file() if "/" in prog else shutil.which(prog) is not None
    if not found:
        raise LabError(f"program not found: {prog!r} (agent command: {' '.join(argv)})")


def httpd_command(topo: Topology, server: str) -> list[str]:
    """httpd on its private address; with direct routing on every address (the VIP too)."""
    bind = "0.0.0.0" if topo.network == "direct" else topo.host(server).address()
    return [PYTHON, "-m", "lvslab.httpd", "--name", server, "--port", str(HTTP_PORT),
            "--bind", bind, "--echo-port", str(ECHO_PORT)]


class LabEtcd(LocalEtcd):
    """One member of the lab's etcd, in its own namespace; ready once it listens there (we
    need no route). ``token``: the lab's cluster token (a fresh one per lab)."""

    def __init__(self, topo: Topology, member: str, data_dir: Path, log_path: Path,
                 token: str | None = None) -> None:
        # A lone member keeps the name it always had (its data dir knows it by that name).
        name = "lab" if topo.etcd_members == 1 else member
        initial = None if topo.etcd_members == 1 else topo.etcd_initial_cluster
        super().__init__(data_dir, host=topo.etcd_member_ip(member), client_port=ETCD_PORT,
                         peer_port=ETCD_PEER_PORT, name=name, log_path=log_path,
                         netns=topo.ns(member), initial_cluster=initial, cluster_token=token)

    def healthy(self) -> bool:
        proc = self.proc
        return (proc is not None and self.netns is not None and pid_in(proc.pid, self.netns)
                and listening(proc.pid, self.client_port))


def lvsctl_in(topo: Topology, host: str, *args: str, timeout: float = 60,
              capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``lvsctl --etcd <every member> --cluster <cluster> ARGS`` inside ``host``'s
    namespace."""
    argv = ns_exec(topo.ns(host), PYTHON, "-c", _LVSCTL, "--etcd", topo.etcd_endpoints,
                   "--cluster", topo.cluster, *args)
    if capture:
        return sh(*argv, check=False, timeout=timeout, env=env())
    try:  # output straight to our terminal
        return subprocess.run(argv, env=env(), timeout=timeout, check=False, text=True)
    except subprocess.TimeoutExpired:
        raise LabError(f"lvsctl {' '.join(args)}: no answer within {timeout} s") from None


def push_config(topo: Topology, config_path: str) -> str:
    """Store the lab's lvs.cf in its etcd (``config push --force``, from the client)."""
    proc = lvsctl_in(topo, "client", "config", "push", "--force", config_path)
    if proc.returncode != 0:
        raise LabError(f"pushing {config_path} to {topo.etcd_endpoints} failed:\n"
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip()
