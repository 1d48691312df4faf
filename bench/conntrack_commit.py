"""conntrackd: external cache + commit against direct injection, for N synced connections.

    .venv/bin/python bench/conntrack_commit.py [--sizes 1000,10000,100000] [--json FILE]
        [--png docs/img/conntrack-commit.png] [--from FILE]   # --from: plot a saved --json

Two network namespaces joined by a veth (the sync link), conntrackd in each with the config
the agent generates (agent/conntrack/config.py, FTFW over UDP), as a two-router cluster.
For each N and each mode:

* N established TCP connections, DNATed VIP -> real server as the nftables data plane does,
  are created in the active's kernel at once (``conntrack -R``, one netlink batch);
* external cache (the agent's mode): the backup holds them in conntrackd's memory; we time
  the sync (until its external cache holds N) and the takeover's ``conntrackd -c`` (the
  commit into the backup's kernel: the part of a failover that delays the VIP);
* direct injection (``DisableExternalCache yes``): the backup's conntrackd writes each
  state into its kernel as it arrives; we time the sync (until the backup's kernel holds
  N) and there is nothing to commit at takeover.

Also reported: the backup conntrackd's CPU time over the sync (and the commit), and the
kernel entries the backup holds while it is a backup.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.conntrack.config import render, settings
from cluster.model import LvsConfig

VIP, RS = "10.201.0.100", "10.200.250.21"
ADDR = {"a": "10.99.0.1", "b": "10.99.0.2"}
TICK = os.sysconf("SC_CLK_TCK")


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=check).stdout


def ns(side: str) -> str:
    return f"ctb{os.getpid()}{side}"


def build() -> None:
    for side in "ab":
        sh("ip", "netns", "add", ns(side))
        sh("ip", "-n", ns(side), "link", "set", "lo", "up")
    sh("ip", "link", "add", "ctb0", "netns", ns("a"), "type", "veth", "peer", "name", "ctb1",
       "netns", ns("b"))
    for side, dev in (("a", "ctb0"), ("b", "ctb1")):
        sh("ip", "-n", ns(side), "addr", "add", f"{ADDR[side]}/24", "dev", dev)
        sh("ip", "-n", ns(side), "link", "set", dev, "up")


def teardown() -> None:
    for side in "ab":
        for pid in sh("ip", "netns", "pids", ns(side), check=False).split():
            os.kill(int(pid), 9)
        sh("ip", "netns", "del", ns(side), check=False)


def conf(side: str, state: Path, external: bool) -> Path:
    cfg = LvsConfig.model_validate({
        "syncdaemon": True,
        "routers": [{"name": s, "address": f"10.98.0.{i}", "private": ADDR[s]}
                    for i, s in enumerate("ab", 1)],
        "virtuals": [{"name": "web", "address": f"{VIP} eth0:1", "port": 80,
                      "servers": [{"name": "rs1", "address": RS}]}]})
    dev = "ctb0" if side == "a" else "ctb1"
    limit = 2 * int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
    (s,) = settings(cfg, side, interface=dev, state_dir=state / side, hash_limit=limit,
                    external_cache=external)  # two routers: one peer
    s.state_dir.mkdir(parents=True, exist_ok=True)
    s.config_path.write_text(render(s))
    return s.config_path


def entries(n: int) -> str:
    out = []
    for i in range(n):
        client, port = f"10.{150 + i // 65536}.{i // 256 % 256}.{i % 256}", 20000 + i % 40000
        out.append(f"-I -p tcp -s {client} -d {VIP} --sport {port} --dport 80 --state "
                   f"ESTABLISHED -t 1200 -u ASSURED,SEEN_REPLY -g {RS} --reply-src {RS} "
                   f"--reply-dst {client} --reply-port-src 80 --reply-port-dst {port}")
    return "\n".join(out) + "\n"


def kernel_count(side: str) -> int:
    return int(sh("ip", "netns", "exec", ns(side), "conntrack", "-C").strip() or 0)


def external_count(side: str, path: Path) -> int:
    out = sh("ip", "netns", "exec", ns(side), "conntrackd", "-C", str(path), "-s", "cache",
             check=False)
    m = re.search(r"cache:external\s+active objects:\s+(\d+)", out)
    return int(m.group(1)) if m else -1


def ready(side: str, path: Path) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns(side), "conntrackd", "-C", str(path),
                           "-s"], capture_output=True, check=False).returncode == 0


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait(probe: Any, want: int, within: float) -> float:
    start = time.monotonic()
    while (got := probe()) != want:
        if time.monotonic() - start > within:
            raise SystemExit(f"timed out: {got} of {want}")
        time.sleep(0.01)
    return time.monotonic() - start


def one(n: int, external: bool, work: Path) -> dict[str, Any]:
    for side in "ab":
        sh("ip", "netns", "exec", ns(side), "conntrack", "-F", check=False)
    paths = {side: conf(side, work / ("ext" if external else "direct"), external)
             for side in "ab"}
    procs = {side: subprocess.Popen(["ip", "netns", "exec", ns(side), "conntrackd", "-C",
                                     str(paths[side])], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
             for side in "ab"}
    try:
        for side in "ab":
            wait(lambda s=side: ready(s, paths[s]), True, 10)
            os.sched_setscheduler(procs[side].pid, os.SCHED_OTHER, os.sched_param(0))
        batch = work / f"entries-{n}.txt"
        if not batch.exists():
            batch.write_text(entries(n))
        cpu0 = cpu(procs["b"].pid)
        start = time.monotonic()
        sh("ip", "netns", "exec", ns("a"), "conntrack", "-R", str(batch))
        created = time.monotonic() - start
        if external:
            wait(lambda: external_count("b", paths["b"]), n, 300)
        else:
            wait(lambda: kernel_count("b"), n, 300)
        synced = time.monotonic() - start
        cpu_sync = cpu(procs["b"].pid) - cpu0
        held = kernel_count("b")
        start = time.monotonic()
        sh("ip", "netns", "exec", ns("b"), "conntrackd", "-C", str(paths["b"]), "-c")
        commit = time.monotonic() - start
        cpu_commit = cpu(procs["b"].pid) - cpu0 - cpu_sync
        in_kernel = kernel_count("b")
    finally:
        for proc in procs.values():
            proc.terminate()
        logs = {side: proc.communicate(timeout=10)[0] for side, proc in procs.items()}
    took = re.findall(r"commit has taken ([0-9.]+) seconds", logs["b"])
    committed = re.findall(r"Committed (\d+) new entries", logs["b"])
    return {"n": n, "mode": "external cache + commit" if external else "direct injection",
            "create_s": round(created, 4), "sync_s": round(synced, 4),
            "backup_kernel_entries": held, "commit_s": round(commit, 4),
            "commit_daemon_s": float(took[-1]) if took else None,
            "committed": int(committed[-1]) if committed else 0,
            "kernel_after_commit": in_kernel, "backup_cpu_sync_s": round(cpu_sync, 3),
            "backup_cpu_commit_s": round(cpu_commit, 3)}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Sync time and time added to the takeover, per N, for both modes (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["n"] for r in rows})
    modes = ("external cache + commit", "direct injection")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, title in ((axes[0], "sync_s", "sync: active's kernel -> backup holds all N"),
                           (axes[1], "commit_s", "added to the takeover (before the VIPs)")):
        for k, mode in enumerate(modes):
            ms = [next((r[key] * 1000 for r in rows if r["n"] == n and r["mode"] == mode
                        and (key == "sync_s" or r["committed"])), 0.0) for n in sizes]
            xs = [i + (k - 0.5) * 0.38 for i in range(len(sizes))]
            bars = ax.bar(xs, [max(v, 0.1) for v in ms], 0.38, label=mode)
            for bar, v in zip(bars, ms, strict=True):
                ax.annotate(f"{v:,.0f} ms" if v else "none", (bar.get_x() + 0.19,
                            bar.get_height()), ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_xticks(range(len(sizes)), [f"{n:,}" for n in sizes])
        ax.set_xlabel("synced connections (N)")
        ax.set_ylabel("ms")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("conntrackd (FTFW, two routers): external cache + commit against direct "
                 "injection", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--png", type=Path, help="plot the results here")
    ap.add_argument("--from", dest="source", type=Path,
                    help="no run: the rows of an earlier --json (with --png: plot them)")
    args = ap.parse_args()
    if args.source:
        rows = json.loads(args.source.read_text())
    else:
        rows = run([int(x) for x in args.sizes.split(",")])
    report(rows)
    if args.json and not args.source:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.png:
        plot(rows, args.png)


def run(sizes: list[int]) -> list[dict[str, Any]]:
    work = Path(f"/tmp/conntrack-bench-{os.getpid()}")
    work.mkdir(parents=True)
    teardown()
    build()
    rows = []
    try:
        for n in sizes:
            for external in (True, False):
                row = one(n, external, work)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        teardown()
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    print("\n| N | mode | sync (create -> backup has it) | commit at takeover | backup's "
          "kernel entries while backup | backup CPU (sync + commit) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        commit = (f"{r['commit_s'] * 1000:.1f} ms ({r['committed']} entries; conntrackd: "
                  f"{(r['commit_daemon_s'] or 0) * 1000:.1f} ms)")
        print(f"| {r['n']:,} | {r['mode']} | {r['sync_s'] * 1000:.0f} ms | {commit} | "
              f"{r['backup_kernel_entries']:,} | "
              f"{r['backup_cpu_sync_s'] + r['backup_cpu_commit_s']:.2f} s |")


if __name__ == "__main__":
    main()
