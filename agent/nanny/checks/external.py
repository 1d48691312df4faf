"""External check with a dynamic weight, as keepalived's MISC_CHECK with ``misc_dynamic``.

Exit 0: up with the configured weight; 1: down; 2..255: up with weight ``code - 2``.
Killed (by a signal or the timeout): down. Output is ignored.
"""

from __future__ import annotations

from agent.nanny.checks.proc import describe_exit, run
from agent.nanny.result import CheckResult, failed, passed
from agent.nanny.spec import CheckSpec


def judge_exit(code: int) -> CheckResult:
    """Verdict on an exit code (pure)."""
    if code == 0:
        return passed("exit 0")
    if 2 <= code <= 255:
        return passed(f"exit {code}: weight {code - 2}", weight=code - 2)
    return failed(describe_exit(code))


async def check_external(spec: CheckSpec) -> CheckResult:
    """Run the program and map its exit code (no deadline of its own)."""
    return judge_exit((await run(spec.expand(spec.argv), capture=False)).code)
