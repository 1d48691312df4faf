"""The health shell against a real etcd: nanny checking real sockets on loopback, the view's
watch feeding the core, verdicts fenced by the term and only while licensed, observations
bound to the lease, batches of at most TXN_OPS operations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.loop_turns import counting

from agent.health import TXN_OPS, HealthService
from agent.view import ClusterView
from cluster.config_follow import ConfigFollower
from cluster.documents import ClusterState, HealthVerdict, Observation
from cluster.documents.health import HealthGroup, ObservationGroup, group_of
from cluster.election import campaign, resign
from cluster.etcd.client import KV, Etcd
from cluster.health import Health, ServerKey
from cluster.health_layout import GROUP_SIZE
from cluster.keys import Keys
from cluster.model import LvsConfig

pytestmark = pytest.mark.etcd

LO = "127.0.0.1"
A, B = ServerKey("web", "a"), ServerKey("web", "b")


async def until(ok: Callable[[], object], what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def eventually(read: Callable[[], object], ok: Callable[[object], bool], what: str,
                     limit: float = 10.0) -> object:
    """Poll an async read until ``ok`` of its result."""
    deadline = time.monotonic() + limit
    while True:
        value = await read()  # type: ignore[misc]
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {value!r}")
        await asyncio.sleep(0.02)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind((LO, 0))
        return s.getsockname()[1]


def config(servers: dict[str, int], policy: str = "active") -> LvsConfig:
    return LvsConfig(health_policy=policy, virtuals=[{
        "name": "web", "address": "10.0.0.100 eth0:1", "timeout": 1.0, "interval": 0.1,
        "reentry": 0,
        "servers": [{"name": n, "address": LO, "port": p} for n, p in servers.items()]}])


@dataclass
class Router:
    """One router's health service, wired to its own view as pulse wires it."""

    etcd: Etcd
    keys: Keys
    node: str
    lease: int | None
    licensed: bool = True
    changes: int = 0
    programming: asyncio.Event | None = None  # set: "the data plane is programming"
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.view = ClusterView(self.etcd, self.keys, ConfigFollower(self.etcd, self.keys))
        self.health = HealthService(self.etcd, self.keys, self.node, self.view,
                                    on_change=self._changed, lease=lambda: self.lease,
                                    licensed=lambda: self.licensed, quiet=self._quiet)

    async def _quiet(self) -> None:
        while self.programming is not None and self.programming.is_set():
            await asyncio.sleep(0.01)

    def _changed(self) -> None:
        self.changes += 1

    async def start(self, cfg: LvsConfig) -> None:
        self.tasks.append(asyncio.create_task(self.view.run()))
        await until(lambda: self.view.leader_known, "the view's snapshot")
        self.health.configure(cfg)
        self.tasks.append(asyncio.create_task(self.health.run()))
        self.tasks.append(asyncio.create_task(self._forward()))

    async def _forward(self) -> None:
        while True:
            await self.view.changed.wait()
            self.view.changed.clear()
            self.health.view_changed()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def routers(etcd: Etcd, cluster_name: str) -> AsyncIterator[Callable[..., Router]]:
    made: list[Router] = []
    leases: list[int] = []

    async def lease() -> int:
        lease_id, _ = await etcd.grant(30)
        leases.append(lease_id)
        return lease_id

    def make(node: str, lease_id: int | None) -> Router:
        router = Router(etcd, Keys(cluster_name), node, lease_id)
        made.append(router)
        return router

    make.lease = lease  # type: ignore[attr-defined]
    yield make
    for router in made:
        await router.stop()
    for lease_id in leases:
        with contextlib.suppress(Exception):
            await etcd.revoke(lease_id)


@pytest.fixture
async def ok_port() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, LO, 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def kv(etcd: Etcd, key: str) -> KV | None:
    return await etcd.get(key)


