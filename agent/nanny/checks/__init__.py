"""The check kinds, and how to run one: as a coroutine, or started with a completion callback.

:func:`run_check` and :func:`start_check` never raise because of the server: timeouts,
resets, refusals and bad answers all become a failed :class:`CheckResult`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from agent.nanny.checks.common import guarded
from agent.nanny.checks.dns import check_dns
from agent.nanny.checks.external import check_external
from agent.nanny.checks.http import check_http
from agent.nanny.checks.program import check_program
from agent.nanny.checks.send_expect import check_send_expect
from agent.nanny.checks.tcp import Done, check_tcp, start_tcp
from agent.nanny.checks.udp import check_udp
from agent.nanny.result import CheckResult, passed
from agent.nanny.spec import CheckSpec

NONE_REASON = "not checked"  # the result of a "none" check (always a success)


async def _check_none(spec: CheckSpec) -> CheckResult:
    return passed(NONE_REASON)


_BODIES: dict[str, Callable[[CheckSpec], Awaitable[CheckResult]]] = {
    "send_expect": check_send_expect,
    "http": check_http,
    "https": check_http,
    "udp": check_udp,
    "dns": check_dns,
    "program": check_program,
    "external": check_external,
    "none": _check_none,
}


class Running(Protocol):
    """A check under way; ``cancel()`` abandons it (its callback will not be called)."""

    def cancel(self) -> object: ...


async def run_check(spec: CheckSpec) -> CheckResult:
    """Run one check of ``spec`` and return its result (never raises)."""
    if spec.kind == "tcp":
        return await check_tcp(spec)
    return await guarded(spec, _BODIES[spec.kind])


def start_check(spec: CheckSpec, done: Done) -> Running | None:
    """Start one check; ``done(result)`` is called once, maybe before this returns (then None).

    TCP connect checks run on callbacks (no task); the other kinds run as an asyncio task,
    which is what is returned (the engine awaits it on stop).
    """
    if spec.kind == "tcp":
        return start_tcp(spec, done)
    task = asyncio.get_running_loop().create_task(guarded(spec, _BODIES[spec.kind]))
    task.add_done_callback(lambda t: None if t.cancelled() else done(t.result()))
    return task


__all__ = ["NONE_REASON", "Running", "run_check", "start_check"]
