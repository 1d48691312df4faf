"""Load monitor: a program prints a load average; the weight shrinks as the load grows.

Rule (kept simple on purpose): with load ``L`` and ``load_full`` ``F`` (the load at which a
server counts as fully busy, e.g. its number of CPUs), the weight is the configured one while
``L <= F``, else ``round(weight * F / L)``, never below 1 (unless the weight is 0). Load
2F halves the weight, 4F quarters it. The figure read is the first number after
``load average:`` (``uptime``'s output, so ``ssh %h uptime`` works), else the first number.
A program that fails or prints no number leaves the weight as it was.
"""

from __future__ import annotations

import asyncio
import logging
import re

from agent.nanny.checks.proc import run
from agent.nanny.spec import CheckSpec

log = logging.getLogger("agent.nanny")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def parse_load(text: str) -> float | None:
    """First load figure of ``text`` (pure)."""
    _, sep, rest = text.partition("load average")
    match = _NUMBER.search(rest if sep else text)
    return float(match.group().replace(",", ".")) if match else None


def scale_weight(weight: int, load: float, full: float = 1.0) -> int:
    """Weight for a server at ``load`` (pure; see the module doc)."""
    if load <= full or weight == 0:
        return weight
    return max(1, round(weight * full / load))


async def read_load(spec: CheckSpec) -> float | None:
    """Run ``spec.load_monitor`` within ``spec.timeout``; None if no load figure came out."""
    if spec.load_monitor is None:
        return None
    argv = spec.expand(spec.load_monitor)
    try:
        async with asyncio.timeout(spec.timeout):
            ran = await run(argv)
    except (OSError, TimeoutError) as exc:
        log.warning("nanny: load monitor %s failed: %s", argv[0], exc or "timeout")
        return None
    load = parse_load(ran.output.decode("utf-8", "replace"))
    if load is None:
        log.warning("nanny: load monitor %s printed no load figure", argv[0])
    return load
