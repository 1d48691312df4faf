"""lvsctl seed: show the cluster's hash seed (Maglev tables), or replace it on request."""

from __future__ import annotations

import click

from ..documents import default_seed
from ..seed import load_seed, new_seed
from ..store import who
from .common import Ctx, Failure, run


@click.command()
@click.option("--new", "renew", is_flag=True, help="replace it by a new random seed")
@click.option("--yes", is_flag=True, help="with --new: yes, every mh flow may move")
@click.pass_obj
@run
async def seed(ctx: Ctx, renew: bool, yes: bool) -> None:
    """Show the hash seed every router computes its mh (Maglev) tables from."""
    async with ctx.connect() as etcd:
        if renew:
            if not yes:
                raise Failure("a new seed sends every mh flow to a possibly different real "
                              "server at once (established ones survive only on the active "
                              "router); add --yes to do it")
            doc = await new_seed(etcd, ctx.keys, f"{who()} (seed --new)")
            click.echo(f"new seed {doc.seed} for cluster {ctx.cluster}")
            return
        state = await load_seed(etcd, ctx.keys)
    fallback = default_seed(ctx.cluster)
    if state.stored is not None:
        doc = state.stored
        click.echo(f"seed {doc.seed} (created {doc.created_at or '?'} by "
                   f"{doc.created_by or '?'})")
    elif state.junk is not None:
        click.echo(f"seed: junk in etcd ({state.junk}); routers use {fallback}, the "
                   f"default of cluster {ctx.cluster}")
    else:
        click.echo(f"seed: none stored; routers use {fallback}, the default of cluster "
                   f"{ctx.cluster} (the next lvsctl config push stores a random one)")
