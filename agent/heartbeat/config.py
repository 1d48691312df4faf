"""Heartbeat settings and the shared secret. The agent maps its cluster config onto these."""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from agent.heartbeat.packet import (
    MAX_UINT64,
    Ack,
    Heartbeat,
    Incarnation,
    PacketTooLarge,
    check_name,
    encode,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 539
MIN_SECRET = 16  # bytes
SECRET_ENV = "LVS_HEARTBEAT_KEY"


class ConfigError(ValueError):
    """Heartbeat settings or secret that cannot work; the message says why."""


@dataclass(frozen=True, kw_only=True)
class HeartbeatConfig:
    """Who we are, whom we talk to and how often. Times are seconds.

    ``local_addresses``: this router's own addresses; one socket is bound to each.
    ``peers``: the other routers, each with every address it can be reached at (e.g. its
    public and private link); a heartbeat is sent to each address every ``keepalive``.
    ``freshness``: how far a packet's timestamp may be from our wall clock.
    """

    cluster: str
    node: str
    port: int = DEFAULT_PORT
    keepalive: float
    deadtime: float
    freshness: float = 10.0
    local_addresses: tuple[str, ...]
    peers: Mapping[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        if isinstance(self.local_addresses, str):
            raise ConfigError("local_addresses must be a sequence of addresses, not a string")
        if not isinstance(self.peers, Mapping) or any(
            isinstance(v, str) for v in self.peers.values()
        ):
            raise ConfigError("peers must map each peer name to a sequence of addresses")
        try:
            check_name("cluster", self.cluster)
            check_name("node", self.node)
            for name in self.peers:
                check_name("peer", name)
        except ValueError as e:
            raise ConfigError(f"heartbeat config: {e}") from None
        me = f"local address of {self.node!r}"
        local = tuple(_canonical(me, a) for a in self.local_addresses)
        peers = MappingProxyType(
            {
                name: tuple(_canonical(f"address of peer {name!r}", a) for a in addresses)
                for name, addresses in self.peers.items()
            }
        )
        object.__setattr__(self, "local_addresses", local)
        object.__setattr__(self, "peers", peers)
        _check_number("keepalive", self.keepalive)
        _check_number("deadtime", self.deadtime)
        _check_number("freshness", self.freshness)
        if self.deadtime <= self.keepalive:
            raise ConfigError(
                f"heartbeat deadtime ({self.deadtime}s) must be longer than keepalive "
                f"({self.keepalive}s), normally at least twice as long"
            )
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ConfigError(f"heartbeat port must be an integer, not {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"heartbeat port {self.port} is not in 1..65535")
        if not self.local_addresses:
            raise ConfigError(f"node {self.node!r} has no local address to send heartbeats from")
        local = [ipaddress.ip_address(a) for a in self.local_addresses]
        if len(set(local)) != len(local):
            raise ConfigError(f"duplicate local address in {self.local_addresses}")
        if self.node in peers:
            raise ConfigError(f"node {self.node!r} is listed among its own peers")
        families = {a.version for a in local}
        for name, addresses in peers.items():
            if not addresses:
                raise ConfigError(f"peer {name!r} has no address")
            for text in addresses:
                a = ipaddress.ip_address(text)
                if a in local:
                    raise ConfigError(f"peer {name!r} address {text} is one of our own")
                if a.version not in families:
                    raise ConfigError(
                        f"peer {name!r} address {text} is IPv{a.version} but node "
                        f"{self.node!r} has no local IPv{a.version} address"
                    )
        self._check_fits()

    def _check_fits(self) -> None:
        """Refuse names that cannot fit a worst-case heartbeat into one packet."""
        big = Incarnation(MAX_UINT64, MAX_UINT64)
        hb = Heartbeat(
            cluster=self.cluster,
            node=self.node,
            incarnation=big,
            seq=MAX_UINT64,
            timestamp=9999999999.999999,
            role="starting",
            term=MAX_UINT64,
            etcd_ok=False,
            acks={p: Ack(MAX_UINT64, MAX_UINT64) for p in self.peers},
        )
        try:
            encode(hb, b"k" * MIN_SECRET)
        except PacketTooLarge:
            raise ConfigError(
                f"too many peers or too long names: a heartbeat could exceed the packet "
                f"limit ({len(self.peers)} peers)"
            ) from None
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _check_number(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"heartbeat {what} must be a positive number of seconds, not {value!r}")
    if value == float("inf"):
        raise ConfigError(f"heartbeat {what} must be finite")


def _address(what: str, text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        a = ipaddress.ip_address(text)  # type: ignore[arg-type]
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not an IP address") from None
    if a.is_unspecified or a.is_multicast:
        raise ConfigError(f"{what}: {text} must be a unicast address of one host")
    if a.version == 6 and a.is_link_local:
        raise ConfigError(f"{what}: {text} is IPv6 link-local (needs a scope); use another")
    return a


def _canonical(what: str, text: object) -> str:
    return str(_address(what, text))


def load_secret(path: str | None, env: str = SECRET_ENV) -> bytes:
    """The shared heartbeat key from file ``path``, or else from environment variable ``env``.

    Surrounding whitespace (a trailing newline) is stripped. Raises :class:`ConfigError` if
    it is missing, unreadable or shorter than :data:`MIN_SECRET` bytes. Generate one with
    ``openssl rand -hex 32``.
    """
    if path is not None:
        try:
            with open(path, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                raw = f.read(4096)
        except OSError as e:
            raise ConfigError(f"cannot read heartbeat key file {path}: {e.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "heartbeat key file %s is accessible by group/others (mode %o); consider chmod 600",
                path,
                stat.S_IMODE(mode),
            )
        source = f"key file {path}"
    else:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(
                f"no heartbeat key: give a key file or set the environment variable {env}"
            )
        raw = value.encode()
        source = f"environment variable {env}"
    secret = raw.strip()
    if len(secret) < MIN_SECRET:
        raise ConfigError(
            f"heartbeat key from {source} is {len(secret)} bytes, need at least {MIN_SECRET} "
            f"(e.g. openssl rand -hex 32)"
        )
    return secret
