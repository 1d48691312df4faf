"""The failover benchmark's client: an HTTP GET to VIP:80 every 10 ms, one JSON line each.

Runs inside the lab's client namespace (``ip netns exec <prefix>-client python THIS ...``)
until SIGTERM. Probes are started on a fixed 10 ms grid whatever the previous ones do,
so a dead VIP (connects that hang until the timeout) does not slow the cadence down.
Each line: ``{"t": <monotonic start>, "ok": true|false, "ms": <duration>}``; the
monotonic clock is shared by every namespace, so the orchestrator compares ``t`` with
its own fault times.

    python bench/failover_probe.py --host 10.90.0.100 --out probes.jsonl

The pure part, :func:`outage`, turns the probe records of one trial into its service gap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

REQUEST = b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n"


@dataclass(frozen=True)
class Probe:
    t: float  # monotonic start
    ok: bool


@dataclass(frozen=True)
class Outage:
    """The longest run of failed probes after a fault, framed by successes."""

    gap: float | None  # first success after the run - last success before it (None: no recovery)
    failed: int  # failed probes in that run
    failed_total: int  # failed probes after the fault, in any run
    start: float | None  # start of the last success before the run
    end: float | None  # start of the first success after the run


def outage(probes: Sequence[Probe], t_fault: float) -> Outage:
    """The service gap of one trial (pure).

    Probes are ordered by start time; a run is a maximal sequence of failures, and only
    runs holding a probe started at or after ``t_fault`` count. The gap of a run is the
    start of the first successful probe after it minus the start of the last successful
    one before it (resolution: the probe interval). No failure after the fault: gap 0.
    """
    ordered = sorted(probes, key=lambda p: p.t)
    best: Outage = Outage(0.0, 0, 0, None, None)
    total = sum(1 for p in ordered if not p.ok and p.t >= t_fault)
    last_ok: float | None = None
    run_start = -1
    for i, p in enumerate([*ordered, Probe(float("inf"), True)]):
        if not p.ok:
            if run_start < 0:
                run_start = i
            continue
        if run_start >= 0:
            run = ordered[run_start:i]
            if run[-1].t >= t_fault and last_ok is not None:
                end = None if p.t == float("inf") else p.t
                gap = None if end is None else end - last_ok
                cand = Outage(gap, len(run), total, last_ok, end)
                if _longer(cand, best):
                    best = cand
            run_start = -1
        if p.t != float("inf"):
            last_ok = p.t
    return Outage(best.gap, best.failed, total, best.start, best.end)


def _longer(a: Outage, b: Outage) -> bool:
    if a.gap is None:
        return b.gap is not None or a.failed > b.failed
    return b.gap is not None and a.gap > b.gap


def read_probes(lines: Sequence[str]) -> list[Probe]:
    """Probe records from JSON lines; broken lines (a torn last write) are skipped."""
    out = []
    for line in lines:
        try:
            doc = json.loads(line)
            out.append(Probe(float(doc["t"]), bool(doc["ok"])))
        except (ValueError, KeyError, TypeError):
            continue
    return out


# ---------------------------------------------------------------- the prober (shell)


async def probe_once(host: str, port: int, timeout: float) -> bool:
    """One TCP connection and HTTP GET; True on a 200 status line within ``timeout``."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n")
            return head.split(b" ", 2)[1:2] == [b"200"]
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return False
    finally:
        if writer is not None:
            writer.transport.abort()


async def run(host: str, port: int, interval: float, timeout: float, out: TextIO) -> None:
    """Probe until SIGTERM/SIGINT, writing a JSON line per probe to ``out``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lines: list[str] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(t0: float) -> None:
        ok = await probe_once(host, port, timeout)
        ms = (time.monotonic() - t0) * 1000
        lines.append(json.dumps({"t": round(t0, 6), "ok": ok, "ms": round(ms, 2)}))

    out.write(json.dumps({"start": time.monotonic(), "interval": interval,
                          "timeout": timeout}) + "\n")
    tick = time.monotonic()
    last_flush = tick
    while not stop.is_set():
        now = time.monotonic()
        task = asyncio.create_task(one(now))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if now - last_flush >= 0.1 and lines:
            out.write("\n".join(lines) + "\n")
            lines.clear()
            last_flush = now
        tick += interval
        if tick < now:  # we fell behind (a busy machine): skip ticks, never burst
            tick = now + interval
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, tick - time.monotonic()))
        except TimeoutError:
            pass
    if pending:
        await asyncio.wait(pending, timeout=timeout + 0.5)
    if lines:
        out.write("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--timeout", type=float, default=0.1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    with open(args.out, "a", buffering=1) as out:
        asyncio.run(run(args.host, args.port, args.interval, args.timeout, out))


if __name__ == "__main__":
    main()