async def stored(etcd: Etcd, keys: Keys) -> ClusterState:
    """What etcd holds under the cluster, read as every router reads it."""
    kvs, _ = await etcd.get_prefix(keys.prefix)
    return ClusterState.from_kvs(keys, kvs)


async def verdict(etcd: Etcd, keys: Keys, key: ServerKey) -> HealthVerdict | None:
    return (await stored(etcd, keys)).health.get(key)


async def observation(etcd: Etcd, keys: Keys, node: str, key: ServerKey) -> Observation | None:
    return (await stored(etcd, keys)).observations.get(key, {}).get(node)


async def edit_verdicts(etcd: Etcd, keys: Keys, changes: dict[ServerKey, HealthVerdict | None],
                        ) -> None:
    """Edit the stored verdicts by hand, as an operator with etcdctl would: the group
    documents that hold them, rewritten."""
    for key, doc in changes.items():
        group = keys.health_group(key.virtual, 0)
        found = await etcd.get(group)
        servers = dict(HealthGroup.decode(found.value).servers) if found else {}
        if doc is None:
            servers.pop(key.server, None)
        else:
            servers[key.server] = doc
        await etcd.put(group, group_of(servers, HealthGroup).encode())


async def test_the_active_writes_puts_back_and_removes(
        etcd: Etcd, routers: Callable[..., Router], ok_port: int) -> None:
    lease = await routers.lease()  # type: ignore[attr-defined]
    r1 = routers("r1", lease)
    keys = r1.keys
    won, leader = await campaign(etcd, keys, "r1", lease)
    assert won and leader is not None
    await r1.start(config({"a": ok_port, "b": closed_port()}))
    r1.health.activate(leader.term)
    a = await eventually(lambda: verdict(etcd, keys, A), lambda v: v is not None and
                         v.state == "up", "a up")
    b = await eventually(lambda: verdict(etcd, keys, B), lambda v: v is not None and
                         v.state == "down", "b down")
    assert a.term == b.term == leader.term and a.observed_by == ("r1",)  # type: ignore[union-attr]
    seen = await eventually(lambda: kv(etcd, keys.observation_group("r1", "web", 0)),
                            lambda v: v is not None, "our observations of web")
    assert seen.lease == lease  # type: ignore[union-attr]
    assert ObservationGroup.decode(seen.value).servers["a"].state == "up"  # type: ignore[union-attr]
    assert r1.changes >= 2 and r1.health.for_dataplane()[A].state == "up"

    # Deleted and overwritten by hand: put back as decided.
    await edit_verdicts(etcd, keys, {A: None, B: HealthVerdict(state="up", term=1)})
    await eventually(lambda: verdict(etcd, keys, A), lambda v: v == a, "a put back")
    await eventually(lambda: verdict(etcd, keys, B), lambda v: v == b, "b put back")

    # Not licensed at the instant of the write: nothing written until it is again.
    r1.licensed = False
    await edit_verdicts(etcd, keys, {A: None})
    await asyncio.sleep(0.6)
    assert await verdict(etcd, keys, A) is None and r1.health.write_errors >= 1
    r1.licensed = True
    await eventually(lambda: verdict(etcd, keys, A), lambda v: v == a, "a put back when licensed")

    # No longer configured: verdict and observation removed.
    r1.health.configure(config({"a": ok_port}))
    await eventually(lambda: verdict(etcd, keys, B), lambda v: v is None, "b's verdict gone")
    await eventually(lambda: observation(etcd, keys, "r1", B), lambda v: v is None,
                     "b's observation gone")
    assert await observation(etcd, keys, "r1", A) is not None


