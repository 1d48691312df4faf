"""Helpers of the IPVS lab tests: a lab on the IPVS data plane, its config, what the kernel
holds, and long-lived client connections (conns.py) through the VIP."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cluster import lvscf
from cluster.model import LvsConfig
from lvslab import Lab
from lvslab.config_file import lab_lvs_cf
from lvslab.echo import ECHO_PORT
from lvslab.topology import Topology

PY = sys.executable
LVSCTL = str(Path(PY).parent / "lvsctl")
CONNS = str(Path(__file__).parent / "conns.py")
LBCLIENT = str(Path(__file__).parent.parent / "support" / "lbclient.py")

#: The guest is software-emulated and slow (Python about 30 times slower than the host):
#: timers a little longer than the lab's defaults, so a busy guest is not mistaken for a
#: dead router, and a safety margin above its usual 0.3-0.8 s stalls, so that its active
#: does not keep losing the licence to its own pauses.
TIMERS = {"keepalive": 1.0, "deadtime": 4.0, "lease_ttl": 4, "safety_margin": 1.0}
WARMUP = 6.0  # sync_warmup: sync refresh period 2 s


def config_text(topo: Topology, *, alt_port: int | None = None, **globals_: Any) -> str:
    """The lab's lvs.cf (virtuals http on 80, echo on 7) with connection sync on the private
    LAN, ``globals_`` on top, and with ``alt_port`` a third virtual on that port over the
    same servers' port 80."""
    cfg = lvscf.parse(lab_lvs_cf(topo), "lab.cf").config
    assert cfg is not None
    quick = {"scheduler": "wrr", "timeout": 3.0, "reentry": 3.0}
    web, echo = (v.model_copy(update=quick) for v in cfg.virtuals)  # http (80), echo (7)
    virtuals = [web, echo]
    if alt_port is not None:
        servers = tuple(s.model_copy(update={"port": 80}) for s in web.servers)
        virtuals.append(web.model_copy(update={"name": "alt", "port": alt_port,
                                               "servers": servers, "scheduler": "rr"}))
    update: dict[str, Any] = {"virtuals": tuple(virtuals), "syncdaemon": True,
                              "syncd_iface": "eth1", "syncd_id": 7, "sync_warmup": WARMUP,
                              **TIMERS, **globals_}
    text = lvscf.write(cfg.model_copy(update=update))
    parsed = lvscf.parse(text, "lab.cf", runnable=True)
    assert parsed.config is not None, parsed.errors
    return text


def parse(text: str) -> LvsConfig:
    cfg = lvscf.parse(text, "lab.cf").config
    assert cfg is not None
    return cfg


@contextmanager
def ipvs_lab(prefix: str, n: int, tmp: Path, network: str = "nat", **config: Any
             ) -> Iterator[Lab]:
    """A lab of two routers and two real servers on the IPVS data plane, serving."""
    topo = Topology(prefix, f"10.{n}.0.0/24", f"10.{n}.1.0/24", routers=2, servers=2,
                    network=network)
    path = tmp / "lvs.cf"
    path.write_text(config_text(topo, **config))
    started = time.monotonic()
    with Lab(topo.prefix, topo.public, topo.private, routers=2, servers=2, config=path,
             network=network, dataplane="ipvs") as lab:
        try:
            lab.wait_served(180)
            log(f"lab {prefix} ({network}) up and serving in "
                f"{time.monotonic() - started:.1f} s")
            yield lab
        finally:  # the logs come back with the guest's results (the lab's go with it)
            if out := os.environ.get("PIRANHA_VM_OUT"):
                shutil.copytree(lab.log_dir, Path(out) / f"{prefix}-logs", dirs_exist_ok=True)


def log(message: str) -> None:
    """A line for the guest's console (with ``--capture=sys``, as scripts/ipvs_vm.py runs
    the tests) and for ``$PIRANHA_VM_OUT/ipvs-lab.log``: the timings of the slow parts."""
    line = f"[ipvs-lab {time.strftime('%H:%M:%S')}] {message}"
    print(line, file=sys.__stderr__, flush=True)
    if out := os.environ.get("PIRANHA_VM_OUT"):
        with open(Path(out) / "ipvs-lab.log", "a") as f:
            f.write(line + "\n")


