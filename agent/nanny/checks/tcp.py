"""TCP connect check: connect, then close at once with a reset (no TIME_WAIT left behind).

This is the hot path of the engine, so it is written with callbacks, not a coroutine: a
non-blocking ``connect`` is retried once at once, which on loopback and fast LANs already
reports the outcome (no poller round trip); otherwise the socket waits in the event loop's
writer set under a timer. ``done`` gets exactly one :class:`CheckResult` unless cancelled.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Callable

from agent.nanny.checks.common import describe, errno_reason, timeout_reason
from agent.nanny.result import CheckResult
from agent.nanny.spec import CheckSpec

Done = Callable[[CheckResult], None]
_LINGER_RESET = struct.pack("ii", 1, 0)
_SOCK_TYPE = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_CONNECTED = (0, errno.EISCONN)
_PENDING = (errno.EINPROGRESS, errno.EALREADY)
_CONNECTED_REASON = "connected"


def start_tcp(spec: CheckSpec, done: Done) -> _Pending | None:
    """Start a connect check; None if it finished already (``done`` has been called)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        sock = socket.socket(spec.family, _SOCK_TYPE)
    except OSError as exc:
        done(CheckResult(False, describe(exc), None, 0.0))
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        err = sock.connect_ex(spec.sockaddr)
        if err == errno.EINPROGRESS:
            err = sock.connect_ex(spec.sockaddr)  # loopback/LAN: often settled already
    except OSError as exc:
        sock.close()
        done(CheckResult(False, describe(exc), None, loop.time() - start))
        return None
    if err in _PENDING:
        return _Pending(loop, sock, spec.timeout, done, start)
    sock.close()
    if err in _CONNECTED:
        done(CheckResult(True, _CONNECTED_REASON, None, loop.time() - start))
    else:
        done(CheckResult(False, errno_reason(err), None, loop.time() - start))
    return None


class _Pending:
    """A connect still in progress: waits for writability or its deadline."""

    __slots__ = ("_done", "_loop", "_sock", "_start", "_timeout", "_timer")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout: float,
        done: Done, start: float,
    ) -> None:
        self._loop, self._sock, self._done = loop, sock, done
        self._start, self._timeout = start, timeout
        loop.add_writer(sock.fileno(), self._writable)
        self._timer = loop.call_at(start + timeout, self._expired)

    def _finish(self) -> float:
        self._timer.cancel()
        self._loop.remove_writer(self._sock.fileno())
        self._sock.close()
        return self._loop.time() - self._start

    def _writable(self) -> None:
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        elapsed = self._finish()
        if err == 0:
            self._done(CheckResult(True, _CONNECTED_REASON, None, elapsed))
        else:
            self._done(CheckResult(False, errno_reason(err), None, elapsed))

    def _expired(self) -> None:
        elapsed = self._finish()
        self._done(CheckResult(False, timeout_reason(self._timeout), None, elapsed))

    def cancel(self) -> None:
        """Abandon the check: ``done`` will not be called."""
        if self._sock.fileno() >= 0:
            self._finish()


async def check_tcp(spec: CheckSpec) -> CheckResult:
    """Run one connect check and return its result."""
    future: asyncio.Future[CheckResult] = asyncio.get_running_loop().create_future()
    pending = start_tcp(spec, future.set_result)
    try:
        return await future
    finally:
        if pending is not None and not future.done():
            pending.cancel()
