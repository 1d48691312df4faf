"""Set elements as raw netlink messages: the reply guard's, the traffic counters', and
new services' dispatch elements. Pure.

Those sets hold a few elements per real server (170,000 at 40,000 servers), and libnftables
reads every set of the namespace before it adds or removes one element (nfbatch.py): 0.35 s
per transaction at that size. Their elements have fixed shapes, so :func:`split` takes the
element commands on them out of a planned transaction and :func:`messages` encodes them as
nf_tables messages, sent as a batch of their own right after the transaction (the backend).
The guard and traffic sets only follow the services (guard.py, traffic.py), and a new
service's dispatch element is added once its chain exists, so for the few milliseconds
between the commits a new service is not reachable yet and a new real server's elements
lag: its first packets may go uncounted (docs/nftables-backend.md).

A concatenated key is each field in network order, padded to 4 bytes: ``ipv4_addr .
inet_service`` is 8 bytes. ``ct_state`` is a 32-bit mask in host order, ``ct_dir`` a byte.
"""

from __future__ import annotations

import functools
import socket
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agent.dataplane.nft import guard, nfbatch, traffic

Json = dict[str, Any]
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": 132}
CT_DIR = {"original": 0, "reply": 1}
CT_STATE = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
#: Our sets whose elements go as raw messages, and each one's field kinds.
SHAPES: dict[str, tuple[str, ...]] = {
    **{name: ("addr", "port") for name in guard.SETS.values()},
    **{name: traffic.key_shape(name) for name in traffic.SETS},
}
#: The dispatch verdict maps: their additions (new services) go raw too, their removals
#: not (a removal shares its transaction with the chain's deletion, which must follow it).
DISPATCH: dict[str, tuple[str, ...]] = {
    **{f"fwm{f}": ("mark",) for f in (4, 6)},
    **{f"svc{f}": ("addr", "proto", "port") for f in (4, 6)},
    **{f"any{f}": ("addr", "proto") for f in (4, 6)},
}
#: Messages per raw batch (of up to nfbatch.ELEMENTS_PER_MESSAGE elements each): 16,384
#: elements commit in about 40 ms; a big change goes as several batches, the VIP fence's
#: licence writes can go in between (each batch is all or nothing; the sets only follow
#: the services, so a change split across batches shows nothing half-done to a packet
#: that the rules would not).
BATCH_MESSAGES = 16
NFT_GOTO = -4
DATA_VERDICT, VERDICT_CODE, VERDICT_CHAIN = 2, 1, 2  # NFTA_DATA_VERDICT, NFTA_VERDICT_*
ELEM_DATA = 2  # NFTA_SET_ELEM_DATA


@functools.lru_cache(maxsize=1 << 16)
def _addr(value: str) -> bytes:
    """An address's bytes (each comes back several times: a real server's in the guard
    and three traffic sets, a VIP's in every element of its services)."""
    return socket.inet_pton(socket.AF_INET6 if ":" in value else socket.AF_INET, value)


def _byte(names: dict[str, int]) -> Callable[[Any], bytes]:
    table = {name: bytes([n]) + b"\0\0\0" for name, n in names.items()}
    return lambda v: table[v] if isinstance(v, str) else bytes([int(v)]) + b"\0\0\0"


_PORT = struct.Struct(">H2x").pack
_STATES = {name: n.to_bytes(4, sys.byteorder) for name, n in CT_STATE.items()}
#: Each field kind's bytes, padded to 4 (the kernel's registers are 32 bits).
_FIELDS: dict[str, Callable[[Any], bytes]] = {
    "addr": _addr,
    "port": lambda v: _PORT(int(v)),
    "proto": _byte(PROTOCOLS),
    "dir": _byte(CT_DIR),
    "state": _STATES.__getitem__,
    "mark": lambda v: int(v).to_bytes(4, sys.byteorder),
}


