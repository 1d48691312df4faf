"""One health change at scale: the desired table rebuilt in full, against DesiredTables
(per changed virtual), plus the reconciler's diff, side by side in one process; and what a
new active spends deciding every server from the stored verdicts. Pure CPU.

    .venv/bin/python bench/desired.py [--sizes 10000,40000,100000] [--per-virtual 16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from agent.dataplane.desired import DesiredTables, desired_table  # noqa: E402
from agent.dataplane.table import diff  # noqa: E402
from agent.health.core import HealthCore  # noqa: E402
from cluster import lvscf  # noqa: E402
from cluster.documents import ClusterState, HealthVerdict  # noqa: E402
from cluster.health import Health, ServerKey  # noqa: E402
from cluster.keys import Keys  # noqa: E402
from tests.support.big_config import big_cf  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,40000,100000")
    ap.add_argument("--per-virtual", type=int, default=16)
    ap.add_argument("--changes", type=int, default=20)
    args = ap.parse_args()
    print("| real servers | full rebuild + diff (median) | per changed virtual + diff (median) "
          "| ratio |")
    print("|---|---|---|---|")
    takeovers: list[tuple[int, float]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        cfg = lvscf.parse(big_cf(size // args.per_virtual, args.per_virtual), "b.cf").config
        assert cfg is not None
        keys = [ServerKey(v.name, s.name) for v in cfg.virtuals for s in v.servers]
        health = {k: Health("up") for k in keys}
        tables = DesiredTables()
        prev_full = desired_table(cfg, health, {})
        prev_inc = tables.table(cfg, health, {})
        full, inc = [], []
        for i in range(args.changes):
            health[keys[(i * 7919) % len(keys)]] = Health("down" if i % 2 else "up")
            t0 = time.perf_counter()
            now = desired_table(cfg, health, {})
            diff(prev_full, now)
            full.append(time.perf_counter() - t0)
            prev_full = now
            t0 = time.perf_counter()
            now = tables.table(cfg, health, {})
            diff(prev_inc, now)
            inc.append(time.perf_counter() - t0)
            prev_inc = now
        f, n = statistics.median(full), statistics.median(inc)
        print(f"| {size:,} | {f * 1000:.0f} ms | {n * 1000:.1f} ms | {f / n:.0f}x |", flush=True)
        takeovers.append((size, takeover(keys)))
    print("\n| real servers | a new active decides every server (HealthCore.activate) |")
    print("|---|---|")
    for size, took in takeovers:
        print(f"| {size:,} | {took * 1000:.0f} ms |")


def takeover(keys: list[ServerKey]) -> float:
    """Seconds HealthCore.activate takes over ``keys``, all up as stored (a backup that
    followed them becomes the active)."""
    state = ClusterState(Keys("bench"))
    for k in keys:
        state.health[k] = HealthVerdict.of(Health("up", observed_by=("r1",)), 5)
    state.registered = {"r1", "r2"}
    core = HealthCore("r2")
    core.configure({k: Health("up") for k in keys}, "active", state)
    core.etcd_changed(state, None)
    core.take_writes(state)
    t0 = time.perf_counter()
    core.activate(7, state)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
