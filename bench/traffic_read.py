"""The nftables traffic counters of N real servers: dumped over raw netlink against listed
by libnftables, each in a fresh child process as the agent reads them (root).

    .venv/bin/python bench/traffic_read.py [--servers 40000,100000] [--runs 3] [--json FILE]

In a namespace of its own: the four IPv4 traffic sets (tv4 and ti4, to4, tn4: three
elements per virtual of 16 servers and three per real server) with counter values, then
for each size ``python -m``-style children running ``traffic.dumped`` and
``traffic.listed``: wall time and the child's peak resident size. The agent's scrape
reads them the first way (``agent.dataplane.nft.traffic`` main), the second is what it did
before (and still does where netlink fails).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import resource, sys, time
sys.path.insert(0, {repo!r})
from agent.dataplane.nft import traffic
start = time.perf_counter()
raw = getattr(traffic, {how!r})("lvs", list(traffic.SETS))
took = time.perf_counter() - start
print(len(raw), took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def sets_text(servers: int, per: int = 16) -> str:
    """The traffic sets of ``servers`` real servers in virtuals of ``per``."""
    tv, rs = [], []
    for n in range(servers):
        v, vip = n // per, f"10.200.{n // per // 250}.{n // per % 250 + 1}"
        if n % per == 0:
            tv += [f"{vip} . tcp . {1000 + v % 60000} . {d} . {s} counter packets {v} bytes {v}"
                   for d, s in (("original", "new"), ("original", "established"),
                                ("reply", "established"))]
        rs.append(f"{vip} . tcp . {1000 + v % 60000} . 10.{n // 65536 + 1}.{n // 256 % 256}."
                  f"{n % 256} . 8080 counter packets {n} bytes {n * 10}")
    five = "ipv4_addr . inet_proto . inet_service . ipv4_addr . inet_service"
    out = ["table inet lvs {", " set tv4 { type ipv4_addr . inet_proto . inet_service . "
           f"ct_dir . ct_state; counter; elements = {{ {', '.join(tv)} }}\n }}"]
    for name in ("ti4", "to4", "tn4"):
        out.append(f" set {name} {{ type {five}; counter; elements = {{ {', '.join(rs)} }}\n }}")
    return "\n".join(out) + "\n}\n"


def measure(ns: str, how: str) -> tuple[int, float, float]:
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                           CHILD.format(repo=str(REPO), how=how)],
                          capture_output=True, text=True, check=True)
    count, took, rss = proc.stdout.split()
    return int(count), float(took), float(rss)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default="40000,100000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = []
    print("| real servers | set elements | dumped (netlink) | listed (libnftables) "
          "| peak RSS dumped / listed |\n|---|---|---|---|---|")
    for servers in (int(s) for s in args.servers.split(",")):
        ns = f"trb-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                           input=sets_text(servers), text=True, check=True)
            runs: dict[str, list[tuple[int, float, float]]] = {"dumped": [], "listed": []}
            for _ in range(args.runs):
                for how in runs:  # alternated
                    runs[how].append(measure(ns, how))
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        counts = {how: {r[0] for r in rs} for how, rs in runs.items()}
        assert counts["dumped"] == counts["listed"], counts
        row = {"servers": servers, "elements": next(iter(counts["dumped"])),
               **{f"{how}_s": [round(r[1], 2) for r in rs] for how, rs in runs.items()},
               **{f"{how}_mb": round(max(r[2] for r in rs)) for how, rs in runs.items()}}
        results.append(row)
        med = {how: statistics.median(row[f"{how}_s"]) for how in runs}
        print(f"| {servers:,} | {row['elements']:,} | {med['dumped']:.2f} s "
              f"({', '.join(map(str, row['dumped_s']))}) | {med['listed']:.2f} s "
              f"({', '.join(map(str, row['listed_s']))}) | {row['dumped_mb']} / "
              f"{row['listed_mb']} MB |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
