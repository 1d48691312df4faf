"""Piranha's ``send_program`` check: run a program, match its standard output with ``expect``.

As in nanny the exit code does not matter when there is an ``expect``; without one, the
program passes by exiting 0. ``%h``/``%p`` in the arguments become the host and port.
"""

from __future__ import annotations

from agent.nanny.checks.proc import Ran, describe_exit, run
from agent.nanny.result import CheckResult, failed, passed
from agent.nanny.spec import CheckSpec


def judge_output(spec: CheckSpec, ran: Ran) -> CheckResult:
    """Verdict on a finished program (pure)."""
    if spec.matcher is None:
        return passed("exit 0") if ran.code == 0 else failed(describe_exit(ran.code))
    if spec.matcher.judge(ran.output, eof=True):
        return passed("expect matched")
    return failed(f"expect not matched: got {ran.output[:40]!r} ({describe_exit(ran.code)})")


async def check_program(spec: CheckSpec) -> CheckResult:
    """Run the program and judge its output (no deadline of its own)."""
    return judge_output(spec, await run(spec.expand(spec.argv)))
