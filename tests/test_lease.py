"""The lease keeper against a real etcd: the deadline it proves, an etcd restart, a revoke."""

from __future__ import annotations

import asyncio
import time

import pytest

from cluster.etcd.client import Etcd, EtcdUnavailable
from cluster.etcd.lease import LeaseKeeper
from cluster.etcd.settings import settings_from
from lvslab.etcd_server import LocalEtcd

pytestmark = pytest.mark.etcd


async def until(cond, limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():
            await asyncio.sleep(0.02)


async def read_again(etcd: Etcd, key: str, limit: float = 10.0) -> object:
    """``etcd.get(key)``, tried again while etcd is unreachable: after a restart the
    keep-alive stream can be back before the unary calls' connection (grpc reconnects
    with backoff; under a loaded machine a get failed three times right after the
    lease's first refresh)."""
    async with asyncio.timeout(limit):
        while True:
            try:
                return await etcd.get(key)
            except EtcdUnavailable:
                await asyncio.sleep(0.1)


async def test_deadline_is_send_time_plus_ttl_and_survives_an_etcd_restart(
        private_etcd: LocalEtcd) -> None:
    async with Etcd(settings_from(private_etcd.url, environ={}, timeout=1.0)) as etcd:
        keeper = LeaseKeeper(etcd, ttl=2, interval=0.25)
        task = asyncio.create_task(keeper.run())
        try:
            await until(lambda: keeper.stats.refreshes >= 3)
            lease = keeper.lease_id
            assert lease is not None
            # Never later than now + TTL: the deadline is a lower bound of the server's.
            assert time.monotonic() < keeper.deadline <= time.monotonic() + 2
            await etcd.put("/lvs/lease-test", "x", lease=lease)
            private_etcd.stop()
            stuck = keeper.deadline
            await asyncio.sleep(0.6)
            assert keeper.deadline == stuck and keeper.stats.failures > 0
            private_etcd.start()
            await until(lambda: keeper.deadline > time.monotonic() + 1)
            assert keeper.lease_id == lease and keeper.stats.lost == 0  # etcd kept it
            assert (await read_again(etcd, "/lvs/lease-test")) is not None
            await keeper.revoke()
            assert keeper.lease_id is None and keeper.deadline == float("-inf")
            assert (await etcd.get("/lvs/lease-test")) is None  # its keys went with it
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_an_expired_lease_is_replaced(private_etcd: LocalEtcd) -> None:
    async with Etcd(settings_from(private_etcd.url, environ={}, timeout=1.0)) as etcd:
        keeper = LeaseKeeper(etcd, ttl=2, interval=0.25)
        task = asyncio.create_task(keeper.run())
        try:
            await until(lambda: keeper.lease_id is not None)
            first = keeper.lease_id
            await etcd.revoke(first)  # as fast eviction would, from another router
            await until(lambda: keeper.lease_id not in (None, first))
            assert keeper.stats.lost == 1 and keeper.stats.grants == 2
            await until(lambda: keeper.deadline > time.monotonic())
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
