"""Directive values: lvs.cf text to Python values and back, by `Cf.kind`.

Reading only checks the spelling (a number, 0/1, an address...); ranges, patterns and
enumerations are checked afterwards by the model field's own pydantic validator.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from cluster.lvscf.lexer import ESCAPES, unescape
from cluster.lvscf.services import lookup_service
from cluster.model import parse_ip

_INT = re.compile(r"^[+-]?[0-9]{1,20}$")
_FLOAT = re.compile(r"^[+-]?([0-9]{1,20}(\.[0-9]{0,20})?|\.[0-9]{1,20})([eE][+-]?[0-9]{1,3})?$")
_PLAIN = re.compile(r"^[^\s#\"'\\]+(?:[ \t]+[^\s#\"'\\]+)*$")
_REVERSE_ESCAPES = {v: "\\" + k for k, v in ESCAPES.items() if k != "'"}


def read_value(kind: str, text: str, quoted: bool) -> Any:
    """The value of a directive of `kind` written as `text`; ValueError says what is wrong."""
    reader = _READERS.get(kind)
    if reader is None:
        raise ValueError(f"cannot read a value of kind {kind!r}")
    return reader(text, quoted)


def _int(text: str, _quoted: bool) -> int:
    if not _INT.fullmatch(text):
        too_long = text.lstrip("+-").isdigit()
        raise ValueError(f"number too large: {text[:30]!r}" if too_long
                         else f"expected a whole number, got {text!r}")
    return int(text)


def _float(text: str, _quoted: bool) -> float:
    if not _FLOAT.fullmatch(text):
        raise ValueError(f"expected a number of seconds, got {text!r}")
    return float(text)


def _bool(text: str, _quoted: bool) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"expected 0 or 1, got {text!r}")
    return text == "1"


def _ip(text: str, _quoted: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return parse_ip(text)
    except ValueError:
        raise ValueError(f"bad address {text!r} (expected an IPv4 or IPv6 address)") from None


def _addrdev(text: str, quoted: bool) -> dict[str, Any]:
    parts = text.split()
    if not 1 <= len(parts) <= 2:
        raise ValueError(f"expected 'IP device' such as '10.0.0.1 eth0:1', got {text!r}")
    return {"ip": _ip(parts[0], quoted), "device": parts[1] if len(parts) == 2 else None}


def _port(text: str, _quoted: bool) -> int:
    if _INT.fullmatch(text):
        return int(text)
    port = lookup_service(text)
    if port is None:
        raise ValueError(f"bad port {text!r}: not a number or a known service name")
    return port


def _escaped(text: str, quoted: bool) -> str:
    return text if quoted else unescape(text)


_READERS = {
    "int": _int, "float": _float, "bool": _bool, "ip": _ip, "addrdev": _addrdev,
    "port": _port, "netmask": lambda t, q: t, "enum": lambda t, q: t,
    "text": lambda t, q: t, "word": lambda t, q: t, "escaped": _escaped,
}


def format_value(kind: str, value: Any) -> str:
    """The canonical lvs.cf spelling of `value`."""
    if kind == "bool":
        return "1" if value else "0"
    if kind == "float":
        return format_float(value)
    if kind == "escaped":
        return quote(value)
    if kind == "text":
        return value if _PLAIN.fullmatch(value) else quote(value)
    return str(value)


def format_float(value: float) -> str:
    """10.0 -> '10', 0.5 -> '0.5'; exact (repr) otherwise."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def quote(text: str) -> str:
    """`text` in double quotes with backslash escapes."""
    return '"' + "".join(_REVERSE_ESCAPES.get(ch, ch) for ch in text) + '"'
