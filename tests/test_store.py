"""The stored configuration in a real etcd: push rules, junk handling, the follower."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cluster import lvscf
from cluster.config_follow import ConfigFollower
from cluster.etcd.client import Etcd
from cluster.keys import Keys
from cluster.model import AddrDev, ConfigError, LvsConfig
from cluster.status import read_status
from cluster.store import ConfigStore, PushRefused, StoredConfig, StoredConfigError
from lvslab.etcd_server import LocalEtcd

pytestmark = pytest.mark.etcd

EXAMPLE = "deploy/examples/lvs.cf"


def example(serial: int = 1, **virtual_changes: object) -> LvsConfig:
    cfg = lvscf.load(EXAMPLE)
    virtuals = cfg.virtuals
    if virtual_changes:
        first = virtuals[0].model_copy(update=virtual_changes)
        virtuals = (first, *virtuals[1:])
    return cfg.model_copy(update={"serial_no": serial, "virtuals": virtuals})


async def test_push_load_round_trip_and_history(etcd: Etcd, cluster_name: str) -> None:
    store = ConfigStore(etcd, Keys(cluster_name))
    assert await store.load() is None
    cfg = example(3)
    result = await store.push(cfg, "source text", by="tester")
    assert result.previous is None and result.changes == ["new configuration"]
    stored = await store.load()
    assert stored is not None
    assert stored.config == cfg and stored.serial_no == 3 and stored.source == "source text"
    assert stored.pushed_by == "tester"
    # The head and its parts are readable JSON with the documented fields.
    keys = Keys(cluster_name)
    raw = json.loads((await etcd.get(keys.config)).value)  # type: ignore[union-attr]
    assert raw["format"] == 2 and raw["serial_no"] == 3 and raw["virtuals"] == 2
    (manifest,) = raw["manifest"]
    part = json.loads((await etcd.get(keys.config_part(manifest))).value)  # type: ignore[union-attr]
    assert part["kind"] == "manifest" and [e[0] for e in part["entries"]] == ["http", "https"]
    assert stored.parts == {manifest, *(e[1] for e in part["entries"]), *raw["source"]}
    history = await store.history()
    assert [h.serial_no for h in history] == [3]


async def test_push_refuses_serial_not_newer_unless_forced(etcd: Etcd, cluster_name: str) -> None:
    store = ConfigStore(etcd, Keys(cluster_name))
    await store.push(example(5), "")
    with pytest.raises(PushRefused, match="serial_no 5 is not newer than the stored 5"):
        await store.push(example(5), "")
    with pytest.raises(PushRefused, match="serial_no 4 is not newer"):
        await store.push(example(4), "")
    assert (await store.load()).serial_no == 5  # type: ignore[union-attr]
    result = await store.push(example(4), "", force=True)
    assert result.previous is not None and result.previous.serial_no == 5
    assert (await store.load()).serial_no == 4  # type: ignore[union-attr]


async def test_push_reports_what_changed(etcd: Etcd, cluster_name: str) -> None:
    store = ConfigStore(etcd, Keys(cluster_name))
    base = example(1)
    await store.push(base, "")
    http = base.virtuals[0]
    servers = (http.servers[0].model_copy(update={"weight": 7}),)
    changed = base.model_copy(update={
        "serial_no": 2,
        "virtuals": (http.model_copy(update={"servers": servers, "scheduler": "rr"}),),
    })
    result = await store.push(changed, "")
    assert "serial_no 1 -> 2" in result.changes
    assert "virtual http: scheduler 'wlc' -> 'rr'" in result.changes
    assert "virtual http / server web1: weight 1 -> 7" in result.changes
    assert "virtual http / server web2: removed" in result.changes
    assert "virtual https: removed" in result.changes


async def test_concurrent_pushes_never_lose_the_newest(etcd: Etcd, cluster_name: str) -> None:
    stores = [ConfigStore(etcd, Keys(cluster_name)) for _ in range(6)]
    results = await asyncio.gather(*(s.push(example(n + 1), "") for n, s in enumerate(stores)),
                                   return_exceptions=True)
    won = [n + 1 for n, r in enumerate(results) if not isinstance(r, BaseException)]
    assert won, results
    assert all(isinstance(r, PushRefused) for r in results if isinstance(r, BaseException))
    stored = await stores[0].load()
    assert stored is not None and stored.serial_no == max(won)


async def test_junk_config_is_ignored_and_counted(etcd: Etcd, etcd_server: LocalEtcd,
                                                  cluster_name: str) -> None:
    keys = Keys(cluster_name)
    store = ConfigStore(etcd, keys)
    await store.push(example(1), "")
    seen: list[int] = []
    follower = ConfigFollower(etcd, keys, lambda stored: seen.append(stored.serial_no))
    task = asyncio.create_task(follower.run())
    try:
        async with asyncio.timeout(10):
            while follower.current is None:
                await asyncio.sleep(0.01)
        # Junk written by hand with etcdctl: not JSON, then JSON with an invalid model.
        etcd_server.etcdctl("put", keys.config, "this is not json")
        bad = json.loads(json.dumps({"config": example(9).model_dump(mode="json")}))
        bad["config"]["virtuals"][0]["servers"][0]["weight"] = 70000
        etcd_server.etcdctl("put", keys.config, json.dumps(bad))
        async with asyncio.timeout(10):
            while follower.errors < 2:
                follower.updated.clear()
                await follower.updated.wait()
        assert follower.current is not None and follower.current.serial_no == 1
        assert "weight" in (follower.last_error or "")
        with pytest.raises(StoredConfigError):
            await store.load()
        status = await read_status(etcd, keys)
        assert status.config is None and "weight" in (status.config_error or "")
        # A valid push replaces the junk and is followed.
        await store.push(example(2), "")
        async with asyncio.timeout(10):
            while follower.current.serial_no != 2:
                follower.updated.clear()
                await follower.updated.wait()
        assert seen == [1, 2]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_config_that_cannot_run_is_never_stored(etcd: Etcd, cluster_name: str) -> None:
    store = ConfigStore(etcd, Keys(cluster_name))
    nodev = example(4, address=AddrDev(ip="10.0.0.100"))
    with pytest.raises(ConfigError, match=r"address 10\.0\.0\.100 needs a device"):
        await store.push(nodev, "", force=True)
    assert await store.load() is None


async def test_the_follower_refuses_a_stored_config_that_cannot_run(
        etcd: Etcd, cluster_name: str) -> None:
    """Written by an older lvsctl (or etcdctl): not adopted, the running one stays; counted,
    logged and reported with its serial_no and FILE:LINE reasons from the pushed text."""
    keys = Keys(cluster_name)
    store = ConfigStore(etcd, keys)
    await store.push(example(1), "")
    seen: list[int] = []
    refused: list[tuple[int | None, str]] = []
    follower = ConfigFollower(etcd, keys, lambda stored: seen.append(stored.serial_no),
                              lambda serial, reason: refused.append((serial, reason)))
    task = asyncio.create_task(follower.run())
    try:
        async with asyncio.timeout(10):
            while follower.current is None:
                await asyncio.sleep(0.01)
        text = Path(EXAMPLE).read_text().replace("serial_no = 1", "serial_no = 5")
        text = text.replace("10.0.0.100 eth0:1", "10.0.0.100", 1)
        line = next(i for i, t in enumerate(text.splitlines(), 1) if "= 10.0.0.100 " in t)
        cfg = lvscf.parse(text).config
        assert cfg is not None
        await etcd.put(keys.config, StoredConfig(cfg, text, "t", "an old lvsctl").encode())
        async with asyncio.timeout(10):
            while not refused:
                follower.updated.clear()
                await follower.updated.wait()
        assert follower.current is not None and follower.current.serial_no == 1
        assert follower.errors == 1 and seen == [1]
        ((serial, reason),) = refused
        assert serial == 5 and reason.startswith(f"lvs.cf:{line}: virtual 'http': address "
                                                 "10.0.0.100 needs a device")
        assert follower.last_error == reason
        # Junk that names a serial_no is refused with it too; then a good push is adopted.
        await etcd.put(keys.config, json.dumps({"serial_no": 6, "config": {"bogus": 1}}))
        async with asyncio.timeout(10):
            while len(refused) < 2:
                follower.updated.clear()
                await follower.updated.wait()
        assert refused[1][0] == 6 and "bogus" in refused[1][1]
        await store.push(example(7), "")
        async with asyncio.timeout(10):
            while follower.current.serial_no != 7:
                follower.updated.clear()
                await follower.updated.wait()
        assert seen == [1, 7] and follower.errors == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
