"""Scale, end to end in the lab: 1k, 10k, 40k and 100k real servers (issue 13).

    sudo .venv/bin/python bench/scale.py [--sizes 1000,10000,40000,100000] [--per-virtual 16]
        [--steady 30] [--json FILE] [--png docs/img/scale.png] [--write-docs] [--logs DIR]

One lab (two routers, nftables, one etcd). For each size N, from the lab's own small config
(every router back on it first): ``lvsctl config push`` of the lab's virtuals plus N / 16
virtuals of 16 real servers each (``check = none``: the servers need not exist, the data
plane holds them all), all on the lab's VIP, ports 10000 and up. Measured:

- push: the ``lvsctl config push`` command, wall time (parse, validate, write the parts);
- all run: from the push until every router's ``nodes/`` record reports the new serial_no;
- served: from the start of the push command until the active's kernel holds the last
  virtual's 16 servers (read from the reply guard set, which follows the services' chains;
  the chain itself is checked once after, untimed: nft reads the whole table to list one
  chain); and, by the active's own log, from the push done (its ``pushed_at``) to its
  "data plane: N change(s) applied" line;
- health published: from the push until etcd takes under one transaction a second (the
  health records of the new servers are all written), at most 300 s; then
- each agent's resident memory and CPU (``/proc``) over ``--steady`` seconds after that
  (two scrapes of the active's /metrics in that window; its resident memory before the
  first is reported too, "unscraped": a scrape reads the kernel's traffic counters);
- etcd: keys and value bytes under the cluster's prefix; the gRPC requests it received per
  second over the same steady window, by method (its /metrics), which should be lease
  keep-alives only.

Targets at 40k: push to served on the active <= 10 s; agent RSS <= 300 MB; at steady state
etcd sees only lease refreshes and health changes. ``--write-docs`` replaces the "Scale"
section of docs/benchmarks.md (with ``--png``).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from agent.dataplane.nft.layout import chain_name  # noqa: E402
from agent.dataplane.table import ServiceKey  # noqa: E402
from bench.failover_report import replace_section  # noqa: E402
from cluster.keys import Keys  # noqa: E402
from lvslab import Lab  # noqa: E402
from lvslab.netns import LabError  # noqa: E402

SECTION = "Scale"
PORT0 = 10000
HZ = 100  # clock ticks a second (/proc/<pid>/stat)


@dataclass
class Point:
    servers: int
    virtuals: int
    push_s: float
    all_run_s: float
    served_s: float
    served_log_s: float | None  # from pushed_at to the active's log line of that apply
    parts_written: int
    kbytes_written: int
    rss_mb: dict[str, float] = field(default_factory=dict)
    rss_unscraped_mb: dict[str, float] = field(default_factory=dict)  # before any scrape
    cpu: dict[str, float] = field(default_factory=dict)  # cores, over the steady window
    etcd_keys: int = 0
    etcd_mbytes: float = 0.0
    etcd_rps: dict[str, float] = field(default_factory=dict)  # gRPC requests/s by method
    scrape_s: float = 0.0  # one scrape of the active's /metrics
    scrape_mb: float = 0.0
    stalls: int = 0  # the active's event-loop stalls (lvs_stalls_total) in the window
    quiet_s: float | None = None  # from the push until etcd saw no more health writes
    chain_listed: bool = True  # the last virtual's chain was listed and held its servers
    # (not: nft kept starting over, or the chain differed: a warning says which)


def config_text(base: str, serial: int, vip: str, nv: int, per: int) -> str:
    """The lab's config with ``nv`` more virtuals of ``per`` servers."""
    base = re.sub(r"(?m)^serial_no = \d+", f"serial_no = {serial}", base)
    nmask = re.search(r"(?m)^\s*vip_nmask = (\S+)", base)  # the VIP as the lab's virtuals
    out = [base, ""]
    for v in range(nv):
        out += [f"virtual scale{v} {{", f"    address = {vip} eth0:1", f"    port = {PORT0 + v}",
                "    scheduler = wlc", "    check = none"]
        if nmask:
            out.append(f"    vip_nmask = {nmask.group(1)}")
        for s in range(per):
            n = v * per + s
            out += [f"    server s{s} {{", f"        address = {server_address(n)}", "    }"]
        out.append("}")
    return "\n".join(out) + "\n"


def wait(cond: Callable[[], bool], within: float, what: str, every: float = 0.05) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if cond():
            return time.monotonic() - start
        time.sleep(every)
    raise SystemExit(f"timed out after {within:.0f} s waiting for {what}")


