"""The nemesis' faults, as acts on a running lab: each starts one fault and returns the
function that heals it. The catalogue (bounds, targets) is bench/nemesis_plan.py's.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.conn_lab import crash as crash_router
from bench.conn_lab import reboot
from cluster.keys import Keys
from lvslab import Lab, build
from lvslab.procs import PYTHON, stop

Heal = Callable[[], None]
FORGE_SCRIPT = Path(__file__).with_name("nemesis_forge.py")
LVSCTL = str(Path(sys.executable).parent / "lvsctl")


class Unlocked:
    """A heal that only talks to etcd (and may wait for it): run without the lab's lock."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def __call__(self) -> None:
        self.fn()


#: Faults whose act only talks to etcd through lvsctl/etcdctl: no lab lock needed.
ETCD_ONLY = {"config-valid", "config-invalid", "config-server", "junk", "switchover"}
#: Faults after which the target runs a new agent process.
RESTARTS = {"crash", "sigkill", "sigkill-family", "sigterm"}


@dataclass
class Ctx:
    """What the faults act on, and what they leave for the runner to know."""

    lab: Lab
    config: str  # the campaign's lvs.cf (serial_no is bumped on every push)
    workdir: Path
    serial: int = 1
    down: set[str] = field(default_factory=set)  # agents the nemesis stopped on purpose
    _local: threading.local = field(default_factory=threading.local)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    wrong: list[tuple[float, str]] = field(default_factory=list)  # what must not happen

    @property
    def notes(self) -> list[str]:
        """What the current thread's act or heal reported (each step runs in a thread)."""
        if not hasattr(self._local, "notes"):
            self._local.notes = []
        return self._local.notes  # type: ignore[no-any-return]

    def lvsctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.lab.exec("client", LVSCTL, "--etcd", self.lab.etcd_endpoints, *args,
                             timeout=timeout)

    def push(self, text: str) -> subprocess.CompletedProcess[str]:
        """Push ``text`` as lvs.cf with the next serial_no."""
        self.serial += 1
        text = re.sub(r"(?m)^serial_no = \d+$", f"serial_no = {self.serial}", text)
        path = self.workdir / f"push-{self.serial}.cf"
        path.write_text(text)
        return self.lvsctl("--timeout", "3", "config", "push", str(path), timeout=20)


def _agent(ctx: Ctx, router: str) -> int | None:
    return ctx.lab.pid(router) if ctx.lab.alive(router) else None


def _restart(ctx: Ctx, router: str) -> None:
    if not ctx.lab.alive(router):
        ctx.lab.start_agent(router)
    ctx.down.discard(router)


# ---------------------------------------------------------------- routers


def crash(ctx: Ctx, router: str, rng: random.Random) -> Heal:
    ctx.down.add(router)
    crash_router(ctx.lab, router)

    def heal() -> None:
        reboot(ctx.lab, router)
        ctx.down.discard(router)
    return heal


def sigkill(ctx: Ctx, router: str, rng: random.Random) -> Heal:
    ctx.down.add(router)
    if ctx.lab.alive(router):
        ctx.lab.kill(router)
    return lambda: _restart(ctx, router)


def sigkill_family(ctx: Ctx, router: str, rng: random.Random) -> Heal:
    ctx.down.add(router)
    from lvslab import netns
    agent = _agent(ctx, router)
    for pid in netns.ns_pids(ctx.lab.ns(router)):
        if pid != agent:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if agent is not None:
        ctx.lab.kill(router)
    return lambda: _restart(ctx, router)


def freeze(ctx: Ctx, router: str, rng: random.Random) -> Heal:
    pid = _agent(ctx, router)
    if pid is None:
        ctx.notes.append(f"{router} has no agent to freeze")
        return lambda: None
    os.kill(pid, signal.SIGSTOP)

    def heal() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    return heal


def sigterm(ctx: Ctx, router: str, rng: random.Random) -> Heal:
    pid = _agent(ctx, router)
    ctx.down.add(router)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)

    def heal() -> None:
        deadline = time.monotonic() + 15
        while ctx.lab.alive(router) and time.monotonic() < deadline:
            time.sleep(0.05)
        if ctx.lab.alive(router):
            ctx.notes.append(f"{router} did not exit within 15 s of SIGTERM")
            ctx.lab.kill(router)
        _restart(ctx, router)
    return heal


