"""lvsctl web: the page model (pure), events, and the server against a real etcd."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cluster import lvscf
from cluster.documents import AdminFlag, HealthVerdict, LeaderDoc, NodeRecord
from cluster.documents.history import FailoverEvent, HealthTransition
from cluster.etcd.client import Etcd
from cluster.history import event_id
from cluster.keys import Keys
from cluster.status import read_status
from cluster.store import ConfigStore
from cluster.web.feed import Feed
from cluster.web.model import Live, Sample, page_model
from cluster.web.server import app
from lvslab.etcd_server import LocalEtcd

EXAMPLE = Path("deploy/examples/lvs.cf")
TOKEN = "s3cret-token-for-tests"


# -- the page model, from a real etcd --------------------------------------------------------


async def seed(etcd: Etcd, keys: Keys) -> None:
    """The example config, two routers (lvs1 active), one server up and one drained."""
    cfg = lvscf.parse_file(EXAMPLE, runnable=True).config
    assert cfg is not None
    await ConfigStore(etcd, keys).push(cfg, EXAMPLE.read_text())
    lease, _ = await etcd.grant(30)
    await etcd.put(keys.leader, LeaderDoc(node="primary", since="S").encode(), lease=lease)
    leader = await etcd.get(keys.leader)
    assert leader is not None
    for name, role, term in (("primary", "active", leader.create_revision),
                             ("backup", "backup", 0)):
        doc = NodeRecord(node=name, role=role, term=term, config_serial=1, dataplane="nftables")
        await etcd.put(keys.node(name), doc.encode(), lease=lease)
    await etcd.put(keys.health("http", "web1"),
                   HealthVerdict(state="up", observed_by=("primary", "backup")).encode())
    await etcd.put(keys.admin("http", "web2"), AdminFlag(state="drain", by="op").encode())


async def test_page_model_from_etcd(etcd: Etcd, cluster_name: str) -> None:
    keys = Keys(cluster_name)
    await seed(etcd, keys)
    st = await read_status(etcd, keys)
    live = Live(now=1.0, lease_left={"primary": 29}, metrics={
        "primary": [Sample("lvs_heartbeat_peer_age_seconds", {"peer": "backup"}, 0.4),
                    Sample("lvs_vips_held", {}, 2),
                    Sample("lvs_real_server_connections_total",
                           {"virtual": "http", "server": "web1"}, 42)],
        "backup": [Sample("lvs_heartbeat_peer_age_seconds", {"peer": "primary"}, 0.3),
                   Sample("lvs_heartbeat_peer_age_seconds", {"peer": "backup"}, 0.0),
                   Sample("lvs_vips_held", {}, 0)]})
    m = page_model(st, live)
    json.dumps(m)  # all of it is JSON
    routers = {r["name"]: r for r in m["routers"]}
    assert routers["primary"]["role"] == "active" and routers["primary"]["leader"]
    assert routers["primary"]["priority"] == 200 and routers["backup"]["priority"] == 100
    assert routers["primary"]["lease_left"] == 29 and routers["backup"]["lease_left"] is None
    assert routers["primary"]["heartbeat_age"] == 0.3  # as the backup hears it
    assert routers["backup"]["heartbeat_age"] == 0.4  # its own report of itself is ignored
    assert {v["address"]: v["holder"] for v in m["vips"]} == {
        "10.0.0.100": "primary", "192.168.1.254": "primary"}
    assert not m["split_brain"]
    servers = {(v["name"], s["name"]): s for v in m["virtuals"] for s in v["servers"]}
    web1, web2 = servers["http", "web1"], servers["http", "web2"]
    assert web1["state"] == "up" and web1["observed_by"] == ["primary", "backup"]
    assert web1["traffic"] == {"connections": 42}
    assert web2["admin"] == "drain" and web2["traffic"] is None
    assert servers["https", "web1"]["state"] == "unknown"
    assert m["config"]["serial_no"] == 1 and m["not_running_stored_config"] == []
    live.metrics["backup"][-1] = Sample("lvs_vips_held", {}, 2)
    assert page_model(st, live)["split_brain"]


# -- the server --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(etcd: Etcd, keys: Keys, *, actions: bool) -> AsyncIterator[TestClient]:
    feed = Feed(etcd, keys, actions=actions, probe_every=0.5, debounce=0.05)
    task = asyncio.create_task(feed.run())
    client = TestClient(TestServer(app(feed, etcd, keys, TOKEN if actions else None)))
    await client.start_server()
    try:
        for _ in range(100):
            if feed.version:
                break
            await asyncio.sleep(0.05)
        yield client
    finally:
        await client.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_event(stream: object, timeout: float = 5.0) -> dict:
    """The next ``data:`` message of a server-sent event stream."""
    async with asyncio.timeout(timeout):
        while True:
            line = (await stream.readline()).decode()  # type: ignore[attr-defined]
            if line.startswith("data: "):
                return json.loads(line[6:])


async def test_the_stream_pushes_every_change_without_a_reload(etcd: Etcd,
                                                               cluster_name: str) -> None:
    keys = Keys(cluster_name)
    await seed(etcd, keys)
    async with served(etcd, keys, actions=False) as client:
        page = await client.get("/")
        text = await page.text()
        assert page.status == 200 and "/static/app.js" in text
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert "http" not in text.replace("http-equiv", "").split("<body>")[0].replace(
            "/static/", "")  # no script or style from elsewhere
        for asset in ("app.js", "app.css"):
            assert (await client.get(f"/static/{asset}")).status == 200
        assert (await client.get("/static/../server.py")).status == 404
        state = await (await client.get("/api/state")).json()
        assert state["leader"]["node"] == "primary"
        resp = await client.get("/api/stream")
        first = await next_event(resp.content)
        assert first["leader"]["node"] == "primary"
        assert first["full"] and [v["name"] for v in first["virtuals"]] == ["http", "https"]
        # the active goes: its keys vanish with its lease, the backup takes the key and
        # writes the failover to the history, as agents do; then a server goes down
        leader = await etcd.get(keys.leader)
        assert leader is not None
        await etcd.revoke(leader.lease)
        await etcd.put(keys.leader, LeaderDoc(node="backup").encode())
        await etcd.put(keys.history_event("failover", event_id(time.time(), "backup", 1)),
                       FailoverEvent(node="backup", term=99, previous="primary",
                                     previous_term=leader.create_revision,
                                     reason="primary silent", gap_ms=2100).encode())
        await etcd.put(keys.health("http", "web1"),
                       HealthVerdict(state="down", reason="connect refused").encode())
        await etcd.put(keys.history_event("health", event_id(time.time(), "backup", 2)),
                       HealthTransition(virtual="http", server="web1", previous="up",
                                        state="down", reason="connect refused",
                                        by="backup").encode())
        await etcd.put(keys.history_prefix + "junk/x", b"{")  # not an event: ignored
        patches = []
        for _ in range(20):
            pushed = await next_event(resp.content)
            patches.append(pushed)
            if pushed["leader"]["node"] == "backup" and len(pushed["events"]) >= 2:
                break
        else:
            pytest.fail("the change was not pushed")
        # After the first, a page gets patches: the virtuals that changed, not all of them.
        assert not any(p["full"] or "virtuals" in p for p in patches)
        assert all(p["order"] == ["http", "https"] for p in patches)
        sent = [v for p in patches for v in p["changed"]]
        assert {v["name"] for v in sent} == {"http"}  # https never changed
        web1 = {s["name"]: s for s in sent[-1]["servers"]}["web1"]
        assert web1["state"] == "down"
        health, failover = pushed["events"][:2]  # newest first
        assert failover["kind"] == "failover" and failover["gap_ms"] == 2100
        assert "backup took over from primary" in failover["summary"]
        assert health["kind"] == "health" and "up -> down" in health["summary"]
        resp.close()


async def test_actions_need_the_flag_and_the_token(etcd: Etcd, cluster_name: str) -> None:
    keys = Keys(cluster_name)
    await seed(etcd, keys)
    body = {"action": "disable", "virtual": "http", "server": "web1"}
    async with served(etcd, keys, actions=False) as client:
        resp = await client.post("/api/action", json=body,
                                 headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 403 and "read-only" in (await resp.json())["error"]
    async with served(etcd, keys, actions=True) as client:
        assert (await client.post("/api/action", json=body)).status == 401
        wrong = await client.post("/api/action", json=body,
                                  headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        assert await etcd.get(keys.admin("http", "web1")) is None  # nothing done
        auth = {"Authorization": f"Bearer {TOKEN}"}
        bad = await client.post("/api/action", json={**body, "server": "web9"}, headers=auth)
        assert bad.status == 400 and "no server 'web9'" in (await bad.json())["error"]
        junk = await client.post("/api/action", data=b"{", headers=auth)
        assert junk.status == 400
        ok = await client.post("/api/action", json=body, headers=auth)
        assert ok.status == 200 and (await ok.json())["message"].startswith("http/web1: disable")
        stored = await etcd.get(keys.admin("http", "web1"))
        assert stored is not None and AdminFlag.decode(stored.value).state == "disable"
        assert AdminFlag.decode(stored.value).by.startswith("web:")
        ok = await client.post("/api/action", json={**body, "action": "enable"}, headers=auth)
        assert ok.status == 200 and await etcd.get(keys.admin("http", "web1")) is None
        sw = await client.post("/api/action", json={"action": "switchover", "to": "backup"},
                               headers=auth)
        assert sw.status == 200, await sw.text()
        assert await etcd.get(keys.switchover) is not None


def test_lvsctl_web_refuses_actions_without_a_token(etcd_server: LocalEtcd,
                                                    tmp_path: Path) -> None:
    lvsctl = str(Path(sys.executable).parent / "lvsctl")
    env = {k: v for k, v in os.environ.items() if k != "LVS_WEB_TOKEN"}
    run = subprocess.run([lvsctl, "--etcd", etcd_server.url, "web", "--allow-actions"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert run.returncode == 1 and "needs a token" in run.stderr
    short = tmp_path / "token"
    short.write_text("abc\n")
    run = subprocess.run([lvsctl, "--etcd", etcd_server.url, "web", "--allow-actions",
                          "--token-file", str(short)], capture_output=True, text=True,
                         env=env, timeout=30)
    assert run.returncode == 1 and "at least 16 characters" in run.stderr
    run = subprocess.run([lvsctl, "--etcd", etcd_server.url, "web", "--listen", "nowhere"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert run.returncode == 1 and "HOST:PORT" in run.stderr
