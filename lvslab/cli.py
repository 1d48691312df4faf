"""``lvslab``: build, inspect, break and tear down the local namespace lab."""

from __future__ import annotations

import functools
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from . import services
from .etcd_cluster import MemberStatus, leader_of
from .lab import HostInfo, Lab, require_root
from .netns import LabError
from .state import default_state_dir
from .topology import (
    DEFAULT_PREFIX,
    DEFAULT_PUBLIC,
    MAX_ROUTERS,
    MAX_SERVERS,
    NETWORKS,
    Topology,
)

F = TypeVar("F", bound=Callable[..., Any])


def _errors(fn: F) -> F:
    """LabError (and a bad state file) become one-line lvslab errors."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LabError as exc:
            raise Failure(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _where(fn: F) -> F:
    """--prefix and --state-dir: which lab."""
    fn = click.option("--state-dir", type=click.Path(file_okay=False), default=None,
                      help="state directory [default: /run/piranha-lab/PREFIX]")(fn)
    return click.option("--prefix", default=DEFAULT_PREFIX, show_default=True,
                        envvar="LVS_LAB_PREFIX",
                        help="lab name: namespaces are PREFIX-HOST (env LVS_LAB_PREFIX)")(fn)


def _attach(prefix: str, state_dir: str | None) -> Lab:
    require_root()
    return Lab.attach(prefix, state_dir)


def _flag(prefix: str) -> str:
    return "" if prefix == DEFAULT_PREFIX else f" --prefix {prefix}"


class Failure(click.ClickException):
    """A lab error for the operator: one line, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"lvslab: {self.message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def lab() -> None:
    """A real cluster on this machine, one network namespace per host (needs root)."""


@lab.command()
@_where
@click.option("--subnet", default=DEFAULT_PUBLIC, show_default=True,
              help="public LAN (etcd, routers' eth0, client, VIP)")
@click.option("--private-subnet", default="",
              help="private LAN (routers' eth1, real servers) [default: the /24 after --subnet]")
@click.option("--routers", type=click.IntRange(1, MAX_ROUTERS), default=3, show_default=True)
@click.option("--servers", type=click.IntRange(1, MAX_SERVERS), default=2, show_default=True,
              help="number of real servers")
@click.option("--etcd-members", type=int, default=3, show_default=True, metavar="1|3|5",
              help="etcd cluster size, one namespace per member (etcd1..etcdN; one: etcd)")
@click.option("--config", "config", type=click.Path(dir_okay=False),
              help="use this lvs.cf instead of the generated one")
@click.option("--host-link/--no-host-link", default=True, show_default=True,
              help="attach this (root) namespace to the public LAN as .1")
@click.option("--agent-cmd", hidden=True, help="router command instead of pulse (for tests); "
              "placeholders {node} {etcd} {cluster} {config} {metrics} {keyfile} {statedir}")
@click.option("--cluster", default="default", show_default=True, envvar="LVS_CLUSTER",
              help="cluster name in etcd")
@click.option("--dataplane", type=click.Choice(services.DATAPLANES), default="nftables",
              show_default=True, help="the routers' data plane (pulse --dataplane); ipvs "
              "needs a kernel with IPVS, e.g. in the QEMU guest of scripts/ipvs_vm.py")
@click.option("--network", type=click.Choice(NETWORKS), default="nat", show_default=True,
              help="nat: the real servers route through the active router; direct: direct "
              "routing (real servers also on the public LAN, the VIP on their lo)")
@click.option("--wait", "wait", type=click.FloatRange(0), default=None, metavar="SECONDS",
              help="return once a request through the VIP is served, failing after this "
              "long; 0: do not wait [default: 30; 0 with --agent-cmd]")
@_errors
def up(cluster: str, prefix: str, state_dir: str | None, subnet: str, private_subnet: str,
       routers: int, servers: int, etcd_members: int, config: str | None, host_link: bool,
       agent_cmd: str | None, dataplane: str, network: str, wait: float | None) -> None:
    """Build the lab (tearing down an old one of the same prefix) and start it; return once
    a request through the VIP is served."""
    started = time.monotonic()
    lab_ = Lab(prefix, subnet, private_subnet, routers, servers, host_link=host_link,
               agent_cmd=shlex.split(agent_cmd) if agent_cmd else None, state_dir=state_dir,
               config=config, cluster=cluster, network=network, dataplane=dataplane,
               etcd_members=etcd_members)
    lab_.up()
    if wait is None:
        wait = 0.0 if agent_cmd else WAIT_SERVED
    url = lab_.vip_url() if wait > 0 else None
    if wait > 0 and url is None:
        click.echo(f"(not waiting for the VIP: {lab_.config_path} has no active TCP virtual "
                   f"on {lab_.vip})", err=True)
    served = lab_.wait_served(wait, url) if url is not None else None
    click.echo(summary(lab_, time.monotonic() - started, served))


#: How long ``lvslab up`` waits for the VIP to serve before it fails.
WAIT_SERVED = 30.0


