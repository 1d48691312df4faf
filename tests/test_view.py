"""The agent's watch-driven view against a real etcd: typed reads, junk counted once, and an
update decodes only the keys it touches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from support.loop_turns import counting

from agent.view import CHUNK, ClusterView
from cluster.config_follow import ConfigFollower
from cluster.documents import (
    AdminFlag,
    ClusterState,
    EvictionVote,
    HealthVerdict,
    LeaderDoc,
    LeaderKey,
    NodeRecord,
    ReleasedMarker,
    SwitchoverRequest,
)
from cluster.etcd.client import KV, Etcd
from cluster.etcd.watch import Change, Snapshot
from cluster.keys import Keys

pytestmark = pytest.mark.etcd


async def until(view: ClusterView, ok: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(10):
        while not ok():
            view.changed.clear()
            if ok():
                return
            await view.changed.wait()
    assert ok(), what


async def test_view_follows_typed_state(etcd: Etcd, cluster_name: str) -> None:
    keys = Keys(cluster_name)
    await etcd.put(keys.health("http", "web1"), HealthVerdict(state="up", term=3).encode())
    await etcd.put(keys.node("r1"), NodeRecord(role="backup").encode())
    await etcd.put(keys.node("ghost"), "{bad")
    view = ClusterView(etcd, keys, ConfigFollower(etcd, keys))
    task = asyncio.create_task(view.run())
    try:
        await until(view, lambda: view.leader_known, "snapshot")
        assert view.registered() == {"r1", "ghost"} and view.stats.junk == 1
        assert view.leader is None and view.switchover() is None and view.released() is None
        web1 = view.state.health[("http", "web1")]

        lease, _ = await etcd.grant(10)
        await etcd.put(keys.leader, LeaderDoc(node="r1").encode(), lease=lease)
        await etcd.put(keys.switchover, SwitchoverRequest(to="r2", term=7).encode())
        await etcd.put(keys.released, ReleasedMarker(node="r0", term=6).encode())
        await etcd.put(keys.eviction("r2"), EvictionVote(term=7, node="r1").encode())
        await etcd.put(keys.admin("http", "web2"), AdminFlag(state="disable").encode())
        await etcd.put(keys.health("http", "web2"), HealthVerdict(state="down").encode())
        await until(view, lambda: ("http", "web2") in view.state.health, "updates")
        assert view.leader is not None and view.leader.node == "r1"
        assert view.leader.lease == lease and view.last_term == view.leader.term
        assert view.switchover() == ("r2", 7) and view.released() == ("r0", 6)
        assert view.evict_votes() == (("r2", 7),)
        assert view.admin() == {("http", "web2"): "disable"}
        # web1's verdict was decoded once, at the snapshot: updates touch only their keys
        assert view.state.health[("http", "web1")] is web1

        await etcd.put(keys.switchover, '{"to": 5, "term": "x"}')
        await etcd.delete(keys.node("ghost"))
        await until(view, lambda: view.registered() == {"r1"}, "ghost gone")
        assert view.switchover() is None and view.stats.junk == 2
        assert list(view.state.junk) == [keys.switchover]
        await etcd.revoke(lease)
        await until(view, lambda: view.leader is None, "leader gone")
        assert view.leader_absent_since is not None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_big_snapshot_lets_the_loop_run(etcd: Etcd, cluster_name: str) -> None:
    keys = Keys(cluster_name)
    value = HealthVerdict(state="up").encode().encode()
    kvs = [KV(keys.health("v", f"s{i}"), value, i + 1, i + 1, 1, 0)
           for i in range(int(CHUNK * 2.5))]
    view = ClusterView(etcd, keys, ConfigFollower(etcd, keys))
    async with counting() as turns:
        state = await view._rebuild(Snapshot({kv.key: kv for kv in kvs}, 1))
    assert state == ClusterState.from_kvs(keys, kvs) and len(state.health) == len(kvs)
    assert turns.count >= 2


async def applied_with_turns(etcd: Etcd, keys: Keys, n: int, per: int) -> tuple[int, list[int]]:
    """``n`` health keys, ``per`` to a transaction, applied as one watch response: (keys
    the view holds after, keys it held at each turn the loop had meanwhile)."""
    value = HealthVerdict(state="up").encode().encode()
    changes = [Change(keys.health("v", f"s{i}"), KV(keys.health("v", f"s{i}"), value,
                                                     i // per + 1, i // per + 1, 1, 0),
                      i // per + 1) for i in range(n)]
    view = ClusterView(etcd, keys, ConfigFollower(etcd, keys))
    seen: list[int] = []

    async def count() -> None:
        while True:
            seen.append(len(view.state.health))
            await asyncio.sleep(0)

    counter = asyncio.create_task(count())
    await asyncio.sleep(0)
    await view._apply_all(changes)
    counter.cancel()
    return len(view.state.health), [k for k in seen if 0 < k < n]


async def test_a_big_watch_response_lets_the_loop_run_between_transactions(
        etcd: Etcd, cluster_name: str) -> None:
    """Thousands of changes in one response: the loop gets turns, never inside one
    revision (a transaction), and the state ends as if applied at once."""
    n, per = int(CHUNK * 3.5), 100
    held, mid = await applied_with_turns(etcd, Keys(cluster_name), n, per)
    assert held == n
    assert len(mid) >= 3  # turns in between
    assert all(k % per == 0 for k in mid)  # only between two transactions


async def test_a_slow_watch_response_lets_the_loop_run_within_its_time_slice(
        etcd: Etcd, cluster_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer keys than CHUNK, but each slow to decode (a health group of many servers):
    the loop gets a turn once SLICE is spent, still only between two transactions."""
    monkeypatch.setattr("agent.view.SLICE", 0.0)  # every key is "slow"
    held, mid = await applied_with_turns(etcd, Keys(cluster_name), 50, 10)
    assert held == 50
    assert sorted(set(mid)) == [10, 20, 30, 40]  # a turn after each transaction only


