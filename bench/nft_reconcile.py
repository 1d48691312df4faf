"""Benchmark of the nftables backend against its targets, in a namespace of its own (root).

    .venv/bin/python bench/nft_reconcile.py [--services 1000] [--dests 10] [--json FILE]
                                            [--via-nsenter]

By default the benchmark re-runs itself inside a fresh namespace, as an agent runs in its
own (netns=None); ``--via-nsenter`` drives the namespace from outside instead (each nft
run then goes through nsenter, about 1-2 ms more).

Targets: 1,000 services x 10 real servers from empty <= 2 s; one weight change <= 20 ms;
a no-op read + diff <= 200 ms. Also measured: a cold read (full listing), compaction, and
a repair after ``nft flush ruleset``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.dataplane.nft import NftBackend, elements
from agent.dataplane.nft import plan as nft_plan
from agent.dataplane.nft.read import MISSING
from agent.dataplane.table import (
    AddDest,
    DelDest,
    DestKey,
    DestSpec,
    EditDest,
    Service,
    ServiceKey,
    ServiceSpec,
    diff,
)

PREFIX = "nftbench"


def want_table(services: int, dests: int) -> dict[ServiceKey, Service]:
    table = {}
    for i in range(services):
        key = ServiceKey("tcp", f"10.{i // 250}.{i % 250}.1", 80)
        servers = {
            DestKey(f"10.{100 + i // 250}.{i % 250}.{j + 1}", 8080): DestSpec(weight=1 + j % 3)
            for j in range(dests)
        }
        table[key] = Service(ServiceSpec("wrr"), servers)
    return table


def fresh_netns() -> str:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in listing.split():
        match = re.match(rf"{PREFIX}(\d+)$", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            subprocess.run(["ip", "netns", "del", name], check=False)
    name = f"{PREFIX}{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    return name


async def timed(coro) -> float:
    start = time.perf_counter()
    await coro
    return time.perf_counter() - start


async def bench(ns: str | None, services: int, dests: int) -> dict[str, float | int]:
    results: dict[str, float | int] = {}
    want = want_table(services, dests)
    backend = NftBackend(netns=ns, compact_delay=None)
    first = nft_plan.plan_apply(MISSING, diff({}, want), backend.cfg).commands
    results["from_empty_commands"] = len(first)
    # In-process, the set elements go as raw netlink batches (elements.py), not as JSON.
    rest, raw = elements.split(backend.cfg.table, first) if backend.uses_libnftables() \
        else (first, [])
    results["from_empty_json_bytes"] = len(json.dumps({"nftables": rest}))
    results["from_empty_raw_elements"] = sum(len(c.get("add", c.get("delete", {}))
                                                 .get("element", {}).get("elem", []))
                                             for c in raw)

    async def full() -> None:
        await backend.apply(diff(await backend.read(), want))

    results["from_empty_s"] = await timed(full())

    cold = NftBackend(netns=ns, compact_delay=None)
    results["cold_read_s"] = await timed(cold.read())
    cold.close()

    async def noop() -> None:
        assert diff(await backend.read(), want) == []

    results["noop_read_diff_s"] = statistics.median([await timed(noop()) for _ in range(5)])

    keys = sorted(want)
    samples = []
    for n in range(20):
        key = keys[(n * 37) % len(keys)]
        dkey = sorted(want[key].dests)[0]
        spec = DestSpec(weight=want[key].dests[dkey].weight + 1 + n)
        want[key] = Service(want[key].spec, {**want[key].dests, dkey: spec})
        samples.append(await timed(backend.apply([EditDest(key, dkey, spec)])))
    results["weight_change_median_s"] = statistics.median(samples)
    results["weight_change_max_s"] = max(samples)
    # A real server going (down, no quiesce) and coming back: its guard and traffic set
    # elements change too.
    samples = []
    for n in range(10):
        key = keys[(n * 53) % len(keys)]
        dkey = sorted(want[key].dests)[-1]
        spec = want[key].dests[dkey]
        samples.append(await timed(backend.apply([DelDest(key, dkey)])))
        samples.append(await timed(backend.apply([AddDest(key, dkey, spec)])))
    results["dest_remove_or_add_median_s"] = statistics.median(samples)
    results["dest_remove_or_add_max_s"] = max(samples)
    results["compaction_s"] = await timed(backend.compact())

    reread = NftBackend(netns=ns, compact_delay=None)
    assert diff(await reread.read(), want) == [], "kernel differs from what was applied"
    reread.close()

    flush = ([] if ns is None else ["ip", "netns", "exec", ns]) + ["nft", "flush", "ruleset"]
    await asyncio.to_thread(subprocess.run, flush, check=True)
    results["repair_after_flush_s"] = await timed(full())
    assert diff(await backend.read(), want) == []
    backend.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--dests", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--via-nsenter",
        action="store_true",
        help="drive the namespace from outside (netns=...) instead of running inside it",
    )
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, nftables)")
    if args.inside:  # already in the namespace, like an agent in its own: netns=None
        report(asyncio.run(bench(None, args.services, args.dests)), args)
        return
    ns = fresh_netns()
    try:
        if args.via_nsenter:
            report(asyncio.run(bench(ns, args.services, args.dests)), args)
        else:
            argv = [a for a in sys.argv[1:] if a != "--via-nsenter"]
            inner = ["ip", "netns", "exec", ns, sys.executable, __file__, "--inside", *argv]
            sys.exit(subprocess.run(inner, check=False).returncode)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def report(results: dict[str, float | int], args: argparse.Namespace) -> None:
    targets = {"from_empty_s": 2.0, "weight_change_median_s": 0.020, "noop_read_diff_s": 0.200}
    print(f"nftables backend, {args.services} services x {args.dests} real servers")
    for name, value in results.items():
        if not name.endswith("_s"):
            print(f"  {name:26s} {value:9d}")
            continue
        target = targets.get(name)
        verdict = "" if target is None else ("  ok" if value <= target else "  OVER TARGET")
        limit = "" if target is None else f" (target {target * 1000:.0f} ms)"
        print(f"  {name:26s} {value * 1000:9.1f} ms{limit}{verdict}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
