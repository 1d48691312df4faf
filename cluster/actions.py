"""Operator actions shared by ``lvsctl`` and ``lvsctl web``: drain, disable, enable a real
server; ask the active router to hand over. Each checks its input against the stored
config and says what it did in one line; bad input raises :class:`ActionError`."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from .documents import AdminFlag, ClusterState, LeaderKey, SwitchoverRequest
from .election import read_leader
from .etcd.client import Etcd
from .etcd.watch import PrefixWatch, Snapshot
from .keys import Keys
from .store import ConfigStore, now_iso, who

AdminState = Literal["drain", "disable"]
REQUEST_TTL = 10  # seconds: an unanswered switchover request expires by itself


class ActionError(ValueError):
    """The action cannot be done as asked (unknown name, nothing to switch over...)."""


@dataclass(frozen=True)
class Done:
    """What an action did: one line for people, and the same as JSON."""

    message: str
    data: dict[str, object]


async def set_admin(etcd: Etcd, keys: Keys, virtual: str, server: str,
                    state: AdminState | None, by: str | None = None) -> Done:
    """Drain or disable SERVER of VIRTUAL (``state``), or enable it again (None)."""
    stored = await ConfigStore(etcd, keys).load()
    if stored is None:
        raise ActionError(f"cluster {keys.cluster} has no configuration")
    try:
        v = stored.config.virtual(virtual)
    except KeyError:
        names = ", ".join(x.name for x in stored.config.virtuals) or "none"
        raise ActionError(f"no virtual {virtual!r} (virtuals: {names})") from None
    if server not in {s.name for s in v.servers}:
        names = ", ".join(s.name for s in v.servers) or "none"
        raise ActionError(f"virtual {virtual} has no server {server!r} (servers: {names})")
    key = keys.admin(virtual, server)
    if state is None:
        removed = await etcd.delete(key)
        return Done(f"{virtual}/{server}: enabled" + ("" if removed else " (was not drained "
                                                      "or disabled)"),
                    {"virtual": virtual, "server": server, "admin": None,
                     "was_set": bool(removed)})
    flag = AdminFlag(state=state, by=by or who(), at=now_iso())
    await etcd.put(key, flag.encode())
    return Done(f"{virtual}/{server}: {state}" + (
        "d (weight 0: existing connections continue, no new ones)" if state == "drain"
        else "d (out of the service)"),
        {"virtual": virtual, "server": server, "admin": state, "by": flag.by, "at": flag.at})


@dataclass(frozen=True)
class Asked:
    """A switchover request in etcd: whom it asked, and when (monotonic)."""

    leader: LeaderKey
    target: str | None
    at: float
    request: SwitchoverRequest


async def ask_switchover(etcd: Etcd, keys: Keys, target: str | None, wait_s: float,
                         by: str | None = None, reason: str = "lvsctl switchover") -> Asked:
    """Ask the active router to hand over (to ``target``, or the best backup)."""
    leader = await read_leader(etcd, keys)
    if leader is None:
        raise ActionError("no router is active: nothing to switch over")
    if target is not None:
        stored = await ConfigStore(etcd, keys).load()
        routers = [r.name for r in stored.config.effective_routers()] if stored else []
        if target not in routers:
            raise ActionError(f"{target!r} is not a router of cluster {keys.cluster} "
                              f"(routers: {', '.join(routers) or 'none'})")
        if target == leader.node:
            raise ActionError(f"{target} is already the active router")
        if await etcd.get(keys.node(target)) is None:
            raise ActionError(f"{target} is not running (no registration in etcd)")
    # The request lives as long as we wait for it (a slow router may answer late).
    lease, _ = await etcd.grant(max(REQUEST_TTL, math.ceil(wait_s)))
    request = SwitchoverRequest(to=target or "", term=leader.term, id=uuid.uuid4().hex,
                                by=by or who(), reason=reason, at=now_iso())
    at = time.monotonic()
    await etcd.put(keys.switchover, request.encode(), lease=lease)
    return Asked(leader, target, at, request)


async def new_leader(etcd: Etcd, keys: Keys, asked: Asked, wait_s: float) -> LeaderKey:
    """The new active router once it reports itself active; TimeoutError after ``wait_s``."""
    return await asyncio.wait_for(_new_leader(etcd, keys, asked.leader, asked.target), wait_s)


async def _new_leader(etcd: Etcd, keys: Keys, old: LeaderKey, target: str | None) -> LeaderKey:
    state = ClusterState(keys)
    async for update in PrefixWatch(etcd, keys.prefix):
        if isinstance(update, Snapshot):
            state = ClusterState.from_kvs(keys, update.items.values())
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
