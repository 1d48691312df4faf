"""HTTP and HTTPS checks: one GET over asyncio streams, status code ranges, optional body regex.

TLS certificates are NOT verified by default: real servers behind a director often use
self-signed certificates, and the check is about health, not identity. ``tls_verify``
turns on verification against the system's CAs (hostname: ``http_host`` or the address).
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl

from agent.nanny import httpwire
from agent.nanny.match import MAX_READ
from agent.nanny.result import CheckResult, failed, passed
from agent.nanny.spec import CheckSpec

_MAX_HEAD = 16384


@functools.cache
def tls_context(verify: bool) -> ssl.SSLContext:
    """A client TLS context, built once per mode (they are expensive)."""
    if verify:
        return ssl.create_default_context()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def host_header(spec: CheckSpec) -> str:
    """The Host header: ``http_host`` or the address (with the port if not the default)."""
    if spec.http_host is not None:
        return spec.http_host
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    default = 443 if spec.kind == "https" else 80
    return host if spec.port == default else f"{host}:{spec.port}"


def server_name(header: str) -> str:
    """The TLS server name of a Host header: without its port or IPv6 brackets."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.partition(":")[0]


async def check_http(spec: CheckSpec) -> CheckResult:
    """GET ``http_path``; pass if the status is in range and the body matches (no deadline)."""
    tls = spec.kind == "https"
    ssl_args: dict[str, object] = {}
    if tls:
        ssl_args["ssl"] = tls_context(spec.tls_verify)
        if spec.http_host is not None:
            ssl_args["server_hostname"] = server_name(spec.http_host)
    reader, writer = await asyncio.open_connection(
        spec.host, spec.port, limit=_MAX_HEAD, **ssl_args
    )
    try:
        writer.write(httpwire.build_request(spec.http_path, host_header(spec)))
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return failed("response head too long")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return failed("connection closed without a response")
            head = exc.partial  # a head cut short still has its status line
        parsed = httpwire.parse_head(head)
        if parsed is None:
            return failed(f"not an HTTP response: {head[:40]!r}")
        status, headers = parsed
        if not httpwire.status_in(status, spec.status_ranges):
            return failed(f"status {status}")
        if spec.body_regex is None:
            return passed(f"status {status}")
        body = await _read_body(reader, headers, spec.body_regex)
        if spec.body_regex.search(body):
            return passed(f"status {status}, body matched")
        return failed(f"status {status}, body not matched")
    finally:
        writer.close()


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], regex: re.Pattern[bytes]
) -> bytes:
    """Up to MAX_READ bytes of the body, de-chunked; stops early once ``regex`` matches."""
    length = headers.get("content-length", "")
    want = min(int(length), MAX_READ) if length.isdigit() else MAX_READ
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    buf = b""
    while len(buf) < want:
        chunk = await reader.read(want - len(buf))
        if not chunk:
            break
        buf += chunk
        if chunked:
            if buf.endswith(b"0\r\n\r\n"):
                break
        elif regex.search(buf):
            break
    return httpwire.dechunk(buf) if chunked else buf
