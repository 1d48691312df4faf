"""docs/security.md's etcd roles, run as written against a real etcd with client-certificate
auth: a router (certificate CN r1) can do everything pulse does in etcd and nothing an
operator does; an operator can push configs and drain; a viewer can only read."""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.certs import CA

from agent.history import ROUTER_KINDS
from cluster import lvscf
from cluster.election import campaign, fenced_put
from cluster.etcd.client import Etcd, EtcdAuthError
from cluster.etcd.settings import settings_from
from cluster.keys import Keys
from cluster.store import ConfigStore
from lvslab.etcd_server import LocalEtcd, TlsFiles

pytestmark = pytest.mark.etcd

DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"
USERS = ("root", "r1", "r2", "r3", "alice", "grafana")


def roles_block() -> str:
    """The ```sh block of the "etcd roles" section that enables auth."""
    section = DOC.read_text().split("\n## etcd roles\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "auth enable" in b]
    assert len(blocks) == 1
    return blocks[0]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalEtcd, dict]]:
    d = tmp_path_factory.mktemp("rbac")
    ca = CA(d)
    server_cert, server_key = ca.issue("localhost", server=True)
    certs = {user: ca.issue(user, server=False) for user in USERS}
    server = LocalEtcd(d / "data", tls=TlsFiles(str(server_cert), str(server_key),
                                                str(ca.path)))
    server.start()
    root_cert, root_key = certs["root"]
    # The block as an operator pastes it; etcdctl talks to this etcd as root, and users
    # the block creates with a password prompt get one on the command line instead.
    prelude = f"""
set -euo pipefail
etcdctl() {{
    if [ "$1 $2" = "user add" ] && [[ " $* " != *" --no-password "* ]]; then
        set -- "$@" --new-user-password="pw-$3"
    fi
    ETCDCTL_API=3 command etcdctl --endpoints={server.url} --cacert={ca.path} \\
        --cert={root_cert} --key={root_key} "$@" > /dev/null
}}
"""
    res = subprocess.run(["bash", "-c", prelude + roles_block()], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    yield server, {"ca": ca.path, **certs}
    server.stop()


def client(secured: tuple[LocalEtcd, dict], user: str) -> Etcd:
    server, pki = secured
    cert, key = pki[user]
    return Etcd(settings_from(server.url, environ={}, ca=str(pki["ca"]), cert=str(cert),
                              key=str(key), timeout=5.0))


@pytest.fixture
async def operator(secured: tuple[LocalEtcd, dict]) -> AsyncIterator[Etcd]:
    async with client(secured, "alice") as etcd:
        yield etcd


KEYS = Keys("prod")
CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "lvs.cf"


async def test_the_doc_enables_auth(secured: tuple[LocalEtcd, dict]) -> None:
    server, pki = secured
    anonymous = Etcd(settings_from(server.url, environ={}, ca=str(pki["ca"]), timeout=5.0))
    with pytest.raises(Exception):  # noqa: B017 - refused one way or another
        async with anonymous as etcd:
            await etcd.get(KEYS.config)


async def test_router_does_what_pulse_does_and_no_more(
        secured: tuple[LocalEtcd, dict], operator: Etcd) -> None:
    cfg = lvscf.load(CONFIG)
    await ConfigStore(operator, KEYS).push(cfg, CONFIG.read_text(), by="alice")
    async with client(secured, "r1") as r1, client(secured, "r2") as r2:
        lease1, _ = await r1.grant(5)
        lease2, _ = await r2.grant(5)
        kvs, _ = await r1.get_prefix(KEYS.prefix)  # the view reads everything
        assert KEYS.config in {kv.key for kv in kvs}
        await r1.put(KEYS.node("r1"), "{}", lease=lease1)
        await r2.put(KEYS.node("r2"), "{}", lease=lease2)
        won, key = await campaign(r1, KEYS, "r1", lease1)
        assert won and key is not None
        assert await fenced_put(r1, KEYS, key.term, {KEYS.health("http", "web1"): "{}"})
        await r1.put(KEYS.observation("r1", "http", "web1"), "{}", lease=lease1)
        await r2.put(KEYS.observation("r2", "http", "web1"), "{}", lease=lease2)
        await r2.put(KEYS.eviction("r2"), "{}", lease=lease2)
        await r2.put(KEYS.switchover, "{}", lease=lease2)  # a preempting router asks
        await r1.delete(KEYS.switchover)
        for kind in ROUTER_KINDS:  # the history routers keep: written, then pruned
            await r1.put(KEYS.history_event(kind, "20261206T000000.000Z-r1-000001"), "{}")
            assert await r2.delete(KEYS.history_event(kind, "20261206T000000.000Z-r1-000001"))
        # the active removes config parts no head names (agent/config_gc.py)
        await operator.put(KEYS.config_part("0" * 32), "{}")
        assert await r1.delete(KEYS.config_part("0" * 32))
        # fast eviction: r2 revokes the active's lease (leader, node record, observations)
        assert await r2.revoke(lease1)
        assert await r1.get(KEYS.leader) is None
        for key_ in (KEYS.config, KEYS.seed, KEYS.admin("http", "web1"),
                     KEYS.config_history(99), KEYS.history_prefix + "other/x"):
            with pytest.raises(EtcdAuthError):
                await r2.put(key_, "{}")
        with pytest.raises(EtcdAuthError):
            await r2.put("/lvs/other-cluster/nodes/r2", "{}")
        await r2.revoke(lease2)


async def test_operator_pushes_drains_and_switches(operator: Etcd) -> None:
    cfg = lvscf.load(CONFIG)
    cfg = cfg.model_copy(update={"serial_no": cfg.serial_no + 1})
    result = await ConfigStore(operator, KEYS).push(cfg, CONFIG.read_text(), by="alice")
    assert result is not None
    await operator.put(KEYS.admin("http", "web1"), '{"state": "drain"}')
    await operator.delete(KEYS.admin("http", "web1"))
    lease, _ = await operator.grant(10)
    await operator.put(KEYS.switchover, "{}", lease=lease)
    await operator.revoke(lease)


async def test_viewer_only_reads(secured: tuple[LocalEtcd, dict]) -> None:
    async with client(secured, "grafana") as viewer:
        kvs, _ = await viewer.get_prefix(KEYS.prefix)
        assert kvs
        for key in (KEYS.config, KEYS.admin("http", "web1"), KEYS.switchover):
            with pytest.raises(EtcdAuthError):
                await viewer.put(key, "{}")
