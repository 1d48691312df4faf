"""lvsctl watch: the status view kept current by one etcd watch, with the newest events."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from rich.console import Console

from agent.history import HistoryWriter
from cluster import lvscf
from cluster.documents import AdminFlag, FailoverEvent, LeaderDoc
from cluster.etcd.client import KV, Etcd
from cluster.etcd.watch import Snapshot
from cluster.history import event_id
from cluster.keys import Keys
from cluster.lvsctl.watch_cmd import Watched
from cluster.store import ConfigStore
from lvslab.etcd_server import LocalEtcd

LVSCTL = str(Path(sys.executable).parent / "lvsctl")
EXAMPLE = "deploy/examples/lvs.cf"


def kv(key: str, value: str, rev: int, version: int = 1) -> KV:
    return KV(key, value.encode(), rev - version + 1, rev, version, 0)


def test_watched_state_follows_changes_and_keeps_the_newest_events() -> None:
    keys = Keys("c")
    w = Watched(keys, events_kept=2)
    ev = [kv(keys.history_event("failover", event_id(1e9 + i, "r1", i)),
             FailoverEvent(node=f"r{i}").encode(), 10 + i) for i in range(3)]
    leader = kv(keys.leader, LeaderDoc(node="r1").encode(), 5)
    w.snapshot(Snapshot({k.key: k for k in [leader, *ev]}, 20))
    assert w.state.leader is not None and w.state.leader.node == "r1"
    assert [e.doc.node for e in w.events] == ["r1", "r2"]  # type: ignore[union-attr]
    w.change(keys.leader, None, 21)
    new = kv(keys.history_event("failover", "x"), FailoverEvent(node="r9").encode(), 22)
    w.change(new.key, new, 22)
    w.change(ev[0].key, None, 23)  # pruning is not news
    assert w.state.leader is None and w.revision == 23
    assert [e.doc.node for e in w.events] == ["r2", "r9"]  # type: ignore[union-attr]
    js = w.to_json()
    assert js["revision"] == 23 and [e["event"]["node"] for e in js["events"]] == ["r2", "r9"]
    console = Console(width=120, record=True, no_color=True)
    console.print(w.view())
    text = console.export_text()
    assert "active router: none" in text and "r9 took over from (none)" in text


@pytest.mark.etcd
async def test_lvsctl_watch_prints_each_change(etcd: Etcd, etcd_server: LocalEtcd,
                                               cluster_name: str) -> None:
    keys = Keys(cluster_name)
    await ConfigStore(etcd, keys).push(lvscf.load(EXAMPLE), "src", by="ops@h")
    env = dict(os.environ, LVS_CLUSTER=cluster_name, LVS_ETCD=etcd_server.url)
    proc = await asyncio.create_subprocess_exec(LVSCTL, "watch", "-o", "json", env=env,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert first["config"]["serial_no"] == 1 and first["events"][0]["kind"] == "config"
        http = next(v for v in first["virtuals"] if v["name"] == "http")
        server = http["servers"][0]["name"]
        assert http["servers"][0]["admin"] is None
        await etcd.put(keys.admin("http", server), AdminFlag(state="drain").encode())
        w = HistoryWriter(etcd, keys, "r2")
        w.record(FailoverEvent(node="r2", previous="r1"))
        await w.flush()
        for _ in range(5):  # one line per change (bursts may come together)
            line = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
            http = next(v for v in line["virtuals"] if v["name"] == "http")
            if http["servers"][0]["admin"] == "drain" and line["events"][-1]["kind"] == \
                    "failover":
                break
        else:
            raise AssertionError(f"never saw both changes: {line}")
        assert line["revision"] > first["revision"]
    finally:
        proc.terminate()
        await proc.wait()
