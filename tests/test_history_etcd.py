"""The cluster's history in a real etcd: the writer's transactions and pruning, reading
the newest events of every kind (config pushes folded in), watching new ones, and
``lvsctl history -o json`` / ``lvsctl events -f`` as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.health.service import HealthService
from agent.history import HistoryWriter
from cluster import lvscf
from cluster.config_follow import ConfigFollower
from cluster.documents import (
    FailoverEvent,
    HealthTransition,
    HealthVerdict,
    SwitchoverEvent,
    iso,
)
from cluster.etcd.client import Etcd
from cluster.history import (
    Retention,
    event_id,
    prune,
    read_history,
    read_recent,
    watch_events,
)
from cluster.keys import Keys
from cluster.store import ConfigStore
from lvslab.etcd_server import LocalEtcd

pytestmark = pytest.mark.etcd

LVSCTL = str(Path(sys.executable).parent / "lvsctl")
EXAMPLE = "deploy/examples/lvs.cf"


def failover(n: int = 1) -> FailoverEvent:
    return FailoverEvent(at=iso(time.time()), node="r2", term=10 + n, previous="r1",
                         previous_term=n, reason="r1 silent", gap_ms=1000 + n)


def transition(server: str, state: str = "down") -> HealthTransition:
    return HealthTransition(at=iso(time.time()), virtual="http", server=server,
                            previous="up", state=state, by="r1", term=3)  # type: ignore[arg-type]


async def test_writer_writes_in_one_transaction_and_readers_merge_kinds(
        etcd: Etcd, cluster_name: str) -> None:
    keys = Keys(cluster_name)
    await ConfigStore(etcd, keys).push(lvscf.load(EXAMPLE), "src", by="ops@h")
    w = HistoryWriter(etcd, keys, "r1")
    for s in ("a", "b", "c"):
        w.record(transition(s))
    rev = await etcd.revision()
    assert await w.flush()
    assert await etcd.revision() == rev + 1  # three events, one transaction
    w.record(failover())
    w.record(SwitchoverEvent(node="r1", previous="r2", by="ops@h", reason="lvsctl switchover"))
    assert await w.flush() and w.pending == 0
    assert w.stats.written == {"health": 3, "failover": 1, "switchover": 1}

    events = await read_recent(etcd, keys, 10)
    assert [e.kind for e in events] == ["config", "health", "health", "health", "failover",
                                        "switchover"]
    assert [e.doc.server for e in events[1:4]] == ["a", "b", "c"]  # type: ignore[union-attr]
    assert events[0].who == "ops@h"
    assert [e.kind for e in await read_recent(etcd, keys, 2)] == ["failover", "switchover"]
    only = await read_recent(etcd, keys, 10, kinds=("failover", "health"))
    assert [e.kind for e in only] == ["health"] * 3 + ["failover"]
    with pytest.raises(ValueError, match="unknown event kind"):
        await read_recent(etcd, keys, kinds=("nope",))
    # junk is listed, never fatal
    await etcd.put(keys.history_event("failover", "zzz"), "not json")
    h = await read_history(etcd, keys, 0)
    assert len(h.events) == 6 and len(h.junk) == 1 and "zzz" in h.junk[0]
    assert [e.kind for e in await read_recent(etcd, keys, 10, kinds=("config",))] == ["config"]
    since = await read_history(etcd, keys, 0, since=time.time() + 60)
    assert since.events == []


async def test_prune_keeps_the_newest_and_never_deletes_in_a_burst(
        etcd: Etcd, cluster_name: str) -> None:
    keys = Keys(cluster_name)
    now = time.time()
    for i in range(30):  # 30 events, one a day, the oldest 29 days ago
        at = now - (29 - i) * 86400 + 3600
        await etcd.put(keys.history_event("health", event_id(at, "r1", i)),
                       transition(f"s{i}").encode())
    policy = Retention(keep=25, max_age=10 * 86400)
    assert await prune(etcd, keys, "health", now=now, budget=3, retention=policy) == 3
    assert await etcd.count(keys.history_kind_prefix("health")) == 27
    while await prune(etcd, keys, "health", now=now, budget=3, retention=policy):
        pass
    left = await read_recent(etcd, keys, 0, kinds=("health",))
    assert [e.doc.server for e in left] == [f"s{i}" for i in range(19, 30)]  # type: ignore
    assert await prune(etcd, keys, "failover", now=now) == 0  # nothing there


async def test_writer_prunes_what_it_writes_past_the_count(etcd: Etcd, cluster_name: str,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           ) -> None:
    import cluster.history as history
    monkeypatch.setitem(history.RETENTION, "health", Retention(keep=5, max_age=None))
    keys = Keys(cluster_name)
    w = HistoryWriter(etcd, keys, "r1")
    for batch in range(3):
        for i in range(4):
            w.record(transition(f"s{batch}{i}"))
        await w.flush()
    left = await read_recent(etcd, keys, 0, kinds=("health",))
    assert len(left) == 5 and left[-1].doc.server == "s23"  # type: ignore[union-attr]
    assert w.stats.pruned == 7


async def test_an_etcd_outage_queues_then_drops_and_says_so(private_etcd: LocalEtcd,
                                                            cluster_name: str) -> None:
    from cluster.etcd.settings import settings_from
    keys = Keys(cluster_name)
    async with Etcd(settings_from(private_etcd.url, environ={}, timeout=0.5)) as etcd:
        w = HistoryWriter(etcd, keys, "r1", flush_every=0.05, health_queue=5)
        task = asyncio.create_task(w.run())
        try:
            private_etcd.stop()
            for i in range(8):
                w.record(transition(f"s{i}"))  # never blocks
            w.record(failover())
            await asyncio.sleep(1.0)
            assert w.stats.errors >= 1 and w.pending == 6 and w.stats.dropped == {"health": 3}
            private_etcd.start()
            for _ in range(100):
                if w.pending == 0:
                    break
                await asyncio.sleep(0.1)
            assert w.pending == 0 and not task.done()
            events = await read_recent(etcd, keys, 0)
            assert [e.kind for e in events] == ["failover"] + ["health"] * 5
            assert events[1].doc.dropped_before == 3  # type: ignore[union-attr]
            assert [e.doc.dropped_before for e in events[2:]] == [0] * 4  # type: ignore
        finally:
            task.cancel()


async def test_watch_delivers_new_events_in_order_and_from_a_revision(
        etcd: Etcd, cluster_name: str) -> None:
    keys = Keys(cluster_name)
    w = HistoryWriter(etcd, keys, "r1")
    h = await read_history(etcd, keys)
    w.record(failover(1))  # after the read, before the watch starts: not missed
    await w.flush()
    got: list[str] = []
    seen = asyncio.Event()

    async def follow(after: int, kinds: tuple[str, ...] | None) -> None:
        async for e in watch_events(etcd, keys, after_revision=after, kinds=kinds):
            got.append(f"{after > 0}:{e.kind}:{e.revision}")
            if len(got) == 4:
                seen.set()

    tasks = [asyncio.create_task(follow(h.revision, None)),
             asyncio.create_task(follow(0, ("failover",)))]
    await asyncio.sleep(0.3)
    w.record(transition("a"))
    w.record(failover(2))
    await w.flush()
    await prune(etcd, keys, "health", now=time.time() + 30 * 86400)  # a delete: no event
    await asyncio.wait_for(seen.wait(), 5)
    for t in tasks:
        t.cancel()
    assert sorted(x.split(":")[:2] for x in got) == [
        ["False", "failover"], ["True", "failover"], ["True", "failover"], ["True", "health"]]
    since_rev = [x.split(":")[1] for x in got if x.startswith("True")]
    assert since_rev == ["failover", "failover", "health"]  # in order, none missed


async def test_the_active_records_health_transitions_it_stores(
        etcd: Etcd, cluster_name: str) -> None:
    """The health service hands the history exactly the state changes of the verdicts it
    wrote (a fenced transaction that succeeded), never a write per check."""
    from agent.health.core import Writes
    from agent.view import ClusterView
    from cluster.election import campaign
    from cluster.health import ServerKey
    from cluster.health_layout import Layout

    keys = Keys(cluster_name)
    lease, _ = await etcd.grant(30)
    won, key = await campaign(etcd, keys, "r1", lease)
    assert won and key is not None
    view = ClusterView(etcd, keys, ConfigFollower(etcd, keys, lambda s: None))
    recorded: list[HealthTransition] = []
    svc = HealthService(etcd, keys, "r1", view, on_change=lambda: None, lease=lambda: lease,
                        history=recorded.append)
    a, b = ServerKey("http", "a"), ServerKey("http", "b")
    view.state.health[a] = HealthVerdict(state="up")
    view.state.health[b] = HealthVerdict(state="unknown")
    svc.layout = Layout.of([a, b])
    decided = {a: HealthVerdict(state="down", reason="x"), b: HealthVerdict(state="up")}
    svc.core.verdicts.update(decided)  # (what the core decided: the groups hold it)
    await svc._write_verdicts(Writes(key.term, decided))
    assert [(t.server, t.previous, t.state, t.term) for t in recorded] == [
        ("a", "up", "down", key.term)]
    recorded.clear()
    await svc._write_verdicts(Writes(key.term + 1, {a: HealthVerdict(state="up")}))
    assert recorded == []  # fenced out: nothing stored, nothing recorded


# -- lvsctl ------------------------------------------------------------------------------

def lvsctl(*args: str, url: str, cluster: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LVS_CLUSTER=cluster, LVS_ETCD=url)
    return subprocess.run([LVSCTL, *args], capture_output=True, text=True, env=env, timeout=60)


async def test_lvsctl_history_json_and_text(etcd: Etcd, etcd_server: LocalEtcd,
                                            cluster_name: str) -> None:
    keys = Keys(cluster_name)
    await ConfigStore(etcd, keys).push(lvscf.load(EXAMPLE), "src", by="ops@h")
    w = HistoryWriter(etcd, keys, "r2")
    w.record(failover(1))
    w.record(transition("web1"))
    await w.flush()
    out = await asyncio.to_thread(lvsctl, "history", "-o", "json", url=etcd_server.url,
                                  cluster=cluster_name)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [e["kind"] for e in data["events"]] == ["config", "failover", "health"]
    f = data["events"][1]
    assert f["event"]["previous"] == "r1" and f["event"]["node"] == "r2"
    assert f["gap_ms"] == 1001 and f["who"] == "r2" and "took over from r1" in f["summary"]
    assert data["revision"] > 0 and data["junk"] == []

    one = await asyncio.to_thread(lvsctl, "history", "--kind", "failover", "-n", "1", "-o",
                                  "json", url=etcd_server.url, cluster=cluster_name)
    assert [e["kind"] for e in json.loads(one.stdout)["events"]] == ["failover"]
    text = await asyncio.to_thread(lvsctl, "history", "--since", "1h", url=etcd_server.url,
                                   cluster=cluster_name)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert any("failover" in ln and "r2 took over from r1" in ln and "1001" in ln
               for ln in lines), text.stdout
    assert any("http/web1 up -> down" in ln for ln in lines), text.stdout
    assert "\x1b[" not in text.stdout  # not a terminal: plain text
    bad = await asyncio.to_thread(lvsctl, "history", "--since", "soon", url=etcd_server.url,
                                  cluster=cluster_name)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


async def test_lvsctl_events_follow_prints_events_as_they_happen(
        etcd: Etcd, etcd_server: LocalEtcd, cluster_name: str) -> None:
    keys = Keys(cluster_name)
    env = dict(os.environ, LVS_CLUSTER=cluster_name, LVS_ETCD=etcd_server.url)
    proc = await asyncio.create_subprocess_exec(LVSCTL, "events", "-f", "-o", "json", env=env,
                                                stdout=asyncio.subprocess.PIPE)
    try:
        await asyncio.sleep(1.5)  # it started watching
        w = HistoryWriter(etcd, keys, "r2")
        w.record(failover(5))
        await w.flush()
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        event = json.loads(line)
        assert event["kind"] == "failover" and event["event"]["previous_term"] == 5
    finally:
        proc.terminate()
        await proc.wait()


async def test_config_pushes_keep_their_retention(etcd: Etcd, cluster_name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import cluster.history as history
    monkeypatch.setitem(history.RETENTION, "config", Retention(keep=2, max_age=None))
    keys = Keys(cluster_name)
    store = ConfigStore(etcd, keys)
    cfg = lvscf.load(EXAMPLE)
    for serial in (1, 2, 3):
        await store.push(cfg.model_copy(update={"serial_no": serial}), "src", by="ops@h")
    assert [e.serial_no for e in await store.history()] == [2, 3]
    events = await read_recent(etcd, keys, 0)
    assert [e.doc.serial_no for e in events] == [2, 3]  # type: ignore[union-attr]