def node_serials(lab: Lab) -> dict[str, int | None]:
    keys = Keys(lab.topology.cluster)
    out = lab.exec("client", "etcdctl", "--endpoints", lab.etcd_endpoints, "get", "--prefix",
                   keys.nodes_prefix, "--print-value-only").stdout
    serials: dict[str, int | None] = {}
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        serials[doc.get("node", "")] = doc.get("config_serial")
    return serials


def active(lab: Lab) -> str:
    owners = [r for r in lab.routers if lab.vip in lab.exec(r, "ip", "-br", "addr").stdout]
    return owners[0] if len(owners) == 1 else ""


def server_address(n: int) -> str:
    """The address of the bench's n-th real server (as :func:`config_text` writes it)."""
    return f"10.{200 + n // 62500}.{n // 250 % 250}.{n % 250 + 1}"


def holds(lab: Lab, router: str, nv: int, per: int) -> bool:
    """The router's kernel programs the last virtual's ``per`` real servers: their
    endpoints are in the reply guard set, which follows the services' chains right after
    each transaction (agent/dataplane/nft/elements.py). One set is listed (0.5 s at 40,000)
    where listing a chain makes nft read the whole table (seconds, restarted whenever the
    ruleset moves meanwhile)."""
    port = PORT0 + nv - 1
    try:
        res = lab.exec(router, "nft", "list", "set", "inet", "piranha", "rs4", timeout=30)
    except LabError:  # nft restarts its read while the ruleset keeps changing: not yet
        return False
    held = set(re.findall(r"(\d+\.\d+\.\d+\.\d+) \. (\d+)", res.stdout))
    return res.returncode == 0 and all(
        (server_address((nv - 1) * per + s), str(port)) in held for s in range(per))


APPLIED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ INFO "
                     r"agent\.dataplane\.service: data plane: \d+ change\(s\) applied$", re.M)


def applied_after(log: Path, pushed_at: str | None, seen: float) -> float | None:
    """Seconds from the push's ``pushed_at`` (the head written: the push done) to the
    active's last "data plane: N change(s) applied" line before the bench saw the last
    virtual served (``seen``, epoch; a second's slack: the line follows the last commit),
    not one of a health change ("... after detection"): the agent's own account of when
    its kernel held the config."""
    if not pushed_at:
        return None
    t0 = datetime.fromisoformat(pushed_at.replace("Z", "+00:00")).timestamp()
    found = None
    for m in APPLIED.finditer(log.read_text(errors="replace")):
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() \
            + int(m.group(2)) / 1000  # the agent logs local time, as this parses it
        if t0 <= at <= seen + 1.0:
            found = at - t0
    return found


def chain_holds(lab: Lab, router: str, nv: int, per: int) -> bool | None:
    """The last virtual's chain itself holds its servers (checked once, after: untimed);
    None if nft could not list it (it reads the whole table for one chain, and starts over
    whenever the ruleset moves meanwhile, as the VIP fence's renewals make it do)."""
    chain = chain_name(ServiceKey("tcp", lab.vip, PORT0 + nv - 1))
    for _ in range(3):
        try:
            res = lab.exec(router, "nft", "list", "chain", "inet", "piranha", chain, timeout=30)
        except LabError:
            continue
        return res.returncode == 0 and res.stdout.count(" . ") >= per
    return None


