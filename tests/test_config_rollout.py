"""``lvsctl config push --wait`` and ``lvsctl status`` against a real etcd, the routers'
``nodes/<node>`` records written here as a router writes them (NodeRecord, lease-bound)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster import lvscf
from cluster.documents import ConfigRefusal, NodeRecord
from cluster.etcd.client import Etcd
from cluster.keys import Keys
from cluster.store import ConfigStore
from lvslab.etcd_server import LocalEtcd

pytestmark = pytest.mark.etcd

LVSCTL = str(Path(sys.executable).parent / "lvsctl")
EXAMPLE = Path("deploy/examples/lvs.cf")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


async def lvsctl(url: str, cluster: str, *args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, LVS_CLUSTER=cluster, LVS_ETCD=url)
    return await asyncio.create_subprocess_exec(
        LVSCTL, *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)


async def finish(proc: asyncio.subprocess.Process, start: float) -> Result:
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return Result(proc.returncode or 0, out.decode(), err.decode(), time.monotonic() - start)


def config_file(tmp_path: Path, serial: int) -> Path:
    path = tmp_path / f"lvs-{serial}.cf"
    path.write_text(EXAMPLE.read_text().replace("serial_no = 1", f"serial_no = {serial}"))
    return path


@dataclass
class Routers:
    """Registrations as pulse writes them: NodeRecord under nodes/<name>, on its lease."""

    etcd: Etcd
    keys: Keys
    lease: int

    async def report(self, name: str, serial: int | None = None,
                     refused: ConfigRefusal | None = None) -> None:
        record = NodeRecord(node=name, role="backup", address="10.0.0.1", pid=1,
                            config_serial=serial, config_refused=refused)
        await self.etcd.put(self.keys.node(name), record.encode(), lease=self.lease)


@pytest.fixture
async def routers(etcd: Etcd, cluster_name: str) -> AsyncIterator[Routers]:
    lease, _ = await etcd.grant(30)
    yield Routers(etcd, Keys(cluster_name), lease)
    await etcd.revoke(lease)


async def stored_serial(etcd: Etcd, keys: Keys, serial: int) -> None:
    async with asyncio.timeout(20):
        while (s := await ConfigStore(etcd, keys).load()) is None or s.serial_no != serial:
            await asyncio.sleep(0.02)


async def test_push_wait_returns_once_every_live_router_runs_it(
        tmp_path: Path, etcd_server: LocalEtcd, etcd: Etcd, routers: Routers,
        cluster_name: str) -> None:
    await routers.report("r1", None)
    await routers.report("r2", None)
    start = time.monotonic()
    proc = await lvsctl(etcd_server.url, cluster_name, "config", "push", "--wait",
                        "--timeout", "20", str(config_file(tmp_path, 3)))
    await stored_serial(etcd, routers.keys, 3)
    await routers.report("r1", 3)
    await asyncio.sleep(0.3)
    assert proc.returncode is None  # r2 has not reported yet
    await routers.report("r2", 3)
    res = await finish(proc, start)
    assert res.returncode == 0, res.stderr
    assert "stored serial_no 3" in res.stdout
    assert "serial_no 3 runs on every live router: r1, r2" in res.stdout
    assert res.seconds < 10


async def test_push_wait_names_who_refused_and_why(
        tmp_path: Path, etcd_server: LocalEtcd, etcd: Etcd, routers: Routers,
        cluster_name: str) -> None:
    await routers.report("r1", 1)
    await routers.report("r2", 1)
    start = time.monotonic()
    proc = await lvsctl(etcd_server.url, cluster_name, "config", "push", "--wait",
                        "--timeout", "20", str(config_file(tmp_path, 4)))
    await stored_serial(etcd, routers.keys, 4)
    await routers.report("r1", 4)
    await routers.report("r2", 1, ConfigRefusal(
        serial_no=4, reason="virtual http: address 10.77.0.100 needs a device"))
    res = await finish(proc, start)
    assert res.returncode == 1
    assert "r2 refused serial_no 4: virtual http: address 10.77.0.100 needs a device" \
        in res.stderr
    assert res.stderr.splitlines()[-1] == \
        "lvsctl: serial_no 4 refused by r2 (the routers keep running their current config)"
    assert "Traceback" not in res.stderr and res.seconds < 10


async def test_push_wait_times_out_naming_the_routers_that_did_not_report(
        tmp_path: Path, etcd_server: LocalEtcd, etcd: Etcd, routers: Routers,
        cluster_name: str) -> None:
    await routers.report("r1", 1)
    await routers.report("r2", 1)
    await routers.report("r3", None)
    await routers.report("r4", 1, ConfigRefusal(serial_no=1, reason="an older refusal"))
    start = time.monotonic()
    proc = await lvsctl(etcd_server.url, cluster_name, "config", "push", "--wait",
                        "--timeout", "1.5", str(config_file(tmp_path, 5)))
    await stored_serial(etcd, routers.keys, 5)
    await routers.report("r1", 5)
    res = await finish(proc, start)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        "lvsctl: serial_no 5 not running after 1.5s on: r2 (it runs serial_no 1), "
        "r3 (it does not report a config it runs), r4 (it runs serial_no 1)")
    assert 1.5 <= res.seconds < 10


async def test_push_wait_follows_routers_that_come_and_go(
        tmp_path: Path, etcd_server: LocalEtcd, etcd: Etcd, routers: Routers,
        cluster_name: str) -> None:
    other, _ = await etcd.grant(30)
    await routers.report("r1", 1)
    await etcd.put(routers.keys.node("r2"), NodeRecord(role="backup").encode(), lease=other)
    start = time.monotonic()
    proc = await lvsctl(etcd_server.url, cluster_name, "config", "push", "--wait",
                        "--timeout", "20", str(config_file(tmp_path, 6)))
    await stored_serial(etcd, routers.keys, 6)
    await routers.report("r1", 6)
    await etcd.revoke(other)  # r2 dies: no longer a live router
    res = await finish(proc, start)
    assert res.returncode == 0, res.stderr
    assert "runs on every live router: r1" in res.stdout


async def test_push_wait_with_no_router(tmp_path: Path, etcd_server: LocalEtcd,
                                        cluster_name: str) -> None:
    proc = await lvsctl(etcd_server.url, cluster_name, "config", "push", "--wait",
                        str(config_file(tmp_path, 1)))
    res = await finish(proc, time.monotonic())
    assert res.returncode == 0, res.stderr
    assert "no router is running" in res.stdout


async def test_status_says_which_router_does_not_run_the_stored_config(
        tmp_path: Path, etcd_server: LocalEtcd, etcd: Etcd, routers: Routers,
        cluster_name: str) -> None:
    await ConfigStore(etcd, routers.keys).push(lvscf.load(config_file(tmp_path, 7)), "")
    await routers.report("r1", 7)
    await routers.report("r2", 6, ConfigRefusal(serial_no=7, reason="needs a [device]"))
    await routers.report("r3", 6)
    res = await finish(await lvsctl(etcd_server.url, cluster_name, "status", "-o", "json"),
                       time.monotonic())
    data = json.loads(res.stdout)
    assert data["nodes"]["r1"]["config_serial"] == 7
    assert data["nodes"]["r2"]["config_refused"] == {"serial_no": 7,
                                                     "reason": "needs a [device]"}
    assert data["not_running_stored_config"] == [
        {"node": "r2", "config_serial": 6, "why": "refused it: needs a [device]"},
        {"node": "r3", "config_serial": 6, "why": "it runs serial_no 6"}]
    table = await finish(await lvsctl(etcd_server.url, cluster_name, "status"),
                         time.monotonic())
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "r2 does not run the stored config (serial_no 7): refused it: needs a [device]" \
        in lines
    assert "r3 does not run the stored config (serial_no 7): it runs serial_no 6" in lines
    assert not any(line.startswith("r1 does not run") for line in lines)
    r2 = next(line for line in lines if line.startswith("│ r2 ") or " r2 " in line[:6])
    assert "6 (refused 7: needs a [device])" in r2
