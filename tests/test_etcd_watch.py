"""The prefix watch against a real etcd: restarts, compaction, no lost events."""

from __future__ import annotations

import asyncio

import pytest

from cluster.etcd.client import Etcd
from cluster.etcd.settings import settings_from
from cluster.etcd.watch import Change, PrefixWatch, Snapshot
from lvslab.etcd_server import LocalEtcd

pytestmark = pytest.mark.etcd


class Mirror:
    """Consumes a PrefixWatch into a dict, as the agent does."""

    def __init__(self, watch: PrefixWatch) -> None:
        self.watch = watch
        self.view: dict[str, bytes] = {}
        self.snapshots = 0
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for update in self.watch:
            if isinstance(update, Snapshot):
                self.snapshots += 1
                self.view = {k: kv.value for k, kv in update.items.items()}
            else:
                for ch in update:
                    assert isinstance(ch, Change)
                    if ch.kv is None:
                        self.view.pop(ch.key, None)
                    else:
                        self.view[ch.key] = ch.kv.value
            self.changed.set()

    async def wait_for(self, expected: dict[str, bytes], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while self.view != expected:
                self.changed.clear()
                await self.changed.wait()

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_snapshot_then_changes(etcd: Etcd, cluster_name: str) -> None:
    prefix = f"/lvs/{cluster_name}/"
    await etcd.put(prefix + "a", "1")
    mirror = Mirror(PrefixWatch(etcd, prefix))
    try:
        await mirror.wait_for({prefix + "a": b"1"})
        await etcd.put(prefix + "b", "2")
        await etcd.delete(prefix + "a")
        await etcd.put("/elsewhere/" + cluster_name, "x")  # outside the prefix: not seen
        await mirror.wait_for({prefix + "b": b"2"})
        assert mirror.snapshots == 1
    finally:
        await mirror.stop()


async def test_watch_survives_etcd_restart_without_losing_events(private_etcd: LocalEtcd) -> None:
    prefix = "/lvs/restart/"
    async with Etcd(settings_from(private_etcd.url, environ={}, timeout=2.0)) as etcd:
        watch = PrefixWatch(etcd, prefix, max_backoff=0.3)
        mirror = Mirror(watch)
        try:
            await etcd.put(prefix + "k0", "v0")
            await mirror.wait_for({prefix + "k0": b"v0"})
            private_etcd.stop()
            await asyncio.sleep(0.5)  # the stream breaks while etcd is down
            private_etcd.start()
            # Written by someone else right after the restart, before our watch is back.
            async with Etcd(settings_from(private_etcd.url, environ={})) as other:
                for i in range(1, 20):
                    await other.put(prefix + f"k{i}", f"v{i}")
                await other.delete(prefix + "k0")
            expected = {prefix + f"k{i}": f"v{i}".encode() for i in range(1, 20)}
            await mirror.wait_for(expected)
            assert watch.stats.reconnects >= 1
            assert mirror.snapshots == 1  # resumed from its revision, no reload needed
        finally:
            await mirror.stop()


@pytest.mark.slow
async def test_watch_reloads_when_its_revision_was_compacted(private_etcd: LocalEtcd) -> None:
    prefix = "/lvs/compact/"
    async with Etcd(settings_from(private_etcd.url, environ={}, timeout=2.0)) as etcd:
        # A long first retry: the writes and the compaction happen before it reconnects.
        watch = PrefixWatch(etcd, prefix, min_backoff=4.0, max_backoff=4.0)
        mirror = Mirror(watch)
        try:
            await etcd.put(prefix + "a", "1")
            await mirror.wait_for({prefix + "a": b"1"})
            private_etcd.stop()
            await asyncio.sleep(0.3)
            private_etcd.start()
            async with Etcd(settings_from(private_etcd.url, environ={})) as other:
                await other.put(prefix + "a", "2")
                await other.put(prefix + "b", "3")
                rev = await other.revision()
                await other.compact(rev)
            await mirror.wait_for({prefix + "a": b"2", prefix + "b": b"3"})
            assert watch.stats.reloads == 1
            assert mirror.snapshots == 2
        finally:
            await mirror.stop()
