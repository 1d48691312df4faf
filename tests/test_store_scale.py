"""A config of 40,000 real servers in a stock etcd (default request limit 1.5 MiB): pushed in
bounded transactions, switched atomically by the head, changed by writing only what changed,
followed by a reader; a damaged part never becomes a config."""

from __future__ import annotations

import asyncio
import json

import pytest

from agent.config_gc import PartCollector, collectable
from cluster import lvscf
from cluster.config_follow import ConfigFollower
from cluster.config_layout import PART_BYTES
from cluster.documents import ClusterState, NodeRecord
from cluster.etcd.client import Etcd
from cluster.keys import Keys
from cluster.model import LvsConfig
from cluster.store import BATCH_BYTES, ConfigStore, StoredConfigError
from lvslab.etcd_server import LocalEtcd
from tests.support.big_config import big_cf

pytestmark = pytest.mark.etcd


def parsed(text: str) -> LvsConfig:
    cfg = lvscf.parse(text, "big.cf").config
    assert cfg is not None
    return cfg


@pytest.fixture(scope="module")
def text_40k() -> str:
    return big_cf(2500, 16)


@pytest.mark.scale
async def test_forty_thousand_servers_push_and_load(etcd: Etcd, cluster_name: str,
                                                    text_40k: str) -> None:
    keys = Keys(cluster_name)
    store = ConfigStore(etcd, keys)
    cfg = parsed(text_40k)
    result = await store.push(cfg, text_40k, by="tester")
    parts, nbytes = result.written
    assert parts == len(result.stored.parts) > 2500 and nbytes > 8 * 1024 * 1024
    back = await store.load()
    assert back is not None and back.config == cfg and back.source == text_40k
    kvs, _ = await etcd.scan(keys.config_parts_prefix, page=300)
    assert {kv.key.rsplit("/", 1)[1] for kv in kvs} == back.parts
    assert max(len(kv.value) for kv in kvs) <= PART_BYTES
    head = json.loads((await etcd.get(keys.config)).value)  # type: ignore[union-attr]
    assert head["servers"] == 40000 and len((await etcd.get(keys.config)).value) < 16384  # type: ignore[union-attr]

    # One real server's weight changed: that virtual's part, a manifest chunk, a chunk of
    # the text and the head are written; nothing else.
    at = text_40k.index("virtual web1234 {")
    edited = (text_40k[:at] + text_40k[at:].replace("weight = 1\n", "weight = 3\n", 1)
              ).replace("serial_no = 1", "serial_no = 2", 1)
    again = await store.push(parsed(edited), edited)
    assert again.written[0] <= 4 and again.written[1] < BATCH_BYTES
    assert "virtual web1234 / server rs0: weight 1 -> 3" in again.changes
    assert (await store.load()).config.virtual("web1234").servers[0].weight == 3  # type: ignore[union-attr]

    # Every server changed: the changes are 40,000 lines, the history entry keeps 500.
    every = edited.replace("weight = 1\n", "weight = 4\n").replace("serial_no = 2",
                                                                      "serial_no = 3", 1)
    third = await store.push(parsed(every), every)
    assert len(third.changes) > 39000
    (entry,) = [h for h in await store.history() if h.serial_no == 3]
    assert len(entry.changes) == 500 and entry.changes[-1].startswith("... and 39,")


