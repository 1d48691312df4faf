"""HTTP/1.1 for health checks: the request, the status line, ranges of codes, bodies (pure)."""

from __future__ import annotations

import re

_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})(?: |\r|\n|$)")
USER_AGENT = "piranha-etcd-nanny"


def parse_status_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """``"200-299,301"`` -> ((200, 299), (301, 301)). Raises ValueError on junk."""
    ranges = []
    for part in text.replace(" ", "").split(","):
        low, sep, high = part.partition("-")
        try:
            lo = int(low)
            hi = int(high) if sep else lo
        except ValueError:
            raise ValueError(f"bad HTTP status range {part!r} in {text!r}") from None
        if not 100 <= lo <= hi <= 599:
            raise ValueError(f"bad HTTP status range {part!r} in {text!r} (100..599, low-high)")
        ranges.append((lo, hi))
    return tuple(ranges)


def status_in(code: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    """Whether ``code`` falls in one of ``ranges``."""
    return any(lo <= code <= hi for lo, hi in ranges)


def build_request(path: str, host_header: str) -> bytes:
    """A GET that asks the server to close the connection after answering."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


def parse_head(head: bytes) -> tuple[int, dict[str, str]] | None:
    """Status code and lower-cased headers of a response head, or None if it is not HTTP."""
    match = _STATUS_LINE.match(head)
    if match is None:
        return None
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return int(match.group(1)), headers


def dechunk(data: bytes) -> bytes:
    """Body of a chunked transfer coding, as far as ``data`` goes (truncation tolerated)."""
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            break
        try:
            size = int(data[pos:eol].split(b";")[0].strip() or b"0", 16)
        except ValueError:
            break
        if size == 0:
            break
        start = eol + 2
        out += data[start : start + size]
        pos = start + size + 2
        if pos > len(data):
            break
    return bytes(out)
