"""lvsctl drain / disable / enable: operator overrides for one real server, kept in etcd.

Whoever is active obeys them: drain = weight 0 (existing connections continue, no new
ones), disable = out of the service, enable = back to what health checks say.
"""

from __future__ import annotations

from typing import Literal

import click

from ..documents import AdminFlag
from ..store import ConfigStore, now_iso, who
from .common import Ctx, Failure, echo_json, output_option, run


async def _set(ctx: Ctx, virtual: str, server: str,
               state: Literal["drain", "disable"] | None, output: str = "text") -> None:
    async with ctx.connect() as etcd:
        stored = await ConfigStore(etcd, ctx.keys).load()
        if stored is None:
            raise Failure(f"cluster {ctx.cluster} has no configuration")
        try:
            v = stored.config.virtual(virtual)
        except KeyError:
            names = ", ".join(x.name for x in stored.config.virtuals) or "none"
            raise Failure(f"no virtual {virtual!r} (virtuals: {names})") from None
        if server not in {s.name for s in v.servers}:
            names = ", ".join(s.name for s in v.servers) or "none"
            raise Failure(f"virtual {virtual} has no server {server!r} (servers: {names})")
        key = ctx.keys.admin(virtual, server)
        if state is None:
            removed = await etcd.delete(key)
            if output == "json":
                echo_json({"virtual": virtual, "server": server, "admin": None,
                           "was_set": bool(removed)})
                return
            click.echo(f"{virtual}/{server}: enabled" + ("" if removed else " (was not "
                                                          "drained or disabled)"))
            return
        flag = AdminFlag(state=state, by=who(), at=now_iso())
        await etcd.put(key, flag.encode())
        if output == "json":
            echo_json({"virtual": virtual, "server": server, "admin": state,
                       "by": flag.by, "at": flag.at})
            return
        click.echo(f"{virtual}/{server}: {state}" + (
            "d (weight 0: existing connections continue, no new ones)" if state == "drain"
            else "d (out of the service)"))


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
