"""lvsctl switchover: ask the active router to hand over, and wait for the new one."""

from __future__ import annotations

import time

import click

from ..actions import ask_switchover, new_leader
from .common import Ctx, Failure, echo_json, output_option, run


@click.command()
@click.option("--to", "target", metavar="NODE", help="the router to hand over to "
              "(default: the next by priority)")
@click.option("--wait", "wait_s", default=10.0, show_default=True,
              help="seconds to wait for the new active router")
@output_option()
@click.pass_obj
@run
async def switchover(ctx: Ctx, target: str | None, wait_s: float, output: str) -> None:
    """Hand the active role over gracefully (VIPs move within milliseconds)."""
    async with ctx.connect() as etcd:
        asked = await ask_switchover(etcd, ctx.keys, target, wait_s)
        leader, request = asked.leader, asked.request
        if output != "json":
            click.echo(f"asked {leader.node} (term {leader.term}) to hand over"
                       + (f" to {target}" if target else ""))
        try:
            new = await new_leader(etcd, ctx.keys, asked, wait_s)
        except TimeoutError:
            raise Failure(f"no new active router after {wait_s:g}s "
                          "(see lvsctl status and the agents' logs)") from None
        ms = (time.monotonic() - asked.at) * 1000
        if output == "json":
            echo_json({"previous": leader.node, "previous_term": leader.term,
                       "to": target or "", "node": new.node, "term": new.term,
                       "request": request.id, "ms": round(ms)})
            return
        click.echo(f"{new.node} is active (term {new.term}), {ms:.0f} ms after the request")