def summary(lab_: Lab, took: float, served: float | None = None) -> str:
    topo, p = lab_.topology, _flag(lab_.prefix)
    etcd = f"lvsctl --etcd {topo.etcd_endpoints}" + (
        f" --cluster {topo.cluster}" if topo.cluster != "default" else "")
    members = (f"{topo.etcd_members} members" if topo.etcd_members > 1 else "1 member")
    state = (f"up and serving in {took:.1f} s" if served is not None
             else f"up in {took:.1f} s")
    lines = [
        f"lab {lab_.prefix} is {state}: {topo.routers} routers, "
        f"{topo.servers} real servers, {members} of etcd, cluster {topo.cluster}",
        f"  etcd       {topo.etcd_endpoints}",
        f"  lvs.cf     {lab_.config_path} (pushed)",
        f"  VIP        ip netns exec {topo.ns('client')} curl http://{topo.vip}/",
        f"  status     lvslab status{p}",
    ]
    if topo.host_link:
        lines.append(f"  watch      watch -n1 {etcd} status")
    lines += [
        f"  shell      ip netns exec {topo.ns('r1')} bash",
        f"  logs       {lab_.log_dir}/",
        f"  tear down  lvslab down{p}",
    ]
    return "\n".join(lines)


@lab.command()
@_where
@click.option("--no-etcd", is_flag=True, help="only namespaces and processes")
@_errors
def status(prefix: str, state_dir: str | None, no_etcd: bool) -> None:
    """Namespaces, processes and faults, then `lvsctl status` of the lab's etcd."""
    lab_ = _attach(prefix, state_dir)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"lab [bold]{prefix}[/] (created {lab_.state.created}, "
                  f"state {lab_.state_dir})")
    console.print(host_table(lab_.status()))
    if no_etcd:
        return
    console.print(etcd_line(lab_.etcd_status(), lab_.topology.etcd_members))
    sys.stdout.flush()
    # from inside the client namespace: works with or without the host link
    proc = services.lvsctl_in(lab_.topology, "client", "--timeout", "3", "status",
                              capture=False, timeout=30)
    if proc.returncode != 0:
        click.echo(f"(lvsctl status failed with exit status {proc.returncode})", err=True)


def etcd_line(statuses: dict[str, MemberStatus], members: int) -> str:
    """``etcd: leader etcd2, 3 of 3 members answer`` (what ``endpoint status`` says)."""
    leader = leader_of(statuses, members)
    return (f"etcd: {'leader ' + leader if leader else '[red]no leader[/]'}, "
            f"{len(statuses)} of {members} members answer"
            + (f" ({', '.join(statuses)})" if 0 < len(statuses) < members else ""))


def host_table(hosts: list[HostInfo]) -> Table:
    table = Table("host", "role", "namespace", "addresses", "process", "links", "faults",
                  title="hosts", title_justify="left")
    for h in hosts:
        if not h.ns_exists:
            proc, links = "[red]no namespace[/]", ""
        elif h.role == "client":
            proc, links = "", "up" if h.links_up else "[red]down[/]"
        else:
            proc = (f"[green]pid {h.pid}[/]" if h.alive
                    else f"[red]dead[/] (was {h.pid})" if h.pid else "[red]not running[/]")
            links = "up" if h.links_up else "[red]down[/]"
        table.add_row(h.name, h.role, h.namespace, " ".join(h.addresses), proc, links,
                      ", ".join(h.faults))
    return table


@lab.command()
@_where
@click.argument("node")
@click.option("--link-down", is_flag=True, help="set its interfaces down first (a crash)")
@_errors
def kill(prefix: str, state_dir: str | None, node: str, link_down: bool) -> None:
    """SIGKILL NODE's main process (agent, httpd or etcd member; etcd-leader: the leading
    member)."""
    lab_ = _attach(prefix, state_dir)
    if node == "etcd-leader":
        leader = lab_.etcd_leader()
        if leader is None:
            raise Failure(f"the etcd of lab {prefix} has no leader")
        node = leader
    pid = lab_.pid(node)
    lab_.kill(node, link_down=link_down)
    click.echo(f"{node}: " + (f"killed pid {pid}" if pid else "no process")
               + (", links down" if link_down else ""))


@lab.command()
@_where
@click.argument("node")
@_errors
def start(prefix: str, state_dir: str | None, node: str) -> None:
    """Bring NODE's links up and restart its main process (e.g. a killed router's agent)."""
    pid = _attach(prefix, state_dir).start(node)
    click.echo(f"{node}: started, pid {pid}")


@lab.command()
@_where
@_errors
def down(prefix: str, state_dir: str | None) -> None:
    """Kill everything in the lab's namespaces and delete them (works after a crash too)."""
    Topology(prefix)  # checks the prefix
    removed = Lab(prefix, state_dir=state_dir).down()
    click.echo(f"lab {prefix}: removed {len(removed)} namespaces and "
               f"{state_dir or default_state_dir(prefix)}")


from . import fault_cli  # noqa: E402,F401 - registers `lvslab fault ...`


def main() -> None:
    """Console entry point: ``lvslab``."""
    lab.main(prog_name="lvslab")
