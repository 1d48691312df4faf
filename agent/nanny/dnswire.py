"""A DNS query and the header of its answer, by hand (pure, RFC 1035 wire format)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

QTYPES = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
    "AAAA": 28, "SRV": 33, "ANY": 255,
}
RCODES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
}
_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_RD = 0x0100
_TC = 0x0200


def qtype_number(qtype: str | int) -> int:
    """Query type as a number, from a name (``"A"``, ``"soa"``) or a number. Raises ValueError."""
    if isinstance(qtype, int):
        number = qtype
    elif qtype.upper() in QTYPES:
        number = QTYPES[qtype.upper()]
    elif qtype.upper().startswith("TYPE") and qtype[4:].isdigit():
        number = int(qtype[4:])  # RFC 3597 notation
    else:
        raise ValueError(f"unknown DNS query type {qtype!r} (one of {', '.join(QTYPES)})")
    if not 0 < number < 65536:
        raise ValueError(f"DNS query type {number} out of range")
    return number


def encode_name(name: str) -> bytes:
    """Wire form of a domain name (``"."`` is the root). Raises ValueError if it cannot be."""
    labels = [label for label in name.rstrip(".").split(".")] if name not in ("", ".") else []
    out = bytearray()
    for label in labels:
        raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        out += bytes([len(raw)]) + raw
    out += b"\x00"
    if len(out) > 255:
        raise ValueError(f"DNS name too long: {name!r}")
    return bytes(out)


def build_query(qid: int, name: str, qtype: int) -> bytes:
    """A standard recursive query for ``name``/``qtype`` class IN with id ``qid``."""
    return _HEADER.pack(qid, _RD, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, 1)


@dataclass(frozen=True, slots=True)
class AnswerHeader:
    """The parts of a DNS answer's header a health check looks at."""

    qid: int
    is_response: bool
    truncated: bool
    rcode: int
    answers: int


def parse_header(data: bytes) -> AnswerHeader | None:
    """The header of a DNS message, or None if ``data`` is too short to be one."""
    if len(data) < _HEADER.size:
        return None
    qid, flags, _qd, an, _ns, _ar = _HEADER.unpack_from(data)
    return AnswerHeader(qid, bool(flags & _QR), bool(flags & _TC), flags & 0x000F, an)


def rcode_name(rcode: int) -> str:
    """Mnemonic of a response code (``"NXDOMAIN"``), or ``"RCODE9"``."""
    return RCODES.get(rcode, f"RCODE{rcode}")


def rcode_number(rcode: str | int) -> int:
    """Response code as a number, from a mnemonic or a number. Raises ValueError."""
    if isinstance(rcode, int):
        if 0 <= rcode < 16:
            return rcode
        raise ValueError(f"DNS rcode {rcode} out of range 0..15")
    for number, name in RCODES.items():
        if name == rcode.upper():
            return number
    raise ValueError(f"unknown DNS rcode {rcode!r} (one of {', '.join(RCODES.values())})")