def proc_stats(pid: int) -> tuple[float, float]:
    """(resident MB, CPU seconds so far) of ``pid``."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / HZ


def etcd_requests(lab: Lab) -> dict[str, float]:
    """gRPC messages etcd received so far, by method (from its /metrics)."""
    text = lab.exec("client", "curl", "-s", f"{lab.etcd_url}/metrics").stdout
    out: dict[str, float] = {}
    for m in re.finditer(r'^grpc_server_msg_received_total\{[^}]*grpc_method="(\w+)"[^}]*\} '
                         r'(\S+)$', text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def etcd_size(lab: Lab) -> tuple[int, float]:
    keys = Keys(lab.topology.cluster)
    out = lab.exec("client", "etcdctl", "--endpoints", lab.etcd_endpoints, "get", "--prefix",
                   keys.prefix, "-w", "json", timeout=120).stdout
    kvs = json.loads(out).get("kvs", [])
    import base64
    return len(kvs), sum(len(base64.b64decode(kv.get("value", ""))) for kv in kvs) / 2**20


def push(lab: Lab, text: str, path: Path) -> tuple[float, dict[str, object]]:
    path.write_text(text)
    start = time.monotonic()
    res = lab.exec("client", str(REPO / ".venv/bin/lvsctl"), "--etcd", lab.etcd_endpoints,
                   "--cluster", lab.topology.cluster, "config", "push", "-o", "json",
                   str(path), timeout=600)
    took = time.monotonic() - start
    if res.returncode != 0:
        raise SystemExit(f"push failed: {res.stderr.strip()}")
    return took, json.loads(res.stdout)


def measure(lab: Lab, base: str, size: int, per: int, serial: int, steady: float,
            tmp: Path) -> Point:
    nv = size // per
    # back to the lab's own config first, so each size starts from (nearly) empty
    push(lab, config_text(base, serial, lab.vip, 0, per), tmp / "base.cf")
    wait(lambda: all(s == serial for s in node_serials(lab).values()), 120, "base config")
    serial += 1
    text = config_text(base, serial, lab.vip, nv, per)
    start = time.monotonic()
    push_s, result = push(lab, text, tmp / f"scale{size}.cf")
    owner = active(lab)
    served = [0.0]

    def done() -> bool:
        if not served[0] and holds(lab, owner, nv, per):
            served[0] = time.monotonic() - start
        return bool(served[0]) and all(s == serial for s in node_serials(lab).values())

    wait(done, 600, f"{size} servers served and run everywhere", every=0.1)
    all_run = time.monotonic() - start
    served_log = applied_after(lab.log_path(owner), result.get("pushed_at"),
                               time.time() - (time.monotonic() - start - served[0]))
    quiet = quiet_after(lab, start)
    checked = chain_holds(lab, owner, nv, per)
    if checked is False:  # reported, not fatal: a router that lost its lease meanwhile
        print(f"warning: {owner}: the guard set held the last virtual's servers; its chain, "
              "listed after, does not hold them all", file=sys.stderr, flush=True)
    pids = {r: lab.pid(r) for r in lab.routers}
    unscraped = {r: proc_stats(p)[0] for r, p in pids.items() if p}  # (the active's next
    before = {r: proc_stats(p)[1] for r, p in pids.items() if p}  # scrape reads counters)
    reqs = etcd_requests(lab)
    stalls = metric(scrape(lab, owner)[0], "lvs_stalls_total")
    time.sleep(steady / 2)
    text, scrape_s = scrape(lab, owner)  # in the window: its cost counts
    time.sleep(steady / 2)
    after = {r: proc_stats(p) for r, p in pids.items() if p}
    reqs2 = etcd_requests(lab)
    keys, mbytes = etcd_size(lab)
    return Point(
        servers=nv * per, virtuals=nv, push_s=round(push_s, 2), all_run_s=round(all_run, 2),
        served_s=round(served[0], 2),
        served_log_s=None if served_log is None else round(served_log, 2),
        parts_written=int(result.get("parts_written", 0)),
        kbytes_written=int(result.get("bytes_written", 0)) // 1024,
        rss_mb={r: round(a[0], 1) for r, a in after.items()},
        rss_unscraped_mb={r: round(m, 1) for r, m in unscraped.items()},
        cpu={r: round((a[1] - before[r]) / steady, 3) for r, a in after.items()},
        etcd_keys=keys, etcd_mbytes=round(mbytes, 2),
        etcd_rps={m: round((reqs2.get(m, 0.0) - reqs.get(m, 0.0)) / steady, 2)
                  for m in sorted(reqs2) if reqs2.get(m, 0.0) != reqs.get(m, 0.0)},
        scrape_s=round(scrape_s, 2), scrape_mb=round(len(text) / 2**20, 1),
        stalls=int(metric(scrape(lab, owner)[0], "lvs_stalls_total") - stalls),
        quiet_s=None if quiet is None else round(quiet, 1), chain_listed=checked is True)


#: etcd is quiet when it takes fewer transactions than this a second (the health
#: publication of a new config is done: only lease refreshes and health changes remain).
QUIET_TXN = 1.0


def quiet_after(lab: Lab, start: float, within: float = 300.0,
                window: float = 6.0) -> float | None:
    """Seconds from ``start`` until etcd's transaction rate fell below :data:`QUIET_TXN`
    over ``window`` seconds (None: not within ``within``); the steady window follows."""
    samples: list[tuple[float, float]] = []
    while time.monotonic() - start < within:
        samples.append((time.monotonic(), etcd_requests(lab).get("Txn", 0.0)))
        old = [x for x in samples if x[0] <= samples[-1][0] - window]
        if old and (samples[-1][1] - old[-1][1]) / (samples[-1][0] - old[-1][0]) < QUIET_TXN:
            return old[-1][0] - start
        time.sleep(1.0)
    return None


def scrape(lab: Lab, router: str) -> tuple[str, float]:
    """The router's /metrics text and how long it took."""
    start = time.monotonic()
    res = lab.exec("client", "curl", "-s", f"http://{lab.address(router, 'public')}:9100/metrics",
                   timeout=120)
    return res.stdout, time.monotonic() - start


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples (0 if absent)."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$",
                                                       text, re.M))


