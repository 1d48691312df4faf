"""Detection to data plane, in the lab: a real server dies and comes back N times.

    sudo .venv/bin/python bench/detection.py [--events 40]

For every health transition the agents log how long after the failed (or the deciding)
check it took for (a) the active's kernel tables to be updated and (b) the new effective
health to be visible in etcd on each router. This prints p50/p90/max of (a) and of (b) on
every router (the slowest router of each event). Targets: (a) p50 <= 20 ms, (b) <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

from cluster import lvscf
from lvslab import Lab
from lvslab.config_file import lab_lvs_cf
from lvslab.topology import Topology

LVSCTL = str(Path(sys.executable).parent / "lvsctl")
APPLIED = re.compile(r"data plane: \d+ change\(s\) applied ([\d.]+) ms after detection")
SEEN = re.compile(r"^(\S+ \S+) \S+ INFO agent.view: health (\S+) (\w+) visible here "
                  r"([\d.]+) ms after detection")


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    if len(data) == 1:
        return data[0]
    return statistics.quantiles(data, n=100, method="inclusive")[int(q * 100) - 1]


def state(lab: Lab, server: str) -> str:
    out = lab.exec("client", LVSCTL, "--etcd", lab.etcd_url, "status", "-o", "json").stdout
    servers = json.loads(out)["virtuals"][0]["servers"]
    return next(s["state"] for s in servers if s["name"] == server)


def wait(lab: Lab, server: str, want: str, limit: float = 20) -> None:
    start = time.monotonic()
    while state(lab, server) != want:
        if time.monotonic() - start > limit:
            raise SystemExit(f"{server} not {want} after {limit}s")
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=40, help="health transitions to cause")
    args = ap.parse_args()
    topo = Topology("bdet", "10.95.0.0/24", "10.95.1.0/24", routers=3, servers=2)
    cfg = lvscf.parse(lab_lvs_cf(topo), "lab.cf").config
    assert cfg is not None
    v = cfg.virtuals[0].model_copy(update={"timeout": 0.5, "reentry": 0.5})
    path = Path("/tmp/bench-detection.cf")
    path.write_text(lvscf.write(cfg.model_copy(update={"virtuals": (v,)})))
    with Lab(topo.prefix, topo.public, topo.private, routers=3, servers=2,
             config=path) as lab:
        wait(lab, "rs1", "up")
        for i in range(args.events):
            if i % 2 == 0:
                lab.kill("rs1")
                wait(lab, "rs1", "down")
            else:
                lab.start("rs1")
                wait(lab, "rs1", "up")
            time.sleep(0.3)
        applied: list[float] = []
        seen: dict[str, list[float]] = {}
        for router in lab.routers:
            for line in lab.log_path(router).read_text().splitlines():
                if m := APPLIED.search(line):
                    applied.append(float(m.group(1)))
                if m := SEEN.search(line):
                    seen.setdefault(f"{m.group(2)} {m.group(3)} {line[:19]}", []).append(
                        float(m.group(4)))
    # Events are grouped by key, state and second of the log time: one per transition.
    every = [max(v) for v in seen.values() if len(v) == topo.routers]
    print(f"transitions caused: {args.events}")
    for name, data, target in (("failed check -> kernel (active)", applied, 20),
                               ("failed check -> etcd on every router", every, 50)):
        if not data:
            print(f"{name}: no samples")
            continue
        print(f"{name}: n={len(data)} p50={pct(data, 0.5):.1f} ms p90={pct(data, 0.9):.1f} "
              f"ms max={max(data):.1f} ms (target p50 <= {target} ms)")


if __name__ == "__main__":
    main()
