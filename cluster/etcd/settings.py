"""How to reach etcd: endpoints, TLS and user/password, from flags or the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_ENDPOINTS = ("http://127.0.0.1:2379",)

ENV = {
    "endpoints": "LVS_ETCD",
    "ca": "LVS_ETCD_CA",
    "cert": "LVS_ETCD_CERT",
    "key": "LVS_ETCD_KEY",
    "user": "LVS_ETCD_USER",
    "password": "LVS_ETCD_PASSWORD",
    "server_name": "LVS_ETCD_SERVER_NAME",
}


class SettingsError(ValueError):
    """The etcd connection settings are unusable (bad URL, unreadable certificate...)."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """Parse ``http://h:p,https://h2:p2,h3:p3`` (scheme optional, port default 2379)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        url = urlsplit(part if "://" in part else f"http://{part}")
        if url.scheme not in ("http", "https"):
            raise SettingsError(f"etcd endpoint {part!r}: scheme must be http or https")
        try:
            port = url.port or 2379
        except ValueError as exc:
            raise SettingsError(f"etcd endpoint {part!r}: {exc}") from None
        if not url.hostname:
            raise SettingsError(f"etcd endpoint {part!r}: no host")
        out.append(Endpoint(url.hostname, port, url.scheme == "https"))
    if not out:
        raise SettingsError("no etcd endpoint given")
    return tuple(out)


@dataclass(frozen=True)
class EtcdSettings:
    """Everything needed to open a client. TLS is on if any endpoint is https or a CA is set."""

    endpoints: tuple[Endpoint, ...] = parse_endpoints(",".join(DEFAULT_ENDPOINTS))
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None
    server_name: str | None = None
    timeout: float = 5.0

    @property
    def tls(self) -> bool:
        return self.ca is not None or any(e.tls for e in self.endpoints)

    @property
    def urls(self) -> str:
        scheme = "https" if self.tls else "http"
        return ",".join(f"{scheme}://{e.target}" for e in self.endpoints)

    def credentials(self) -> dict[str, bytes | None]:
        """TLS material as bytes for the gRPC channel (empty dict without TLS)."""
        if not self.tls:
            return {}
        if (self.cert is None) != (self.key is None):
            raise SettingsError("etcd client certificate and key must be given together")
        return {
            "ca_cert": _read(self.ca, "CA certificate") if self.ca else _system_ca(),
            "cert_chain": _read(self.cert, "client certificate") if self.cert else None,
            "cert_key": _read(self.key, "client key") if self.key else None,
        }


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read etcd {what} {path}: {exc.strerror}") from None


def _system_ca() -> bytes:
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if Path(path).exists():
            return Path(path).read_bytes()
    raise SettingsError("TLS endpoint given but no CA certificate (--etcd-ca) and no system CA")


def settings_from(
    endpoints: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: str | float | None,
) -> EtcdSettings:
    """Build settings from explicit values, falling back to ``LVS_ETCD*`` variables."""
    env = os.environ if environ is None else environ
    text = endpoints or env.get(ENV["endpoints"]) or ",".join(DEFAULT_ENDPOINTS)
    values: dict[str, object] = {"endpoints": parse_endpoints(text)}
    for field, var in ENV.items():
        if field == "endpoints":
            continue
        value = overrides.get(field)
        values[field] = value if value is not None else env.get(var) or None
    if overrides.get("timeout") is not None:
        values["timeout"] = float(overrides["timeout"])  # type: ignore[arg-type]
    if (values["user"] is None) != (values["password"] is None):
        raise SettingsError("etcd user and password must be given together")
    return EtcdSettings(**values)  # type: ignore[arg-type]
