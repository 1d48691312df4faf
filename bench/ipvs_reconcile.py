"""How fast does IpvsBackend load and change IPVS, next to ipvsadm? (Needs a kernel with IPVS.)

Run inside the QEMU guest:
    .venv/bin/python scripts/ipvs_vm.py -- .venv/bin/python bench/ipvs_reconcile.py

Everything happens in a private network namespace (its own IPVS table). Measures, median
of --repeat runs: loading SERVICES x DESTS from empty through read+diff+apply vs
``ipvsadm-restore`` of the same table (and plain ``ipvsadm -R``); reading it back; a no-op
reconcile; one weight change through apply() vs one ``ipvsadm -e`` process.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.dataplane import ipvs
from agent.dataplane.table import (
    DestKey,
    DestSpec,
    EditDest,
    Service,
    ServiceKey,
    ServiceSpec,
    diff,
)

PREFIX = "pe-bench-"


def table(services: int, dests: int) -> dict[ServiceKey, Service]:
    return {
        ServiceKey("tcp", f"10.{i // 250}.{i % 250}.1", 80): Service(
            ServiceSpec("wrr"),
            {DestKey(f"10.200.{j}.{i % 250}", 80): DestSpec(1, "masq") for j in range(dests)},
        )
        for i in range(services)
    }


def restore_text(want: dict[ServiceKey, Service]) -> str:
    lines = []
    for key, svc in want.items():
        lines.append(f"-A -t {key.address}:{key.port} -s {svc.spec.scheduler}")
        lines += [
            f"-a -t {key.address}:{key.port} -r {d.address}:{d.port} -m -w {s.weight}"
            for d, s in svc.dests.items()
        ]
    return "\n".join(lines) + "\n"


def enter_private_netns() -> str:
    """Create a namespace with lo up and move this whole process (and children) into it."""
    for old in Path("/run/netns").glob(f"{PREFIX}*"):
        if not Path(f"/proc/{old.name[len(PREFIX):]}").exists():
            subprocess.run(["ip", "netns", "del", old.name], check=False)
    name = f"{PREFIX}{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
        sys.exit(f"setns: {os.strerror(ctypes.get_errno())}")
    os.close(fd)
    return name


def sh(command: str, stdin: str | None = None) -> None:
    subprocess.run(command, shell=True, input=stdin, text=True, check=True,
                   stdout=subprocess.DEVNULL)


async def timed(fn: Callable[[], Awaitable[object]] | Callable[[], object]) -> float:
    start = time.perf_counter()
    result = fn()
    if asyncio.iscoroutine(result):
        await result
    return time.perf_counter() - start


async def run(args: argparse.Namespace) -> dict[str, float]:
    want = table(args.services, args.dests)
    text = restore_text(want)
    backend = ipvs.IpvsBackend()
    results: dict[str, list[float]] = {k: [] for k in (
        "backend_load", "backend_apply_only", "ipvsadm_restore", "ipvsadm_R", "backend_read",
        "noop_reconcile", "backend_weight", "ipvsadm_weight",
    )}

    async def reconcile() -> None:
        await backend.apply(diff(await backend.read(), want))

    try:
        for _ in range(args.repeat):
            await backend.flush()
            results["backend_load"].append(await timed(reconcile))
            assert await backend.read() == want
            results["backend_read"].append(await timed(backend.read))
            results["noop_reconcile"].append(await timed(reconcile))
            await backend.flush()
            ops = diff({}, want)
            results["backend_apply_only"].append(await timed(lambda o=ops: backend.apply(o)))
            await backend.flush()
            results["ipvsadm_restore"].append(await timed(lambda: sh("ipvsadm-restore", text)))
            assert await backend.read() == want, "ipvsadm-restore loaded something else"
            await backend.flush()
            results["ipvsadm_R"].append(await timed(lambda: sh("ipvsadm -R", text)))
        first = next(iter(want))
        rs = next(iter(want[first].dests))
        target = f"-t {first.address}:{first.port} -r {rs.address}:{rs.port} -m"
        for n in range(args.changes):
            op = EditDest(first, rs, DestSpec(2 + n % 50, "masq"))
            results["backend_weight"].append(await timed(lambda o=op: backend.apply([o])))
            cmd = f"ipvsadm -e {target} -w {3 + n % 50}"
            results["ipvsadm_weight"].append(await timed(lambda c=cmd: sh(c)))
    finally:
        await backend.flush()
        backend.close()
    return {k: statistics.median(v) for k, v in results.items()}


def report(m: dict[str, float], args: argparse.Namespace) -> None:
    size = f"{args.services} services x {args.dests} real servers"
    rows = [
        (f"load {size}: read+diff+apply", m["backend_load"]),
        ("  of which apply() alone", m["backend_apply_only"]),
        ("  ipvsadm-restore (bash wrapper, -C, -R)", m["ipvsadm_restore"]),
        ("  ipvsadm -R", m["ipvsadm_R"]),
        ("read() of the whole table", m["backend_read"]),
        ("no-op reconcile (read+diff)", m["noop_reconcile"]),
        ("one weight change via apply()", m["backend_weight"]),
        ("one weight change via ipvsadm -e", m["ipvsadm_weight"]),
    ]
    for label, seconds in rows:
        print(f"{label:48s} {seconds * 1000:10.1f} ms")
    ratios = {
        "ipvsadm_restore/backend_load": m["ipvsadm_restore"] / m["backend_load"],
        "ipvsadm_R/backend_apply_only": m["ipvsadm_R"] / m["backend_apply_only"],
        "ipvsadm_e/backend_weight": m["ipvsadm_weight"] / m["backend_weight"],
    }
    for name, value in ratios.items():
        print(f"ratio {name:40s} {value:8.2f}x")
    out = os.environ.get("PIRANHA_VM_OUT")
    if out:
        Path(out, "bench-ipvs.json").write_text(json.dumps({**m, **ratios}, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--dests", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--changes", type=int, default=20, help="single weight changes")
    args = parser.parse_args()
    if not ipvs.available():
        print("this kernel has no IPVS: run it through scripts/ipvs_vm.py", file=sys.stderr)
        return 2
    name = enter_private_netns()
    try:
        report(asyncio.run(run(args)), args)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
