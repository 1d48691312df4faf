"""The heartbeat packet: a value, its wire encoding and the stateless checks on decode.

Wire format (version 1), at most :data:`MAX_PACKET` bytes::

    b"PHB" | version (1 byte) | compact JSON body (UTF-8) | HMAC-SHA256 (32 bytes)

The MAC covers every byte before it (magic, version and body). The body is checked only
after the MAC, so unauthenticated bytes never reach the JSON parser. Replay and freshness
need state and live in :mod:`agent.heartbeat.verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

MAGIC = b"PHB"
VERSION = 1
MAC_SIZE = 32
MAX_PACKET = 1400  # bytes; fits an unfragmented UDP datagram on any sane link
MAX_NAME = 64  # bytes (UTF-8) for cluster and node names
MAX_UINT64 = 2**64 - 1

Role = Literal["active", "backup", "starting"]
ROLES: tuple[Role, ...] = get_args(Role)

Reason = Literal["bad_mac", "replay", "stale", "malformed", "unknown_sender", "wrong_cluster"]
REASONS: tuple[Reason, ...] = get_args(Reason)


class Rejected(Exception):
    """A received packet was dropped; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail


class PacketTooLarge(ValueError):
    """The encoded heartbeat would exceed :data:`MAX_PACKET`."""


@dataclass(frozen=True, order=True)
class Incarnation:
    """One run of a sender: wall-clock start in ms, then a random 64-bit nonce.

    Ordered by (started, nonce): a restarted sender has a newer incarnation, so its
    sequence numbers may start again from 1 while packets of older runs stay rejected.
    """

    started: int  # ms since the epoch
    nonce: int  # random, identifies this run in acks

    @classmethod
    def new(cls, wall: float) -> Incarnation:
        """A fresh incarnation starting at wall-clock time ``wall`` (seconds)."""
        return cls(started=int(wall * 1000), nonce=secrets.randbits(64))


@dataclass(frozen=True)
class Ack:
    """The newest sequence received from a peer, tagged with that peer's run."""

    nonce: int  # the acknowledged peer's Incarnation.nonce
    seq: int


@dataclass(frozen=True)
class Heartbeat:
    """One heartbeat as sent by ``node``."""

    cluster: str
    node: str
    incarnation: Incarnation
    seq: int
    timestamp: float  # sender's wall clock, seconds; only used for freshness
    role: Role
    term: int  # fencing token of the leader the sender believes in; 0 if none
    etcd_ok: bool
    acks: Mapping[str, Ack] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "acks", MappingProxyType(dict(self.acks)))


def _body(hb: Heartbeat) -> dict[str, Any]:
    return {
        "cluster": hb.cluster,
        "node": hb.node,
        "inc": [hb.incarnation.started, hb.incarnation.nonce],
        "seq": hb.seq,
        "ts": hb.timestamp,
        "role": hb.role,
        "term": hb.term,
        "etcd": hb.etcd_ok,
        "acks": {name: [a.nonce, a.seq] for name, a in sorted(hb.acks.items())},
    }


def _check_values(hb: Heartbeat) -> None:
    """Raise ValueError if ``hb`` holds something a peer would reject as malformed."""
    for what, name in [("cluster", hb.cluster), ("node", hb.node), *(("ack", n) for n in hb.acks)]:
        check_name(what, name, ValueError)
    uints = [hb.incarnation.started, hb.incarnation.nonce, hb.seq, hb.term]
    uints += [v for a in hb.acks.values() for v in (a.nonce, a.seq)]
    for v in uints:
        if not _is_uint(v):
            raise ValueError(f"heartbeat number out of range 0..2^64-1: {v!r}")
    if hb.role not in ROLES:
        raise ValueError(f"heartbeat role must be one of {ROLES}, not {hb.role!r}")
    if not isinstance(hb.etcd_ok, bool):
        raise ValueError(f"heartbeat etcd_ok must be a bool, not {hb.etcd_ok!r}")
    if not _is_time(hb.timestamp):
        raise ValueError(f"heartbeat timestamp must be a finite number, not {hb.timestamp!r}")