def table(points: list[Point]) -> str:
    rows = ["| real servers | virtuals | push | all routers run it | served on the active "
            "| served, active's log | parts written | agent RSS (MB) | agent CPU (cores) "
            "| etcd keys | etcd MB "
            "| etcd requests/s at steady state | one /metrics scrape | health published |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        rss = ", ".join(f"{r} {v:.0f}" + (f" ({p.rss_unscraped_mb[r]:.0f} unscraped)"
                                           if r in p.rss_unscraped_mb else "")
                        for r, v in sorted(p.rss_mb.items()))
        cpu = ", ".join(f"{r} {v:.2f}" for r, v in sorted(p.cpu.items()))
        rps = ", ".join(f"{m} {v:g}" for m, v in p.etcd_rps.items()) or "none"
        log = "-" if p.served_log_s is None else f"{p.served_log_s:.2f} s"
        rows.append(f"| {p.servers:,} | {p.virtuals:,} | {p.push_s:.2f} s | {p.all_run_s:.2f} s "
                    f"| {p.served_s:.2f} s | {log} "
                    f"| {p.parts_written:,} ({p.kbytes_written:,} KiB) "
                    f"| {rss} | {cpu} | {p.etcd_keys:,} | {p.etcd_mbytes:.1f} | {rps} "
                    f"| {p.scrape_s:.2f} s, {p.scrape_mb:.1f} MB, {p.stalls} stalls "
                    f"| {'not in 300 s' if p.quiet_s is None else f'{p.quiet_s:.0f} s'} |")
    return "\n".join(rows)


def write_png(points: list[Point], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p.servers for p in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(xs, [p.push_s for p in points], "o-", label="push")
    a.plot(xs, [p.served_s for p in points], "s-", label="push to served on the active")
    if all(p.served_log_s is not None for p in points):
        a.plot(xs, [p.served_log_s for p in points], "s--",
               label="push done to served (active's log)")
    a.plot(xs, [p.all_run_s for p in points], "^-", label="push to every router runs it")
    a.axhline(10, color="grey", ls=":", label="target at 40k (served)")
    a.set_xscale("log")
    a.set_xlabel("real servers")
    a.set_ylabel("seconds")
    a.legend(fontsize=8)
    a.set_title("time")
    for router in sorted({r for p in points for r in p.rss_mb}):
        b.plot(xs, [p.rss_mb.get(router, 0) for p in points], "o-", label=f"{router} RSS")
    b.plot(xs, [p.etcd_mbytes for p in points], "s--", label="etcd values (MB)")
    b.axhline(300, color="grey", ls=":", label="RSS target")
    b.set_xscale("log")
    b.set_xlabel("real servers")
    b.set_ylabel("MB")
    b.legend(fontsize=8)
    b.set_title("memory")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,40000,100000")
    ap.add_argument("--per-virtual", type=int, default=16)
    ap.add_argument("--steady", type=float, default=30.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--png", type=Path)
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--logs", type=Path, help="copy the lab's logs here before it goes down")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    points: list[Point] = []
    tmp = Path("/tmp/piranha-scale")
    tmp.mkdir(exist_ok=True)
    with Lab("sc", "10.197.0.0/24", "10.197.1.0/24", routers=2, servers=1) as lab:
        lab.wait_served(60)
        base = lab.config_path.read_text()
        serial = 100
        for size in sizes:
            point = measure(lab, base, size, args.per_virtual, serial, args.steady, tmp)
            serial += 2
            print(json.dumps(asdict(point)), flush=True)
            points.append(point)
        if args.logs:
            shutil.copytree(lab.log_dir, args.logs, dirs_exist_ok=True)
    print(table(points))
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in points], indent=1))
    if args.png:
        write_png(points, args.png)
    if args.write_docs:
        cpu = platform.processor() or platform.machine()
        text = (f"## {SECTION}\n\nEnd to end in the lab (two routers, nftables, one etcd "
                f"member), {cpu}, "
                f"{time.strftime('%Y-%m-%d')}: a push of the lab's config plus N real "
                f"servers in virtuals of {args.per_virtual} (`check = none`), from the lab's "
                "small config each time.\n\n"
                f"Command: `sudo .venv/bin/python bench/scale.py --sizes {args.sizes} "
                f"--png docs/img/scale.png --write-docs`\n\n{table(points)}\n\n"
                "![cost against size](img/scale.png)\n")
        doc = REPO / "docs/benchmarks.md"
        doc.write_text(replace_section(doc.read_text(), text, SECTION))
    return 0


if __name__ == "__main__":
    sys.exit(main())