def wait_for(cond: Callable[[], Any], limit: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if cond():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {limit} s waiting for {what}")


def holders(lab: Lab) -> list[str]:
    """Routers holding the VIP now."""
    return [r for r in lab.routers
            if f" {lab.vip}/" in lab.exec(r, "ip", "-br", "-4", "addr").stdout]


def active(lab: Lab) -> str | None:
    owners = holders(lab)
    return owners[0] if len(owners) == 1 else None


def make_active(lab: Lab, router: str, limit: float = 60.0) -> None:
    """Wait for an active router and, if another won the start-up election (in the slow
    guest a router may take 30 s to start), hand over to ``router``: the tests start from
    ``router`` active, not from whoever started first."""
    wait_for(lambda: active(lab), limit, "an active router")
    if active(lab) != router:
        log(f"{active(lab)} won the start-up election: switching over to {router}")
        lab.exec("client", LVSCTL, "--etcd", lab.etcd_url, "switchover", "--to", router,
                 "--wait", "90", timeout=120)
    wait_for(lambda: active(lab) == router, limit, f"{router} active")


def ipvsadm(lab: Lab, router: str, *args: str) -> str:
    res = lab.exec(router, "ipvsadm", *args)
    assert res.returncode == 0, res.stderr
    return res.stdout


def client_conns(lab: Lab, router: str) -> dict[int, str]:
    """The client's connections in ``router``'s IPVS table: {client port: state}."""
    client = re.escape(lab.address("client"))
    out = ipvsadm(lab, router, "-L", "-n", "-c")
    return {int(m.group(1)): m.group(0).split()[2]
            for m in re.finditer(rf"^TCP\s+\S+\s+\S+\s+{client}:(\d+)\s.*$", out, re.M)}


def established(lab: Lab, router: str) -> set[int]:
    """Client ports of the ESTABLISHED connections in ``router``'s IPVS table."""
    return {p for p, state in client_conns(lab, router).items() if state == "ESTABLISHED"}


def daemons(lab: Lab, router: str) -> str:
    return ipvsadm(lab, router, "-L", "--daemon")


def ctl(lab: Lab, *args: str) -> str:
    res = lab.exec("client", LVSCTL, "--etcd", lab.etcd_url, *args, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def load(lab: Lab, count: int, port: int = 80) -> dict:
    """COUNT short HTTP requests through the VIP (tests/support/lbclient.py)."""
    res = lab.exec("client", PY, LBCLIENT, lab.vip, str(count), "--port", str(port),
                   "--concurrency", "5", "--timeout", "10", timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def log_time(lab: Lab, host: str, text: str) -> float | None:
    """Wall-clock time (epoch) of the newest line of ``host``'s log containing ``text``."""
    found = None
    for line in lab.log_path(host).read_text(errors="replace").splitlines():
        if text in line and (m := re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)):
            stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
            found = stamp.timestamp() + int(m.group(2)) / 1000
    return found


class Conns:
    """Long-lived connections from the client through the VIP (conns.py): by default to the
    lab's line echo (port 7), each asking its real server's name every ``interval`` s."""

    def __init__(self, lab: Lab, count: int, port: int = ECHO_PORT, proto: str = "echo",
                 interval: float = 0.5) -> None:
        self.proc = lab.popen("client", PY, CONNS, lab.vip, str(count), "--port", str(port),
                              "--proto", proto, "--interval", str(interval),
                              stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_env())
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert line, f"conns.py exited with {self.proc.wait()}"
        self.ready: dict[int, str] = {int(p): s for p, s in json.loads(line)["ready"].items()}
        bad = {p: s for p, s in self.ready.items() if not s.startswith("rs")}
        assert not bad, f"connections not served: {bad}"

    @property
    def ports(self) -> set[int]:
        return set(self.ready)

    def status(self) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("status\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def answered_since(self, when: float) -> bool:
        """Every connection got an answer after ``when`` (monotonic) and none failed."""
        return all(c["error"] is None and c["last"] > when for c in self.status())

    def stop(self) -> list[dict[str, Any]]:
        out, _ = self.proc.communicate("stop\n", timeout=60)
        return json.loads(out.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # conns.py needs the standard library only
    return env


def failed(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in results if c["error"] is not None]
