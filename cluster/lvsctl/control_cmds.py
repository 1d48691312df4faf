"""lvsctl switchover: ask the active router to hand over, and wait for the new one."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import click

from ..documents import ClusterState, LeaderKey, SwitchoverRequest
from ..election import read_leader
from ..etcd.client import Etcd
from ..etcd.watch import PrefixWatch, Snapshot
from ..store import ConfigStore, now_iso, who
from .common import Ctx, Failure, echo_json, output_option, run

REQUEST_TTL = 10  # seconds: an unanswered request expires by itself


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
        leader = await read_leader(etcd, ctx.keys)
        if leader is None:
            raise Failure("no router is active: nothing to switch over")
        if target is not None:
            stored = await ConfigStore(etcd, ctx.keys).load()
            routers = [r.name for r in stored.config.effective_routers()] if stored else []
            if target not in routers:
                raise Failure(f"{target!r} is not a router of cluster {ctx.cluster} "
                              f"(routers: {', '.join(routers) or 'none'})")
            if target == leader.node:
                raise Failure(f"{target} is already the active router")
            if await etcd.get(ctx.keys.node(target)) is None:
                raise Failure(f"{target} is not running (no registration in etcd)")
        # The request lives as long as we wait for it (a slow router may answer late).
        lease, _ = await etcd.grant(max(REQUEST_TTL, math.ceil(wait_s)))
        request = SwitchoverRequest(to=target or "", term=leader.term, id=uuid.uuid4().hex,
                                    by=who(), reason="lvsctl switchover", at=now_iso())
        start = time.monotonic()
        await etcd.put(ctx.keys.switchover, request.encode(), lease=lease)
        if output != "json":
            click.echo(f"asked {leader.node} (term {leader.term}) to hand over"
                       + (f" to {target}" if target else ""))
        try:
            new = await asyncio.wait_for(_new_leader(ctx, etcd, leader, target), wait_s)
        except TimeoutError:
            raise Failure(f"no new active router after {wait_s:g}s "
                          "(see lvsctl status and the agents' logs)") from None
        ms = (time.monotonic() - start) * 1000
        if output == "json":
            echo_json({"previous": leader.node, "previous_term": leader.term,
                       "to": target or "", "node": new.node, "term": new.term,
                       "request": request.id, "ms": round(ms)})
            return
        click.echo(f"{new.node} is active (term {new.term}), {ms:.0f} ms after the request")


async def _new_leader(ctx: Ctx, etcd: Etcd, old: LeaderKey, target: str | None) -> LeaderKey:
    """Wait until a newer term is held and its router reports itself active."""
    state = ClusterState(ctx.keys)
    async for update in PrefixWatch(etcd, ctx.keys.prefix):
        if isinstance(update, Snapshot):
            state = ClusterState.from_kvs(ctx.keys, update.items.values())
        else:
            for change in update:
                state.apply(change.key, change.kv)
        key = state.leader
        if key is None or key.term <= old.term or (target is not None and key.node != target):
            continue
        node = state.nodes.get(key.node)
        if node is not None and node.role == "active" and node.term == key.term:
            return key
    raise AssertionError("unreachable")
