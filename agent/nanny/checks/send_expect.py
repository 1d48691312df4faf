"""Piranha's send/expect check over TCP: connect, send, read until ``expect`` is settled.

With neither ``send`` nor ``expect`` a connect is enough, except on port 80 where Piranha's
nanny sent ``GET / HTTP/1.0`` (we also expect ``HTTP`` back). With ``send`` and no
``expect`` the check passes once the bytes are written, as nanny did.
"""

from __future__ import annotations

import asyncio

from agent.nanny.match import MAX_READ, Expect
from agent.nanny.result import CheckResult, failed, passed
from agent.nanny.spec import HTTP_DEFAULT_EXPECT, HTTP_DEFAULT_SEND, CheckSpec

_HTTP_DEFAULT = Expect(HTTP_DEFAULT_EXPECT)


def effective(spec: CheckSpec) -> tuple[bytes | None, Expect | None]:
    """What to send and what to expect, with Piranha's port-80 default applied."""
    if spec.send is None and spec.matcher is None and spec.port == 80:
        return HTTP_DEFAULT_SEND, _HTTP_DEFAULT
    return spec.send, spec.matcher


async def read_until(reader: asyncio.StreamReader, expect: Expect) -> CheckResult:
    """Read from ``reader`` until ``expect`` matches or cannot match any more."""
    buf = b""
    while True:
        chunk = await reader.read(MAX_READ - len(buf))
        buf += chunk
        verdict = expect.judge(buf, eof=not chunk)
        if verdict is True:
            return passed("expect matched")
        if verdict is False:
            if not buf:
                return failed("connection closed without a response")
            return failed(f"expect not matched: got {buf[:40]!r}")


async def check_send_expect(spec: CheckSpec) -> CheckResult:
    """Connect, send, then read until the expect string is matched (no deadline of its own)."""
    send, expect = effective(spec)
    reader, writer = await asyncio.open_connection(spec.host, spec.port)
    try:
        if send:
            writer.write(send)
            await writer.drain()
        if expect is None:
            return passed("sent" if send else "connected")
        return await read_until(reader, expect)
    finally:
        writer.close()