def key(set_name: str, value: Any) -> bytes:
    """The kernel's key of one element of ``set_name``, as nft's JSON writes it
    (``{"concat": [...]}``, or the bare value of a single field)."""
    encoders = _ENCODERS.get(set_name)
    if encoders is None:
        shape = SHAPES.get(set_name) or DISPATCH[set_name]
        encoders = _ENCODERS[set_name] = tuple(_FIELDS[kind] for kind in shape)
    fields = value["concat"] if isinstance(value, dict) else [value]
    if len(fields) != len(encoders):
        raise ValueError(f"{set_name}: {len(fields)} fields, not {len(encoders)}")
    try:
        return b"".join([encode(field) for encode, field in zip(encoders, fields, strict=True)])
    except (OSError, KeyError, TypeError, ValueError, struct.error) as exc:
        raise ValueError(f"{set_name}: element {value!r}: {exc}") from None


_ENCODERS: dict[str, tuple[Callable[[Any], bytes], ...]] = {}  # set -> its fields' encoders


def split(table: str, cmds: Iterable[Json]) -> tuple[list[Json], list[Json]]:
    """(the other commands, those that go raw), each in order. Raw: the element commands
    on our guard and traffic sets of ``table`` (flushes, additions, removals), and the
    additions to its dispatch maps unless the transaction also removes from one."""
    cmds = list(cmds)
    names = set(SHAPES)
    if not any("delete" in c and _target(c, table) in DISPATCH for c in cmds):
        names |= DISPATCH.keys()
    rest: list[Json] = []
    ours: list[Json] = []
    for cmd in cmds:
        name = _target(cmd, table)
        raw = name in SHAPES or (name in names and "add" in cmd)
        (ours if raw else rest).append(cmd)
    return rest, ours


def _target(cmd: Json, table: str) -> str | None:
    """The set a command changes the elements of (in ``table``), if it does."""
    verb, body = next(iter(cmd.items()))
    what = body.get("element") if verb in ("add", "delete") else \
        body.get("set") if verb == "flush" else None
    if isinstance(what, dict) and what.get("table") == table and what.get("family") == "inet":
        return what.get("name")
    return None


def _verdict(value: Any) -> bytes:
    """A dispatch element's ``{"goto": {"target": chain}}`` as its data."""
    chain = value["goto"]["target"].encode() + b"\0"
    verdict = (nfbatch.attr(VERDICT_CODE, NFT_GOTO.to_bytes(4, "big", signed=True))
               + nfbatch.attr(VERDICT_CHAIN, chain))
    return nfbatch.attr(ELEM_DATA | nfbatch.NLA_F_NESTED,
                        nfbatch.attr(DATA_VERDICT | nfbatch.NLA_F_NESTED, verdict))


def _element(name: str, value: Any) -> bytes:
    if name in DISPATCH:
        k, v = value
        return nfbatch.element(key(name, k), _verdict(v))
    return nfbatch.element(key(name, value))


def messages(table: str, cmds: Sequence[Json]) -> list[nfbatch.Message]:
    """The nf_tables messages of element commands :func:`split` took out."""
    out: list[nfbatch.Message] = []
    for cmd in cmds:
        verb, body = next(iter(cmd.items()))
        if verb == "flush":
            out.append(nfbatch.elements_message(nfbatch.NFT_MSG_DELSETELEM,
                                                nfbatch.NFPROTO_INET, table, body["set"]["name"]))
            continue
        name = body["element"]["name"]
        kind = nfbatch.NFT_MSG_NEWSETELEM if verb == "add" else nfbatch.NFT_MSG_DELSETELEM
        part: list[bytes] = []
        size = 0
        for value in body["element"]["elem"]:
            elem = _element(name, value)
            if part and (len(part) == nfbatch.ELEMENTS_PER_MESSAGE
                         or size + len(elem) > nfbatch.ELEMENT_BYTES):
                out.append(nfbatch.elements_message(kind, nfbatch.NFPROTO_INET, table, name,
                                                    part))
                part, size = [], 0
            part.append(elem)
            size += len(elem)
        if part:
            out.append(nfbatch.elements_message(kind, nfbatch.NFPROTO_INET, table, name, part))
    return out
