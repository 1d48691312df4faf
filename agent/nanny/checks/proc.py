"""Run a check program without a shell, in its own process group; kill the group if abandoned.

No deadline here: callers wrap :func:`run` in a timeout. When the wait is cancelled (timeout
or engine stop) the whole process group gets SIGKILL and the child is reaped before the
cancellation goes on, so no check program outlives its check.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from agent.nanny.match import MAX_READ
from agent.subproc import kill

log = logging.getLogger("agent.nanny")
_REAP_WAIT = 2.0  # seconds to wait for a killed program to be reaped


@dataclass(frozen=True, slots=True)
class Ran:
    """How a program ended: exit code (``-N`` for signal N) and its first bytes of output."""

    code: int
    output: bytes


async def run(argv: tuple[str, ...], capture: bool = True) -> Ran:
    """Run ``argv`` (stdin and stderr from/to /dev/null).

    Raises OSError (``cannot run PROGRAM: reason``) if it cannot start.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own process group, killed as a whole
        )
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise OSError(f"cannot run {argv[0]}: {reason}") from None
    try:
        output = await _read_all(proc.stdout) if proc.stdout is not None else b""
        code = await proc.wait()
    except BaseException:
        if not await kill(proc, group=True, within=_REAP_WAIT):
            log.warning("nanny: %s killed but its output pipe is still held open", argv[0])
        raise
    return Ran(code, output)


async def _read_all(stream: asyncio.StreamReader) -> bytes:
    """All of ``stream`` until EOF, keeping the first MAX_READ bytes (the rest is drained)."""
    kept = b""
    while chunk := await stream.read(65536):
        if len(kept) < MAX_READ:
            kept += chunk[: MAX_READ - len(kept)]
    return kept


def describe_exit(code: int) -> str:
    """``"exit 3"`` or ``"killed by signal 9"``."""
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"
