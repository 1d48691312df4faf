"""lvsctl drain / disable / enable: operator overrides for one real server, kept in etcd.

Whoever is active obeys them: drain = weight 0 (existing connections continue, no new
ones), disable = out of the service, enable = back to what health checks say.
"""

from __future__ import annotations

from typing import Literal

import click

from ..actions import set_admin
from .common import Ctx, echo_json, output_option, run


async def _set(ctx: Ctx, virtual: str, server: str,
               state: Literal["drain", "disable"] | None, output: str = "text") -> None:
    async with ctx.connect() as etcd:
        done = await set_admin(etcd, ctx.keys, virtual, server, state)
    if output == "json":
        echo_json(done.data)
    else:
        click.echo(done.message)


@click.command()
@click.argument("virtual")
@click.argument("server")
@output_option()
@click.pass_obj
@run
async def drain(ctx: Ctx, virtual: str, server: str, output: str) -> None:
    """Weight 0 for SERVER of VIRTUAL: no new connections, existing ones continue."""
    await _set(ctx, virtual, server, "drain", output)


@click.command()
@click.argument("virtual")
@click.argument("server")
@output_option()
@click.pass_obj
@run
async def disable(ctx: Ctx, virtual: str, server: str, output: str) -> None:
    """Take SERVER out of VIRTUAL whatever its health."""
    await _set(ctx, virtual, server, "disable", output)


@click.command()
@click.argument("virtual")
@click.argument("server")
@output_option()
@click.pass_obj
@run
async def enable(ctx: Ctx, virtual: str, server: str, output: str) -> None:
    """Undo drain/disable: SERVER follows its health checks again."""
    await _set(ctx, virtual, server, None, output)