def switchover(ctx: Ctx, target: str, rng: random.Random) -> Heal:
    proc = ctx.lab.popen("client", LVSCTL, "--etcd", ctx.lab.etcd_endpoints, "switchover",
                         "--wait", "15", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx.procs.append(proc)
    return lambda: None


def cut_etcd(ctx: Ctx, router: str, rng: random.Random) -> Heal:
    ctx.lab.cut_etcd(router)
    return lambda: ctx.lab.restore_etcd(router)


def _pair(target: str) -> tuple[str, str]:
    a, b = target.split(">")
    return a, b


def partition(ctx: Ctx, target: str, rng: random.Random) -> Heal:
    a, b = _pair(target)
    ctx.lab.partition(a, b)
    return lambda: ctx.lab.heal(a, b)


def drop_heartbeats(ctx: Ctx, target: str, rng: random.Random) -> Heal:
    a, b = _pair(target)
    ctx.lab.drop_heartbeats(a, b)
    return lambda: ctx.lab.restore_heartbeats(a, b)


def isolate(ctx: Ctx, router: str, rng: random.Random) -> Heal:
    ctx.lab.isolate(router)
    return lambda: ctx.lab.reconnect(router)


def _link(lab: Lab, host: str, ifname: str, up: bool) -> None:
    """One link of ``host`` down, or up again with the routes the kernel dropped with it."""
    lab.exec(host, "ip", "link", "set", ifname, "up" if up else "down", check=True)
    if up:
        build.add_routes(lab.topology, lab.topology.host(host))


def link_flap(ctx: Ctx, router: str, rng: random.Random) -> Heal:
    ifname = rng.choice(["eth0", "eth1"])
    ctx.notes.append(f"{router} {ifname}")
    _link(ctx.lab, router, ifname, up=False)
    return lambda: _link(ctx.lab, router, ifname, up=True)


# ---------------------------------------------------------------- etcd


def _start_members(ctx: Ctx) -> None:
    ctx.lab.start_etcd()


def etcd_member(ctx: Ctx, member: str, rng: random.Random) -> Heal:
    if ctx.lab.alive(member):
        ctx.lab.kill(member)
    return lambda: _start_members(ctx)


def etcd_leader(ctx: Ctx, target: str, rng: random.Random) -> Heal:
    killed = ctx.lab.kill_etcd_leader()
    ctx.notes.append(killed)
    return lambda: _start_members(ctx)


def etcd_quorum(ctx: Ctx, target: str, rng: random.Random) -> Heal:
    two = rng.sample(ctx.lab.etcd_names, 2)
    ctx.notes.append("+".join(two))
    for m in two:
        if ctx.lab.alive(m):
            ctx.lab.kill(m)
    return lambda: _start_members(ctx)


def etcd_down(ctx: Ctx, target: str, rng: random.Random) -> Heal:
    ctx.lab.kill_etcd()
    return lambda: _start_members(ctx)


def etcd_peers(ctx: Ctx, member: str, rng: random.Random) -> Heal:
    ctx.lab.cut_etcd_peers(member)
    return lambda: ctx.lab.restore_etcd_peers(member)


# ---------------------------------------------------------------- real servers


def server_crash(ctx: Ctx, server: str, rng: random.Random) -> Heal:
    ctx.lab.kill(server, link_down=True)
    return lambda: ctx.lab.start(server)


def server_flap(ctx: Ctx, server: str, rng: random.Random) -> Heal:
    stop = threading.Event()

    def flap() -> None:
        up = False
        while not stop.wait(rng.uniform(0.5, 1.5)):
            _link(ctx.lab, server, "eth0", up)
            up = not up
        _link(ctx.lab, server, "eth0", up=True)

    thread = threading.Thread(target=flap, daemon=True)
    thread.start()

    def heal() -> None:
        stop.set()
        thread.join(10)
    return heal


# ---------------------------------------------------------------- config, etcd keys


def config_valid(ctx: Ctx, target: str, rng: random.Random) -> Heal:
    weight = rng.randint(1, 5)
    text = re.sub(r"(?m)^(\s+weight = )\d+$", lambda m: f"{m.group(1)}{weight}", ctx.config,
                  count=1)
    res = ctx.push(text)
    if res.returncode != 0:
        ctx.notes.append(f"not stored: {res.stderr.strip()[-160:]}")
    return lambda: None


def config_invalid(ctx: Ctx, target: str, rng: random.Random) -> Heal:
    broken = rng.choice([
        ctx.config.replace("protocol = tcp", "protocol = sctp-ish", 1),
        ctx.config.replace("virtual http {", "virtual http {\n    port = 99999", 1),
        ctx.config + "\nvirtual {\n",
    ])
    res = ctx.push(broken)
    if res.returncode == 0:
        ctx.notes.append("INVALID CONFIG STORED")
        ctx.wrong.append((time.monotonic(), f"an invalid lvs.cf was stored ({ctx.serial})"))
    return lambda: None


def config_server(ctx: Ctx, server: str, rng: random.Random) -> Heal:
    block = re.compile(rf"(?ms)^    server {re.escape(server)} {{\n.*?^    }}\n")
    res = ctx.push(block.sub("", ctx.config))
    if res.returncode != 0:
        ctx.notes.append(f"not stored: {res.stderr.strip()[-160:]}")

    return Unlocked(lambda: _push_until_stored(ctx, ctx.config))


def _push_until_stored(ctx: Ctx, text: str, within: float = 20.0) -> None:
    """Push ``text``, again while etcd cannot take it (another fault may have its quorum)."""
    deadline = time.monotonic() + within
    while (res := ctx.push(text)).returncode != 0:
        if time.monotonic() > deadline:
            ctx.notes.append(f"config not stored: {res.stderr.strip()[-200:]}")
            return
        time.sleep(0.5)


def junk(ctx: Ctx, target: str, rng: random.Random) -> Heal:
    keys = Keys(ctx.lab.topology.cluster)
    n = rng.getrandbits(24)
    written = {
        f"{keys.nodes_prefix}junk{n}": "not json {",
        f"{keys.health_prefix}http/nosuch{n}": '{"state": "up", "extra": [1, 2]}',
        f"{keys.observations_prefix}junk{n}/http/rs1": "\x01\x7fbinary\ufffd",
        f"{keys.admin_prefix}http/rs{n}": '{"mode": "explode"}',
        f"{keys.prefix}zz-unknown-{n}": "[]",
    }
    for key, value in written.items():
        ctx.lab.exec("client", "etcdctl", "--endpoints", ctx.lab.etcd_endpoints,
                     "--command-timeout=2s", "put", key, value, timeout=10)

    def heal() -> None:  # again while etcd cannot take it (another fault)
        left, deadline = list(written), time.monotonic() + 20
        while left and time.monotonic() < deadline:
            res = ctx.lab.exec("client", "etcdctl", "--endpoints", ctx.lab.etcd_endpoints,
                               "--command-timeout=2s", "del", left[0], timeout=10)
            if res.returncode == 0:
                left.pop(0)
            else:
                time.sleep(0.5)
        if left:
            ctx.notes.append(f"junk left in etcd: {', '.join(left)}")
    return Unlocked(heal)


def forged_heartbeats(ctx: Ctx, target: str, rng: random.Random) -> Heal:
    routers = ",".join(f"{r}={ctx.lab.address(r)}" for r in ctx.lab.routers)
    replay = ctx.workdir / "captured-heartbeats.jsonl"
    listener = next((r for r in ctx.lab.routers if ctx.lab.alive(r)), ctx.lab.routers[0])
    got = ctx.lab.exec(listener, PYTHON, str(FORGE_SCRIPT), "--capture", str(replay),
                       "--seconds", "1", timeout=15)
    ctx.notes.append(f"{got.stdout.strip() or 0} captured at {listener}")
    proc = ctx.lab.popen("client", PYTHON, str(FORGE_SCRIPT), "--key", str(ctx.lab.key_path),
                         "--cluster", ctx.lab.topology.cluster, "--routers", routers,
                         "--replay", str(replay), "--seed", str(rng.getrandbits(32)),
                         stdout=subprocess.DEVNULL)
    return lambda: stop(proc)


def cpu(ctx: Ctx, target: str, rng: random.Random) -> Heal:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(os.cpu_count() or 2)]
    return lambda: [stop(p) for p in procs] and None


ACTS: dict[str, Callable[[Ctx, str, random.Random], Heal]] = {
    "crash": crash, "sigkill": sigkill, "sigkill-family": sigkill_family,
    "freeze-short": freeze, "freeze-long": freeze, "sigterm": sigterm,
    "switchover": switchover, "cut-etcd": cut_etcd, "partition": partition,
    "drop-heartbeats": drop_heartbeats, "isolate": isolate, "link-flap": link_flap,
    "etcd-member": etcd_member, "etcd-leader": etcd_leader, "etcd-quorum": etcd_quorum,
    "etcd-down": etcd_down, "etcd-peers": etcd_peers, "server-crash": server_crash,
    "server-flap": server_flap, "config-valid": config_valid,
    "config-invalid": config_invalid, "config-server": config_server, "junk": junk,
    "forged-heartbeats": forged_heartbeats, "cpu": cpu,
}