async def test_a_new_active_starts_warm_and_rewrites_nothing_still_true(
        etcd: Etcd, routers: Callable[..., Router], ok_port: int) -> None:
    cfg = config({"a": ok_port, "b": closed_port()})
    l1, l2 = await routers.lease(), await routers.lease()  # type: ignore[attr-defined]
    r1, r2 = routers("r1", l1), routers("r2", l2)
    keys = r1.keys
    _, leader = await campaign(etcd, keys, "r1", l1)
    assert leader is not None
    await r1.start(cfg)
    r1.health.activate(leader.term)
    await eventually(lambda: verdict(etcd, keys, B), lambda v: v is not None and
                     v.state == "down", "b down")
    await eventually(lambda: verdict(etcd, keys, A), lambda v: v is not None and
                     v.state == "up", "a up")
    before = await kv(etcd, keys.health_group("web", 0))
    await r2.start(cfg)  # a backup: programs the shared view, starts its checks warm from it
    await until(lambda: {k: h.state for k, h in r2.health.for_dataplane().items()}
                == {A: "up", B: "down"}, "r2 follows the verdicts")
    assert {k: h.state for k, h in r2.health.engine.snapshot().items()} == {A: "up", B: "down"}
    r1.health.deactivate()
    assert await resign(etcd, keys, leader.term, "r1") is not None
    won, new = await campaign(etcd, keys, "r2", l2)
    assert won and new is not None
    r2.health.activate(new.term)
    r2.health.view_changed()
    await asyncio.sleep(0.5)  # checks ran meanwhile: they agree with the stored verdicts
    after = await kv(etcd, keys.health_group("web", 0))
    assert after == before  # same revision: nothing rewritten at the failover
    assert r2.health.term == new.term and r2.health.for_dataplane()[A].state == "up"


async def test_a_rekeyed_active_writes_what_the_lost_term_could_not(
        etcd: Etcd, routers: Callable[..., Router], ok_port: int) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), LO, 0)
    port = server.sockets[0].getsockname()[1]
    l1 = await routers.lease()  # type: ignore[attr-defined]
    r1 = routers("r1", l1)
    keys = r1.keys
    _, leader = await campaign(etcd, keys, "r1", l1)
    assert leader is not None
    await r1.start(config({"a": port, "b": ok_port}))
    r1.health.activate(leader.term)
    await eventually(lambda: verdict(etcd, keys, A), lambda v: v is not None and
                     v.state == "up", "a up")
    await eventually(lambda: observation(etcd, keys, "r1", B), lambda v: v is not None,
                     "our observation of b")
    await etcd.revoke(l1)  # the key (and our observations) went with the lease
    r1.lease = None
    server.close()
    await server.wait_closed()  # a goes down now: the write fails, the term is gone
    await until(lambda: r1.health.for_dataplane()[A].state == "down", "a down here")
    await asyncio.sleep(0.3)
    assert (await verdict(etcd, keys, A)).state == "up"  # type: ignore[union-attr]
    l2 = await routers.lease()  # type: ignore[attr-defined]
    won, again = await campaign(etcd, keys, "r1", l2)
    assert won and again is not None and again.term > leader.term
    r1.lease = l2
    r1.health.rekeyed(again.term)
    await eventually(lambda: verdict(etcd, keys, A), lambda v: v is not None and
                     v.state == "down", "a down in etcd")
    # Our observations, lost with the old lease, are back on the new one: a's (it changed
    # meanwhile) and b's (it did not).
    seen = await eventually(lambda: kv(etcd, keys.observation_group("r1", "web", 0)),
                            lambda v: v is not None, "our observations back")
    assert seen.lease == l2  # type: ignore[union-attr]
    assert set(ObservationGroup.decode(seen.value).servers) == {"a", "b"}  # type: ignore[union-attr]


def many(virtuals: int, servers: int, port: int) -> LvsConfig:
    return LvsConfig(virtuals=[{
        "name": f"v{v}", "address": f"10.0.{v // 250}.{v % 250 + 1} eth0:1", "timeout": 1.0,
        "interval": 0.1, "reentry": 0,
        "servers": [{"name": f"s{i}", "address": LO, "port": port} for i in range(servers)]}
        for v in range(virtuals)])