async def test_a_reader_follows_pushes_and_never_adopts_a_damaged_part(
        etcd: Etcd, etcd_server: LocalEtcd, cluster_name: str) -> None:
    keys = Keys(cluster_name)
    store = ConfigStore(etcd, keys)
    text = big_cf(300, 16)
    await store.push(parsed(text), text)
    seen: list[int] = []
    refused: list[str] = []
    follower = ConfigFollower(etcd, keys, lambda s: seen.append(s.serial_no),
                              lambda serial, why: refused.append(why))
    task = asyncio.create_task(follower.run())
    try:
        async with asyncio.timeout(20):
            while follower.current is None:
                await asyncio.sleep(0.01)
        # Junk written by hand into a part the next head will name: the push writes its
        # part, then someone overwrites it before the head switches (etcdctl), so the new
        # head names a damaged part.
        text2 = text.replace("serial_no = 1", "serial_no = 2", 1).replace(
            "timeout = 10", "timeout = 9", 1)
        result = await store.push(parsed(text2), text2)
        async with asyncio.timeout(20):
            while follower.current.serial_no != 2:
                follower.updated.clear()
                await follower.updated.wait()
        text3 = text2.replace("serial_no = 2", "serial_no = 3", 1).replace(
            "timeout = 9", "timeout = 8", 1)
        new = set((await store.push(parsed(text3), text3)).stored.parts) - result.stored.parts
        async with asyncio.timeout(20):
            while follower.current.serial_no != 3:
                follower.updated.clear()
                await follower.updated.wait()
        victim = sorted(new)[0]
        etcd_server.etcdctl("put", keys.config_part(victim), '{"kind": "source", "text": "x"}')
        # The same head again (a re-push of serial 3 with --force): it names the damaged part
        head = (await etcd.get(keys.config)).value  # type: ignore[union-attr]
        await etcd.put(keys.config, head)
        async with asyncio.timeout(20):
            while not refused:
                follower.updated.clear()
                await follower.updated.wait()
        assert f"part {victim} damaged" in refused[0]
        assert follower.current.serial_no == 3 and seen == [1, 2, 3]
        with pytest.raises(StoredConfigError, match="damaged"):
            await store.load()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_parts_no_head_names_go_once_every_router_runs_the_new_config(
        etcd: Etcd, cluster_name: str) -> None:
    keys = Keys(cluster_name)
    store = ConfigStore(etcd, keys)
    text = big_cf(120, 8)
    first = await store.push(parsed(text), text)
    text2 = text.replace("serial_no = 1", "serial_no = 2", 1).replace("weight = 1", "weight = 2")
    second = await store.push(parsed(text2), text2)
    old = first.stored.parts - second.stored.parts
    assert len(old) > 100

    async def state() -> ClusterState:
        kvs, _ = await etcd.scan(keys.prefix)
        return ClusterState.from_kvs(keys, kvs)

    async def register(node: str, serial: int) -> None:
        await etcd.put(keys.node(node), NodeRecord(node=node, role="backup",
                                                   config_serial=serial).encode())

    current = await store.load()
    await register("r1", 2)
    await register("r2", 1)  # r2 still runs serial 1: nothing goes
    st = await state()
    collector = PartCollector(etcd, keys, lambda: st, lambda: current, lambda: True)
    assert collectable(st, current) == [] and await collector.collect() == 0
    await register("r2", 2)
    st = await state()
    # A push in progress rewrites one of the old parts it needs again: the batch holding it
    # is left alone (its guard fails), and nothing a head names ever goes.
    needed = sorted(old)[0]
    await etcd.put(keys.config_part(needed), first_value := (
        await etcd.get(keys.config_part(needed))).value)  # type: ignore[union-attr]
    assert first_value
    removed = await collector.collect()
    assert 0 < removed < len(old)
    st = await state()
    assert needed in st.config_parts and current.parts <= set(st.config_parts)  # type: ignore[union-attr]
    removed += await PartCollector(etcd, keys, lambda: st, lambda: current,
                                   lambda: True).collect()
    left = set((await state()).config_parts)
    # The part the (never finished) push wrote after the head stays until a newer head.
    assert left == current.parts | {needed} and removed == len(old) - 1  # type: ignore[union-attr]
    assert (await store.load()).config == parsed(text2)  # type: ignore[union-attr]
    text3 = text2.replace("serial_no = 2", "serial_no = 3", 1)
    await store.push(parsed(text3), text3)
    current = await store.load()
    await register("r1", 3)
    await register("r2", 3)
    st = await state()
    assert await PartCollector(etcd, keys, lambda: st, lambda: current,
                               lambda: True).collect() >= 1
    assert set((await state()).config_parts) == current.parts  # type: ignore[union-attr]
