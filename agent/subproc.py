"""Talking to a child process within a time limit, and never leaving it behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

REAP_WAIT = 5.0  # seconds to wait for a killed child to be reaped


async def communicate(proc: asyncio.subprocess.Process, limit: float,
                      data: bytes | None = None, *,
                      group: bool = False) -> tuple[bytes, bytes]:
    """``proc.communicate(data)`` within ``limit`` seconds. On the limit (TimeoutError) or
    a cancellation the child is killed (its whole process group with ``group``, for a
    child started with ``start_new_session``) and reaped before the exception goes on: a
    child left unreaped outlives its event loop as a zombie and a stray transport."""
    try:
        return await asyncio.wait_for(proc.communicate(data), limit)
    except BaseException:
        await kill(proc, group=group)
        raise


async def kill(proc: asyncio.subprocess.Process, *, group: bool = False,
               within: float = REAP_WAIT) -> bool:
    """Kill ``proc`` (with ``group``, its whole process group, even if the leader is gone:
    the others may hold its pipes) and wait, at most ``within`` seconds, for it; whether
    it was reaped in time (a process that left the group can keep the pipe open)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        elif proc.returncode is None:
            proc.kill()
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), within)
    except TimeoutError:
        return False
    return True
