"""One UDP request and the datagrams that come back, on a connected socket (asyncio shell)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent.nanny.result import CheckResult, failed
from agent.nanny.spec import CheckSpec

Judge = Callable[[bytes], CheckResult | None]  # None: not ours, keep waiting


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, judge: Judge, future: asyncio.Future[CheckResult]) -> None:
        self._judge, self._future = judge, future

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self._future.done():
            return
        verdict = self._judge(data)
        if verdict is not None:
            self._future.set_result(verdict)

    def error_received(self, exc: Exception) -> None:
        if not self._future.done():  # ICMP port unreachable arrives as ECONNREFUSED
            reason = "port unreachable" if isinstance(exc, ConnectionRefusedError) else str(exc)
            self._future.set_result(failed(reason))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._future.done():
            self._future.set_result(failed("socket closed"))


async def exchange(spec: CheckSpec, payload: bytes, judge: Judge) -> CheckResult:
    """Send ``payload`` and wait (no deadline of its own) for a datagram ``judge`` settles."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[CheckResult] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Exchange(judge, future), remote_addr=spec.sockaddr[:2], family=spec.family
    )
    try:
        transport.sendto(payload)
        return await future
    finally:
        transport.close()
