"""UDP check: send the payload (a newline if none), the first reply must match.

A reply passes if it matches ``expect`` (any reply when there is no ``expect``). An ICMP
port unreachable fails at once; silence fails at the timeout, as in Piranha.
"""

from __future__ import annotations

from agent.nanny.checks.datagram import exchange
from agent.nanny.result import CheckResult, failed, passed
from agent.nanny.spec import CheckSpec


def judge_reply(spec: CheckSpec, data: bytes) -> CheckResult:
    """Verdict on the first datagram that came back (pure)."""
    if spec.matcher is None:
        return passed("reply received")
    if spec.matcher.judge(data, eof=True):
        return passed("expect matched")
    return failed(f"expect not matched: got {data[:40]!r}")


async def check_udp(spec: CheckSpec) -> CheckResult:
    """Send ``spec.send`` and judge the first reply (no deadline of its own)."""
    return await exchange(spec, spec.send or b"\n", lambda data: judge_reply(spec, data))
