"""DNS check: one query over UDP built by hand; the answer's id, rcode (and answers) count.

Datagrams with another id are ignored (late answers to earlier checks). A truncated answer
still counts: its header tells whether the server works.
"""

from __future__ import annotations

import random

from agent.nanny import dnswire
from agent.nanny.checks.datagram import exchange
from agent.nanny.result import CheckResult, failed, passed
from agent.nanny.spec import CheckSpec

_ids = random.SystemRandom()


def judge_answer(spec: CheckSpec, qid: int, data: bytes) -> CheckResult | None:
    """Verdict on a datagram, or None if it is not the answer to query ``qid`` (pure)."""
    header = dnswire.parse_header(data)
    if header is None or header.qid != qid or not header.is_response:
        return None
    got = dnswire.rcode_name(header.rcode)
    if header.rcode != spec.rcode:
        return failed(f"rcode {got}, expected {dnswire.rcode_name(spec.rcode)}")
    if spec.dns_need_answer and header.answers == 0:
        return failed(f"rcode {got} but no answer")
    return passed(f"rcode {got}, {header.answers} answer(s)")


async def check_dns(spec: CheckSpec) -> CheckResult:
    """Ask ``dns_name``/``dns_type`` and judge the answer (no deadline of its own)."""
    qid = _ids.randrange(65536)
    query = dnswire.build_query(qid, spec.dns_name, spec.qtype)
    return await exchange(spec, query, lambda data: judge_answer(spec, qid, data))
