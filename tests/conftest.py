"""Shared fixtures: a real etcd server for the whole session, a fresh cluster name per test."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cluster.etcd.client import Etcd
from cluster.etcd.settings import EtcdSettings, settings_from
from lvslab.etcd_server import LocalEtcd

_counter = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip namespace tests when not root; IPVS tests only run inside the QEMU guest."""
    root = os.geteuid() == 0
    for item in items:
        if "netns" in item.keywords and not root:
            item.add_marker(pytest.mark.skip(reason="needs root for network namespaces"))


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    if shutil.which("etcd") is None:
        pytest.fail("etcd binary missing: run the README's test command (make test)")
    base = tmp_path_factory.mktemp("etcd")
    server = LocalEtcd(base / "data", log_path=base / "etcd.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster_name() -> str:
    return f"t{os.getpid()}-{next(_counter)}"


@pytest.fixture
def etcd_settings(etcd_server: LocalEtcd) -> EtcdSettings:
    return settings_from(etcd_server.url, environ={}, timeout=5.0)


@pytest.fixture
async def etcd(etcd_settings: EtcdSettings) -> AsyncIterator[Etcd]:
    async with Etcd(etcd_settings) as client:
        yield client


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    """An etcd of this test's own, for tests that stop, restart or reconfigure it."""
    server = LocalEtcd(tmp_path / "etcd-data", log_path=tmp_path / "etcd.log")
    server.start()
    yield server
    server.stop()
