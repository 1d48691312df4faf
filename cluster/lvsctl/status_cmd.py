"""lvsctl status: what etcd says about the cluster now."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table

from ..documents import NodeRecord
from ..status import ClusterStatus, read_status
from .common import Ctx, run


@click.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_obj
@run
async def status(ctx: Ctx, output: str) -> None:
    """Show the configuration, leader, routers and real-server health in etcd."""
    async with ctx.connect() as etcd:
        st = await read_status(etcd, ctx.keys)
    if output == "json":
        click.echo(json.dumps(st.to_json(), indent=2))
    else:
        render(st, Console(width=None if sys.stdout.isatty() else 160))


def render(st: ClusterStatus, console: Console) -> None:
    for part in renderables(st):
        console.print(part)


def renderables(st: ClusterStatus) -> list[RenderableType]:
    """What ``lvsctl status`` shows, in order (``lvsctl watch`` redraws the same)."""
    out: list[RenderableType] = []
    cfg = st.config
    head = f"cluster [bold]{st.cluster}[/] (etcd revision {st.revision})"
    if cfg is not None:
        head += f"  config serial_no {cfg.serial_no}, pushed {cfg.pushed_at} by {cfg.pushed_by}"
    else:
        head += "  [yellow]no configuration stored[/]"
    out.append(head)
    if st.config_error:
        out.append(f"[red]stored config is invalid (ignored by agents):[/] {st.config_error}")
    for problem in st.config_problems:
        out.append(f"[red]stored config cannot run (agents refuse it):[/] {escape(problem)}")
    if st.leader:
        out.append(f"active router: [bold green]{escape(st.leader.node or '?')}[/] "
                   f"(term {st.leader.term}, since {st.leader.since})")
    else:
        out.append("active router: [yellow]none[/]")

    routers = Table("router", "role", "address", "etcd", "dataplane", "config", "since",
                    title="routers", title_justify="left")
    configured = [r.name for r in cfg.config.effective_routers()] if cfg else []
    for name in dict.fromkeys([*configured, *sorted(st.state.registered)]):
        node = st.nodes.get(name)
        if node is None:
            routers.add_row(name, "[red]down[/]" if name not in st.state.registered
                            else "[yellow]unreadable[/]", "", "", "", "", "")
            continue
        role = node.role
        if st.leader and st.leader.node == name:
            role = f"[green]{role}[/]"
        routers.add_row(name, role, node.address, str(node.etcd), node.dataplane,
                        _config_cell(node, cfg.serial_no if cfg else None), node.started_at)
    out.append(routers)
    ro = st.rollout()
    if ro is not None:
        for name, why in ro.behind.items():
            out.append(f"[red]{escape(name)} does not run the stored config "
                       f"(serial_no {ro.serial_no}): {escape(why)}[/]")

    services = Table("virtual", "service", "server", "address", "weight", "state", "admin",
                     "since", "reason", title="virtual services", title_justify="left")
    for v in st.virtuals():
        first = True
        for s in v["servers"] or [{}]:
            state = s.get("state", "")
            color = {"up": "green", "down": "red"}.get(state, "yellow")
            services.add_row(
                v["name"] if first else "", v["service"] if first else "",
                s.get("name", ""), f"{s.get('address', '')}:{s.get('port', '')}" if s else "",
                str(s.get("effective_weight") if s.get("effective_weight") is not None
                    else s.get("weight", "")),
                f"[{color}]{state}[/]" if s else "", s.get("admin") or "",
                s.get("since") or "", s.get("reason") or "")
            first = False
    out.append(services)
    if st.junk:
        out.append(f"[yellow]{len(st.junk)} key(s) not understood:[/]")
        for line in st.junk[:20]:
            out.append(f"  {line}")
    return out


def _config_cell(node: NodeRecord, stored: int | None) -> str:
    """The serial_no a router runs, and the config it refused (with why) if any."""
    text = "?" if node.config_serial is None else str(node.config_serial)
    if stored is not None and node.config_serial != stored:
        text = f"[red]{text}[/]"
    if node.config_refused is not None:
        refused = node.config_refused
        text += f" [red](refused {refused.serial_no}: {escape(refused.reason)})[/]"
    return text
