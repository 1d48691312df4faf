"""lvsctl seed: show the cluster's hash seed (Maglev tables), or replace it on request."""

from __future__ import annotations

import click

from ..documents import default_seed
from ..seed import load_seed, new_seed
from ..store import who
from .common import Ctx, Failure, echo_json, output_option, run


@click.command()
@click.option("--new", "renew", is_flag=True, help="replace it by a new random seed")
@click.option("--yes", is_flag=True, help="with --new: yes, every mh flow may move")
@output_option()
@click.pass_obj
@run
async def seed(ctx: Ctx, renew: bool, yes: bool, output: str) -> None:
    """Show the hash seed every router computes its mh (Maglev) tables from."""
    async with ctx.connect() as etcd:
        if renew:
            if not yes:
                raise Failure("a new seed sends every mh flow to a possibly different real "
                              "server at once (established ones survive only on the active "
                              "router); add --yes to do it")
            doc = await new_seed(etcd, ctx.keys, f"{who()} (seed --new)")
            if output == "json":
                echo_json({"seed": doc.seed, "in_force": "stored", "stored": doc.model_dump(),
                           "junk": None, "default": default_seed(ctx.cluster)})
            else:
                click.echo(f"new seed {doc.seed} for cluster {ctx.cluster}")
            return
        state = await load_seed(etcd, ctx.keys)
    fallback = default_seed(ctx.cluster)
    if output == "json":
        stored = state.stored
        echo_json({"seed": stored.seed if stored is not None else fallback,
                   "in_force": "stored" if stored is not None else "default",
                   "stored": stored.model_dump() if stored is not None else None,
                   "junk": state.junk, "default": fallback})
        return
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
