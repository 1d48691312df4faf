"""The VIP fence's licence write, with the data plane's nftables table small and big.

    sudo .venv/bin/python bench/fence.py [--services 2500] [--dests 16] [--json FILE]
        [--png docs/img/fence.png]

Re-runs itself in a fresh network namespace. For each size of the data plane's table
(empty, then ``services x dests`` real servers programmed by the nftables backend), times
one licence write of :class:`agent.vip.ArpFence` as the agent makes it (a raw nf_tables
netlink batch) and as it was made before (the same commands through libnftables), 30
writes each. Then, while the backend applies the big table from empty, a thread renews
the licence every 10 ms as the agent's renewals would: how long each renewal took, how many
were written or skipped, and how long the apply took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.dataplane.nft import NftBackend
from agent.dataplane.table import diff
from agent.vip import ArpFence, Vip
from agent.vip.fence import license_script
from bench.nft_reconcile import want_table

VIP = Vip("10.9.9.9", 24, "fb0")
WRITES = 30


def ms(xs: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(xs) * 1000, 3),
            "max_ms": round(max(xs) * 1000, 3), "n": len(xs)}


def writes(fence: ArpFence) -> dict[str, dict[str, float]]:
    """Licence writes through netlink (the agent's) and through libnftables (before)."""
    out = {}
    for how in ("netlink", "libnftables"):
        times = []
        for i in range(WRITES):
            until = time.monotonic() + 5 + i  # a longer licence each time: always written
            start = time.monotonic()
            if how == "netlink":
                fence._licence(frozenset([VIP]), until - start, "bench")
            else:
                fence._run(license_script([VIP], until - start), "bench")
            times.append(time.monotonic() - start)
        out[how] = ms(times)
    return out


def link() -> None:
    subprocess.run(["ip", "link", "add", "fb0", "type", "veth", "peer", "name", "fb1"],
                   check=True)
    subprocess.run(["ip", "link", "set", "fb0", "up"], check=True)


async def run(services: int, dests: int) -> dict[str, object]:
    link()
    fence = ArpFence()
    fence.guard([VIP])
    result: dict[str, object] = {"services": services, "dests": dests,
                                 "empty": writes(fence)}
    backend = NftBackend(compact_delay=None)
    want = want_table(services, dests)
    stop, renewals = threading.Event(), []

    def renew() -> None:
        while not stop.is_set():
            start = time.monotonic()
            fence.license([VIP], time.monotonic() + 2)
            renewals.append(time.monotonic() - start)
            time.sleep(0.01)

    before = (fence.writes, fence.deferred, fence.kept)
    thread = threading.Thread(target=renew)
    thread.start()
    start = time.monotonic()
    await backend.apply(diff({}, want))
    took = time.monotonic() - start
    stop.set()
    thread.join()
    result["during_apply"] = {"apply_s": round(took, 2), **ms(renewals),
                              "written": fence.writes - before[0],
                              "deferred": fence.deferred - before[1],
                              "kept": fence.kept - before[2]}
    result["big"] = writes(fence)
    fence.remove()
    backend.close()
    return result


def png(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels, values = [], []
    for table in ("empty", "big"):
        for how in ("netlink", "libnftables"):
            labels.append(f"{how}\n{'empty table' if table == 'empty' else 'big table'}")
            values.append(result[table][how]["median_ms"])
    ax.bar(labels, values, color=["tab:green", "tab:red"] * 2)
    ax.set_yscale("log")
    ax.set_ylabel("licence write, median (ms, log)")
    n = result["services"] * result["dests"]
    ax.set_title(f"VIP fence licence write; big table: {n:,} real servers")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:g}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=2500)
    ap.add_argument("--dests", type=int, default=16)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--png", type=Path)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.inside:
        ns = f"fencebench{os.getpid()}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            argv = [sys.executable, __file__, "--inside", "--services", str(args.services),
                    "--dests", str(args.dests)]
            proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                                  text=True, check=True)
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        result = json.loads(proc.stdout)
        print(json.dumps(result, indent=1))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        if args.png:
            png(result, args.png)
        return 0
    print(json.dumps(asyncio.run(run(args.services, args.dests))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
