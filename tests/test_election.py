"""The leader key against a real etcd: campaign, fenced writes, resign (typed txn ops)."""

from __future__ import annotations

import pytest

from cluster.election import campaign, fenced_put, read_leader, resign
from cluster.etcd.client import CreateRevision, Delete, Etcd, Get, ModRevision, Put
from cluster.keys import Keys

pytestmark = pytest.mark.etcd


async def test_campaign_resign_and_fencing(etcd: Etcd, cluster_name: str) -> None:
    keys = Keys(cluster_name)
    lease_a, _ = await etcd.grant(10)
    lease_b, _ = await etcd.grant(10)
    try:
        won, key = await campaign(etcd, keys, "a", lease_a)
        assert won and key is not None and key.node == "a" and key.lease == lease_a
        assert await read_leader(etcd, keys) == key
        lost, held = await campaign(etcd, keys, "b", lease_b)
        assert not lost and held == key  # the loser learns who holds it, from the same txn
        assert await fenced_put(etcd, keys, key.term, {keys.prefix + "x": "1"})
        assert not await fenced_put(etcd, keys, key.term + 1, {keys.prefix + "x": "2"})
        assert (await etcd.get(keys.prefix + "x")).value == b"1"  # type: ignore[union-attr]
        assert not await resign(etcd, keys, key.term + 1, "a")
        assert await resign(etcd, keys, key.term, "a")
        assert await read_leader(etcd, keys) is None
        assert await etcd.get(keys.released) is not None
        won, newer = await campaign(etcd, keys, "b", lease_b)
        assert won and newer is not None and newer.term > key.term
        assert not await fenced_put(etcd, keys, key.term, {}, (keys.leader,))  # deposed
    finally:
        await etcd.revoke(lease_a)
        await etcd.revoke(lease_b)


async def test_txn_ops_and_guards(etcd: Etcd, cluster_name: str) -> None:
    k = Keys(cluster_name).prefix + "k"
    first = await etcd.txn([CreateRevision(k, 0)], [Put(k, "1"), Get(k)], [Get(k)])
    assert first.succeeded and first.ranges[0] == ()
    assert [kv.value for kv in first.ranges[1]] == [b"1"]
    again = await etcd.txn([CreateRevision(k, 0)], [Put(k, "x")], [Get(k)])
    assert not again.succeeded and again.ranges[0][0].value == b"1"
    kv = again.ranges[0][0]
    assert not (await etcd.txn([ModRevision(k, kv.mod_revision + 1)], [Delete(k)])).succeeded
    assert (await etcd.txn([ModRevision(k, kv.mod_revision)], [Delete(k)])).succeeded
    assert await etcd.get(k) is None
    lease, _ = await etcd.grant(10)
    try:
        await etcd.txn([], [Put(k, b"2", lease)])
        got = await etcd.get(k)
        assert got is not None and got.lease == lease and got.value == b"2"
    finally:
        await etcd.revoke(lease)
