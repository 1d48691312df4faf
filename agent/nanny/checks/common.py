"""What every coroutine check shares: a deadline, exceptions turned into short reasons."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import replace

from agent.nanny.result import CheckResult, failed
from agent.nanny.spec import CheckSpec

log = logging.getLogger("agent.nanny")

_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connect refused",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "connect timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EPIPE: "connection closed by peer",
    errno.EADDRNOTAVAIL: "no local address/port available",
    errno.EMFILE: "too many open files",
}


def errno_reason(code: int) -> str:
    """Short lower-case reason for an errno value."""
    return _ERRNO_REASONS.get(code) or os.strerror(code).lower()


def describe(exc: BaseException) -> str:
    """Short reason for an exception raised while checking."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"tls: {exc.reason or exc}".lower().replace("_", " ")
    if isinstance(exc, ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed by peer"
    if isinstance(exc, OSError):
        return errno_reason(exc.errno) if exc.errno else str(exc) or "OSError"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def timeout_reason(seconds: float) -> str:
    """``"timeout after 2s"``."""
    return f"timeout after {seconds:g}s"


async def guarded(
    spec: CheckSpec, body: Callable[[CheckSpec], Awaitable[CheckResult]]
) -> CheckResult:
    """Run ``body`` under ``spec.timeout``; any failure becomes a failed result, never a raise."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with asyncio.timeout(spec.timeout):
            result = await body(spec)
    except TimeoutError as exc:  # ours (no errno) or the kernel's ETIMEDOUT
        result = failed(describe(exc) if exc.errno else timeout_reason(spec.timeout))
    except (OSError, EOFError, ValueError, asyncio.IncompleteReadError) as exc:
        result = failed(describe(exc))
    except Exception as exc:  # a bug, not the server's fault: still never raise
        log.exception("nanny: %s check of %s:%s crashed", spec.kind, spec.host, spec.port)
        result = failed(f"internal error: {describe(exc)}")
    return replace(result, elapsed=loop.time() - start)
