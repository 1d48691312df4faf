"""TLS (server and client certificates) and user/password auth against a real etcd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.certs import CA

from cluster.etcd.client import Etcd, EtcdAuthError, EtcdUnavailable
from cluster.etcd.settings import settings_from
from lvslab.etcd_server import LocalEtcd, TlsFiles

pytestmark = pytest.mark.etcd


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = CA(d)
    server_cert, server_key = ca.issue("localhost", server=True)
    client_cert, client_key = ca.issue("lvs-client", server=False)
    other = CA(d, "other-ca")
    return {"ca": ca.path, "other_ca": other.path, "server_cert": server_cert,
            "server_key": server_key, "client_cert": client_cert, "client_key": client_key}


@pytest.fixture(scope="module")
def mtls_etcd(pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[LocalEtcd]:
    d = tmp_path_factory.mktemp("mtls")
    server = LocalEtcd(d / "data", tls=TlsFiles(str(pki["server_cert"]),
                                                 str(pki["server_key"]), str(pki["ca"])))
    server.start()
    yield server
    server.stop()


async def test_mutual_tls_round_trip(mtls_etcd: LocalEtcd, pki: dict[str, Path]) -> None:
    settings = settings_from(mtls_etcd.url, environ={}, ca=str(pki["ca"]),
                             cert=str(pki["client_cert"]), key=str(pki["client_key"]))
    assert settings.tls
    async with Etcd(settings) as etcd:
        await etcd.put("/lvs/tls/k", "v")
        kv = await etcd.get("/lvs/tls/k")
        assert kv is not None and kv.value == b"v"


async def test_tls_without_client_cert_is_refused(mtls_etcd: LocalEtcd,
                                                  pki: dict[str, Path]) -> None:
    settings = settings_from(mtls_etcd.url, environ={}, ca=str(pki["ca"]), timeout=2.0)
    with pytest.raises(EtcdUnavailable, match="etcd unreachable at https://"):
        async with Etcd(settings) as etcd:
            await etcd.get("/lvs/tls/k")


async def test_tls_with_wrong_ca_is_refused(mtls_etcd: LocalEtcd, pki: dict[str, Path]) -> None:
    settings = settings_from(mtls_etcd.url, environ={}, ca=str(pki["other_ca"]),
                             cert=str(pki["client_cert"]), key=str(pki["client_key"]),
                             timeout=2.0)
    with pytest.raises(EtcdUnavailable):
        async with Etcd(settings) as etcd:
            await etcd.get("/lvs/tls/k")


async def test_password_auth_over_tls(pki: dict[str, Path], tmp_path: Path) -> None:
    server = LocalEtcd(tmp_path / "data", tls=TlsFiles(
        str(pki["server_cert"]), str(pki["server_key"]), str(pki["ca"]),
        client_cert_auth=False))
    server.start()
    try:
        ctl = ["--cacert", str(pki["ca"])]
        server.etcdctl(*ctl, "user", "add", "root:rootpw")
        server.etcdctl(*ctl, "user", "add", "lvs:s3cret")
        server.etcdctl(*ctl, "role", "add", "lvs")
        server.etcdctl(*ctl, "role", "grant-permission", "lvs", "--prefix=true",
                       "readwrite", "/lvs/")
        server.etcdctl(*ctl, "user", "grant-role", "lvs", "lvs")
        server.etcdctl(*ctl, "auth", "enable")

        good = settings_from(server.url, environ={}, ca=str(pki["ca"]),
                             user="lvs", password="s3cret")
        async with Etcd(good) as etcd:
            await etcd.put("/lvs/auth/k", "v")
            assert (await etcd.get("/lvs/auth/k")).value == b"v"  # type: ignore[union-attr]
            with pytest.raises(EtcdAuthError, match="refused"):
                await etcd.put("/outside/k", "v")  # no permission outside /lvs/

        bad = settings_from(server.url, environ={}, ca=str(pki["ca"]),
                            user="lvs", password="wrong")
        with pytest.raises(EtcdAuthError, match="refused authenticate"):
            async with Etcd(bad):
                pass

        anonymous = settings_from(server.url, environ={}, ca=str(pki["ca"]))
        with pytest.raises(EtcdAuthError):
            async with Etcd(anonymous) as etcd:
                await etcd.get("/lvs/auth/k")
    finally:
        server.stop()


async def test_several_endpoints_a_dead_one_is_skipped(etcd_server: LocalEtcd) -> None:
    from lvslab.etcd_server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    for urls in (f"{dead},{etcd_server.url}", f"{etcd_server.url},{dead}"):
        settings = settings_from(urls, environ={}, timeout=3.0)
        assert len(settings.endpoints) == 2
        async with Etcd(settings) as etcd:
            for i in range(6):  # round robin would hit the dead one: it must not matter
                await etcd.put(f"/lvs/multi/{i}", "v")
            kvs, _ = await etcd.get_prefix("/lvs/multi/")
            assert len(kvs) == 6