def encode(hb: Heartbeat, key: bytes) -> bytes:
    """Serialise and sign ``hb``. Raises ValueError on bad values, PacketTooLarge if too big."""
    _check_values(hb)
    body = json.dumps(_body(hb), separators=(",", ":"), ensure_ascii=False).encode()
    signed = MAGIC + bytes([VERSION]) + body
    data = signed + hmac.digest(key, signed, hashlib.sha256)
    if len(data) > MAX_PACKET:
        raise PacketTooLarge(f"heartbeat is {len(data)} bytes, limit {MAX_PACKET}")
    return data


def decode(data: bytes, key: bytes) -> Heartbeat:
    """Authenticate and parse one datagram. Raises :class:`Rejected` (malformed, bad_mac)."""
    head = len(MAGIC) + 1
    if len(data) > MAX_PACKET:
        raise Rejected("malformed", f"{len(data)} bytes, limit {MAX_PACKET}")
    if len(data) < head + 2 + MAC_SIZE:
        raise Rejected("malformed", f"only {len(data)} bytes")
    if data[: len(MAGIC)] != MAGIC:
        raise Rejected("malformed", "not a heartbeat (bad magic)")
    if data[len(MAGIC)] != VERSION:
        raise Rejected("malformed", f"unsupported version {data[len(MAGIC)]}, want {VERSION}")
    signed, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    if not hmac.compare_digest(mac, hmac.digest(key, signed, hashlib.sha256)):
        raise Rejected("bad_mac", "MAC does not verify (wrong key or altered packet)")
    try:
        body = json.loads(signed[head:].decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise Rejected("malformed", f"body is not JSON: {e}") from None
    return _parse(body)


def _parse(body: object) -> Heartbeat:
    """Build a Heartbeat from an authenticated JSON body, strictly typed."""
    if not isinstance(body, dict):
        raise Rejected("malformed", "body is not an object")
    try:
        cluster, node = body["cluster"], body["node"]
        inc, seq, ts = body["inc"], body["seq"], body["ts"]
        role, term, etcd_ok, acks = body["role"], body["term"], body["etcd"], body["acks"]
    except KeyError as e:
        raise Rejected("malformed", f"missing field {e}") from None
    check_name("cluster", cluster, _malformed)
    check_name("node", node, _malformed)
    if not (isinstance(inc, list) and len(inc) == 2 and all(map(_is_uint, inc))):
        raise Rejected("malformed", f"bad incarnation {inc!r}")
    if not (_is_uint(seq) and seq > 0):
        raise Rejected("malformed", f"bad seq {seq!r}")
    if not _is_time(ts):
        raise Rejected("malformed", f"bad timestamp {ts!r}")
    if role not in ROLES:
        raise Rejected("malformed", f"bad role {role!r}")
    if not _is_uint(term):
        raise Rejected("malformed", f"bad term {term!r}")
    if not isinstance(etcd_ok, bool):
        raise Rejected("malformed", f"bad etcd flag {etcd_ok!r}")
    if not isinstance(acks, dict):
        raise Rejected("malformed", "acks is not an object")
    parsed: dict[str, Ack] = {}
    for name, ack in acks.items():
        check_name("ack", name, _malformed)
        if not (isinstance(ack, list) and len(ack) == 2 and all(map(_is_uint, ack))):
            raise Rejected("malformed", f"bad ack for {name!r}: {ack!r}")
        parsed[name] = Ack(nonce=ack[0], seq=ack[1])
    return Heartbeat(
        cluster=cluster,
        node=node,
        incarnation=Incarnation(started=inc[0], nonce=inc[1]),
        seq=seq,
        timestamp=float(ts),
        role=role,
        term=term,
        etcd_ok=etcd_ok,
        acks=parsed,
    )


def _malformed(detail: str) -> Rejected:
    return Rejected("malformed", detail)


def check_name(what: str, name: object, error: Any = ValueError) -> None:
    """Raise ``error(message)`` unless ``name`` is a valid cluster/node name."""
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME:
        raise error(f"{what} name must be 1..{MAX_NAME} bytes of text, not {name!r}")
    if not name.isprintable() or name != name.strip():
        raise error(f"{what} name must be printable without surrounding blanks: {name!r}")


def _is_uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_UINT64


def _is_time(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