async def test_a_leader_key_seen_directly_counts_only_if_newer(etcd: Etcd,
                                                               cluster_name: str) -> None:
    """pulse hands the view what a campaign or a resign learned of the leader key, with its
    revision: newer than the watch, so the watch's older events of the key must not undo it."""
    keys = Keys(cluster_name)
    now = [5.0]
    view = ClusterView(etcd, keys, ConfigFollower(etcd, keys), clock=lambda: now[0])

    def created(node: str, term: int, lease: int) -> KV:
        return KV(keys.leader, LeaderDoc(node=node).encode().encode(), term, term, 1, lease)

    await view._apply(Change(keys.leader, created("r1", 10, 1), 10))
    assert view.leader == LeaderKey("r1", 10, 1) and view.leader_known
    assert view.observe_leader(None, 12)  # we resigned: deleted at revision 12
    assert view.leader is None and view.leader_absent_since == 5.0
    await view._apply(Change(keys.leader, created("r1", 10, 1), 10))  # the watch, late
    assert view.leader is None
    now[0] = 6.0
    assert view.observe_leader(LeaderKey("r2", 15, 2), 15)  # a campaign won at 15
    assert view.leader == LeaderKey("r2", 15, 2) and view.leader_absent_since is None
    assert view.last_term == 15
    assert not view.observe_leader(None, 14) and view.leader is not None
    await view._apply(Change(keys.leader, None, 20))  # the watch's own newer news counts
    assert view.leader is None and view.leader_absent_since == 6.0
    # A snapshot replaces everything, even at an older revision (a restored store).
    assert view.observe_leader(None, 10**12)
    await etcd.put(keys.leader, LeaderDoc(node="r3").encode())
    task = asyncio.create_task(view.run())
    try:
        await until(view, lambda: view.leader is not None, "the snapshot")
        assert view.leader is not None and view.leader.node == "r3"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_history_writes_wake_no_agent_and_the_view_remembers_terms(
        etcd: Etcd, cluster_name: str) -> None:
    """The cluster's history changes nothing an agent decides on: no wake-up (every wake-up
    costs the data plane a pass over every server). Who held each recent term is kept for
    the takeover's history."""
    from cluster.documents import FailoverEvent

    keys = Keys(cluster_name)
    view = ClusterView(etcd, keys, ConfigFollower(etcd, keys))
    task = asyncio.create_task(view.run())
    try:
        await until(view, lambda: view.leader_known, "snapshot")
        lease, _ = await etcd.grant(10)
        await etcd.put(keys.leader, LeaderDoc(node="r1").encode(), lease=lease)
        await until(view, lambda: view.leader is not None, "leader")
        term = view.leader.term  # type: ignore[union-attr]
        await etcd.delete(keys.leader)
        await until(view, lambda: view.leader is None, "leader gone")
        assert view.leader_gone_at is not None and view.leader_before(term + 1) == ("r1", term)
        assert view.leader_before(term) is None
        view.changed.clear()
        version = view.version
        await etcd.put(keys.history_event("failover", "x"), FailoverEvent(node="r2").encode())
        await asyncio.sleep(0.3)
        assert not view.changed.is_set() and view.version == version
        assert keys.history_event("failover", "x") not in view.kvs
    finally:
        task.cancel()
