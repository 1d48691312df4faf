"""Where an agent's memory goes at scale: the Python heap of each per-server structure.

    .venv/bin/python bench/memory.py [--virtuals 2500] [--per-virtual 16] [--routers 2]
        [--json FILE] [--png docs/img/memory.png]

Builds, in one process and in the order an active agent does, the structures it holds for
``virtuals x per-virtual`` real servers, and reports what each adds to the traced Python
heap (tracemalloc, after a collection): the config model, nanny's check specs and targets,
the view's stored verdicts and every router's observations (decoded documents, as
``ClusterState`` keeps them), the health core, the desired table, the reconciler's copy and
the nftables backend's model of the kernel. The process's resident size (which adds the
interpreter, libraries and allocator slack) is reported at the end. No etcd, no kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.big_config import big_cf  # noqa: E402

from agent.checks import targets  # noqa: E402
from agent.dataplane.desired import DesiredTables  # noqa: E402
from agent.dataplane.nft import plan as nft_plan  # noqa: E402
from agent.dataplane.nft import rules as nft_rules  # noqa: E402
from agent.dataplane.nft.read import MISSING  # noqa: E402
from agent.dataplane.reconcile import _own_copy  # noqa: E402
from agent.dataplane.table import diff  # noqa: E402
from agent.health.core import HealthCore  # noqa: E402
from agent.nanny import Engine  # noqa: E402
from cluster import lvscf  # noqa: E402
from cluster.documents import (  # noqa: E402
    ClusterState,
    HealthGroup,
    HealthVerdict,
    Observation,
    ObservationGroup,
)
from cluster.documents.health import group_of  # noqa: E402
from cluster.etcd.client import KV  # noqa: E402
from cluster.health import Health  # noqa: E402
from cluster.health_layout import Layout  # noqa: E402
from cluster.keys import Keys  # noqa: E402


def heap_mb() -> float:
    """The traced heap, or without tracing the resident size (tracemalloc's own records
    double the process)."""
    gc.collect()
    if tracemalloc.is_tracing():
        return tracemalloc.get_traced_memory()[0] / 2**20
    return rss_mb()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure(nv: int, per: int, routers: int) -> dict[str, float]:
    out: dict[str, float] = {}
    mark = heap_mb()

    def step(name: str) -> None:
        nonlocal mark
        now = heap_mb()
        out[name] = round(now - mark, 1)
        mark = now

    cfg = lvscf.parse(big_cf(nv, per)).config
    step("config model")
    wanted = targets(cfg)
    step("check specs")
    keys, state = Keys("bench"), ClusterState(Keys("bench"))
    layout = Layout.of(wanted)
    for i, ((virtual, shard), members) in enumerate(layout.members.items()):
        verdicts = {s: HealthVerdict.of(Health("up", since=1.7e9 + i, reason="ok",
                                               observed_by=("r1",)), 3) for s in members}
        k = keys.health_group(virtual, shard)
        state.apply(k, KV(k, group_of(verdicts, HealthGroup).encode().encode(), i + 1,
                          i + 1, 1, 0))
    step("view: stored verdicts")
    for r in range(routers):
        for i, ((virtual, shard), members) in enumerate(layout.members.items()):
            seen = {s: Observation.of(Health("up", since=1.7e9 + i, reason="ok"))
                    for s in members}
            k = keys.observation_group(f"r{r + 1}", virtual, shard)
            state.apply(k, KV(k, group_of(seen, ObservationGroup).encode().encode(), i + 1,
                              i + 1, 1, 7))
    state.take_touched()
    step(f"view: observations of {routers} routers")
    engine = Engine()
    async with engine:
        engine.set_targets({k: (c, s, None) for k, (c, s) in wanted.items()})
        step("nanny targets")
        core = HealthCore("r1")
        core.configure(engine.snapshot(), "active", state)
        core.activate(5, state)
        step("health core (active)")
        table = DesiredTables().table(cfg, dict(core.plane), {}, 0)
        step("desired table")
        want, _, _ = _own_copy(table, {}, {})
        step("reconciler's copy")
        kernel = MISSING
        for run in nft_plan.split(diff({}, want)):
            kernel = nft_plan.plan_apply(kernel, run, nft_rules.Config()).after
        step("nftables backend's kernel model")
        out["total"] = round(sum(v for k, v in out.items()), 1)
        out["process RSS"] = round(rss_mb(), 1)
        del kernel, want, table, core
    return out


def png(result: dict[str, float], servers: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = {k: v for k, v in result["traced"].items() if k not in ("total", "process RSS")}
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.barh(list(parts)[::-1], list(parts.values())[::-1], color="tab:blue")
    ax.set_xlabel("MB of Python heap per structure (tracemalloc)")
    ax.set_title(f"{servers:,} real servers: {result['traced']['total']:.0f} MB traced; "
                 f"process RSS untraced {result['resident']['process RSS']:.0f} MB",
                 fontsize=10)
    for i, v in enumerate(list(parts.values())[::-1]):
        ax.text(v, i, f" {v:g}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--virtuals", type=int, default=2500)
    ap.add_argument("--per-virtual", type=int, default=16)
    ap.add_argument("--routers", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--png", type=Path)
    ap.add_argument("--inside", choices=("traced", "resident"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        if args.inside == "traced":
            tracemalloc.start()
        print(json.dumps(asyncio.run(measure(args.virtuals, args.per_virtual, args.routers))))
        return 0
    result = {}
    for mode in ("traced", "resident"):  # each in a fresh process
        proc = subprocess.run([sys.executable, __file__, "--inside", mode, "--virtuals",
                               str(args.virtuals), "--per-virtual", str(args.per_virtual),
                               "--routers", str(args.routers)], capture_output=True,
                              text=True, check=True)
        result[mode] = json.loads(proc.stdout)
    servers = args.virtuals * args.per_virtual
    print(f"| structure ({servers:,} real servers) | Python heap, traced (MB) "
          "| resident size added, untraced (MB) |\n|---|---|---|")
    for name, value in result["traced"].items():
        print(f"| {name} | {value:g} | {result['resident'].get(name, 0):g} |")
    if args.json:
        args.json.write_text(json.dumps({"servers": servers, **result}, indent=1))
    if args.png:
        png(result, servers, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