async def test_writes_go_in_transactions_of_at_most_txn_ops(
        etcd: Etcd, routers: Callable[..., Router], ok_port: int) -> None:
    n = 2 * TXN_OPS + 50  # virtuals: a group document each
    lease = await routers.lease()  # type: ignore[attr-defined]
    r1 = routers("r1", lease)
    keys = r1.keys
    _, leader = await campaign(etcd, keys, "r1", lease)
    assert leader is not None
    await r1.start(many(n, 2, ok_port))
    r1.health.activate(leader.term)

    async def ups() -> int:
        return sum(v.state == "up" for v in (await stored(etcd, keys)).health.values())

    await eventually(ups, lambda up: up == 2 * n, "every verdict up")
    for prefix in (keys.health_prefix, keys.observations_prefix):
        kvs, _ = await eventually(lambda p=prefix: etcd.get_prefix(p),  # type: ignore[assignment]
                                  lambda got: len(got[0]) == n, "a group per virtual")
        per_txn: dict[int, int] = {}
        for x in kvs:
            per_txn[x.mod_revision] = per_txn.get(x.mod_revision, 0) + 1
        assert len(kvs) == n and max(per_txn.values()) <= TXN_OPS
    assert r1.health.writes >= n and r1.health.write_errors == 0


async def test_a_big_virtual_is_sharded_and_every_server_is_in_one_group(
        etcd: Etcd, routers: Callable[..., Router], ok_port: int) -> None:
    """A virtual above GROUP_SIZE servers is stored in shards; when it shrinks, the shards
    it no longer has go, and no server is ever stored twice once the writes settle."""
    lease = await routers.lease()  # type: ignore[attr-defined]
    r1 = routers("r1", lease)
    keys = r1.keys
    _, leader = await campaign(etcd, keys, "r1", lease)
    assert leader is not None
    await r1.start(many(1, 3 * GROUP_SIZE, ok_port))
    r1.health.activate(leader.term)

    async def groups(prefix: str) -> dict[str, set[str]]:
        kvs, _ = await etcd.get_prefix(prefix)
        return {x.key[len(prefix):]: set(json.loads(x.value)["servers"]) for x in kvs}

    def once(found: dict[str, set[str]], servers: int) -> bool:
        names = [name for members in found.values() for name in members]
        return len(names) == len(set(names)) == servers

    big = await eventually(lambda: groups(keys.health_prefix),
                           lambda g: once(g, 3 * GROUP_SIZE), "every verdict stored once")
    assert set(big) == {f"v0/*{n}" for n in range(3)}  # type: ignore[arg-type]
    assert all(len(m) < 2 * GROUP_SIZE for m in big.values())  # type: ignore[union-attr]
    r1.health.configure(many(1, GROUP_SIZE // 2, ok_port))
    small = await eventually(lambda: groups(keys.health_prefix),
                             lambda g: set(g) == {"v0/*0"} and once(g, GROUP_SIZE // 2),
                             "one group of the servers left")
    assert small == {"v0/*0": {f"s{i}" for i in range(GROUP_SIZE // 2)}}
    await eventually(lambda: groups(keys.observations_prefix),
                     lambda g: set(g) == {"r1/v0/*0"} and once(g, GROUP_SIZE // 2),
                     "our observations in one group too")


async def test_per_server_keys_of_the_layout_before_are_read_and_moved_into_groups(
        etcd: Etcd, routers: Callable[..., Router], ok_port: int) -> None:
    """A cluster upgraded from per-server keys: the stored verdicts still warm the new
    active (it rewrites nothing true), and it moves them into groups, then deletes them."""
    keys = routers("r0", None).keys
    old = HealthVerdict.of(Health("up", since=time.time() - 60, reason="connect ok",
                                  weight=1), 1)
    await etcd.put(keys.health(*A), old.encode())
    await etcd.put(keys.health("gone", "x"), old.encode())  # a virtual no longer configured
    lease = await routers.lease()  # type: ignore[attr-defined]
    r1 = routers("r1", lease)
    _, leader = await campaign(etcd, keys, "r1", lease)
    assert leader is not None
    await r1.start(config({"a": ok_port, "b": closed_port()}))
    assert r1.health.for_dataplane()[A] == old.to_health()  # read as before
    r1.health.activate(leader.term)
    await eventually(lambda: etcd.get_prefix(keys.health_prefix),
                     lambda got: [x.key for x in got[0]] == [keys.health_group("web", 0)],
                     "only the group left")
    state = await eventually(lambda: stored(etcd, keys),
                             lambda s: s.health.get(B, old).state == "down", "b down")
    assert state.health[A] == old  # kept as it was (warm), only moved
    assert not state.singles("health")


@pytest.mark.parametrize("active", [False, True])
async def test_a_big_config_is_taken_a_part_at_a_time_and_ends_as_in_one_go(
        etcd: Etcd, cluster_name: str, active: bool) -> None:
    """configure_async: more new servers than CONFIGURE_CHUNK go in parts, the loop running
    in between; the engine's targets and the core end as one configure() leaves them."""
    from agent.health.service import CONFIGURE_CHUNK

    keys = Keys(cluster_name)
    port = closed_port()

    def service() -> HealthService:
        view = ClusterView(etcd, keys, ConfigFollower(etcd, keys))
        return HealthService(etcd, keys, "r1", view, on_change=lambda: None,
                             lease=lambda: None)

    def state(h: HealthService) -> tuple[object, ...]:
        def of(health: Any) -> tuple[object, ...]:  # not when: made at different instants
            return (health.state, health.reason, health.weight)

        return ({k: of(v) for k, v in h.engine.snapshot().items()},
                {k: of(v) for k, v in h.core.own.items()},
                {k: of(v) for k, v in h.core.observed.items()},
                set(h.core._observations_due), {k: of(v) for k, v in h.core.plane.items()},
                {k: (v.state, v.term) for k, v in h.core.verdicts.items()},
                set(h.core._verdicts_due))

    n = int(CONFIGURE_CHUNK * 2.5)
    first = config({f"s{i}": port for i in range(n)})
    second = config({f"s{i}": port for i in range(n // 2, n + CONFIGURE_CHUNK)})
    one, parts = service(), service()
    if active:
        one.activate(5)
        parts.activate(5)
    for cfg in (first, second):
        one.configure(cfg)
        async with counting() as turns:
            await parts.configure_async(cfg)
        assert turns.count >= 2  # the loop ran while it was configured
        assert state(parts) == state(one)
    assert len(parts.engine.snapshot()) == n - n // 2 + CONFIGURE_CHUNK
    assert not active or len(parts.core.verdicts) == len(parts.core.own)


async def test_publication_waits_while_the_data_plane_programs(
        etcd: Etcd, routers: Callable[..., Router], ok_port: int) -> None:
    """The data plane first, etcd after: nothing is published while a pass is under way
    (pulse passes DataPlane.quiet), and everything due is published when it ends."""
    lease = await routers.lease()  # type: ignore[attr-defined]
    r1 = routers("r1", lease)
    r1.programming = asyncio.Event()
    r1.programming.set()
    won, leader = await campaign(etcd, r1.keys, "r1", lease)
    assert won and leader is not None
    await r1.start(config({"a": ok_port}))
    r1.health.activate(leader.term)
    await until(lambda: r1.health.for_dataplane().get(A) is not None
                and r1.health.for_dataplane()[A].state == "up", "a checked up")
    await asyncio.sleep(0.5)
    assert await verdict(etcd, r1.keys, A) is None and r1.health.writes == 0
    assert await observation(etcd, r1.keys, "r1", A) is None
    r1.programming.clear()
    await eventually(lambda: verdict(etcd, r1.keys, A),
                     lambda v: v is not None and v.state == "up", "a's verdict published")
    assert await observation(etcd, r1.keys, "r1", A) is not None
