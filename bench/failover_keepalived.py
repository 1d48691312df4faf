"""The keepalived baseline: VRRP at its defaults moves the VIP, our nftables DNAT forwards.

The lab's routers run a ``sleep`` stand-in instead of pulse; every router gets the same
nftables table the agent would program (all real servers up, :func:`program_dataplane`)
and one keepalived process (VRRP only) with its own config and pid files
(:class:`Keepalived`). The only difference from a pulse run is who moves the VIP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from pathlib import Path

from agent.dataplane.desired import Health, desired_table
from agent.dataplane.nft import NftBackend
from agent.dataplane.table import diff
from lvslab import Lab, LabError
from lvslab.config_file import read_config
from lvslab.netns import sh

STAND_IN = ["sleep", "infinity"]
PRIORITIES = (250, 200, 150, 100, 90, 80, 70, 60, 50)  # r1 first, as the lab's lvs.cf
VRID = 51


def keepalived_conf(router: str, priority: int, vip: str, vip_len: int, gateway: str,
                    gw_len: int, advert_int: float = 1.0, version: int = 2) -> str:
    """One VRRP instance, at keepalived's defaults unless told (advert_int 1, preemption,
    VRRPv2).

    The VIP on eth0 and the nat_router address on eth1 (the real servers' gateway) move
    together, as pulse moves them. Below one second ``version`` must be 3: VRRPv2 carries
    whole seconds, VRRPv3 centiseconds (RFC 5798; keepalived rounds to 10 ms).
    """
    if version == 2 and advert_int != int(advert_int):
        raise ValueError(f"VRRPv2 advert_int must be whole seconds, not {advert_int:g}")
    if version == 3 and not 0.01 <= advert_int <= 40.95:
        raise ValueError(f"VRRPv3 advert_int must be 0.01..40.95 s, not {advert_int:g}")
    return f"""# keepalived baseline for the failover benchmark (router {router})
global_defs {{
    router_id {router}
    enable_script_security
    vrrp_version {version}
}}

vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id {VRID}
    priority {priority}
    advert_int {advert_int:g}
    virtual_ipaddress {{
        {vip}/{vip_len} dev eth0
        {gateway}/{gw_len} dev eth1
    }}
}}
"""


def program_dataplane(lab: Lab) -> int:
    """Program the agent's nftables DNAT (every real server up) in every router; services."""
    _, cfg = read_config(lab.config_path)
    health = {(v.name, s.name): Health("up") for v in cfg.virtuals for s in v.servers}
    want = desired_table(cfg, health, {})
    logging.getLogger("agent.dataplane.nft").setLevel(logging.ERROR)  # "no wlc" is known

    async def apply(ns: str) -> None:
        backend = NftBackend(netns=ns, compact_delay=None)
        try:
            await backend.apply(diff(await backend.read(), want))
        finally:
            backend.close()

    for router in lab.routers:
        asyncio.run(apply(lab.ns(router)))
    return len(want)


class Keepalived:
    """One keepalived (VRRP only, no fork) per router namespace, files in ``workdir``."""

    def __init__(self, lab: Lab, workdir: Path, advert_int: float = 1.0,
                 version: int = 2) -> None:
        self.lab = lab
        self.dir = workdir / "keepalived"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        topo = lab.topology
        for i, router in enumerate(lab.routers):
            conf = keepalived_conf(router, PRIORITIES[i], lab.vip, topo.prefixlen("public"),
                                   lab.gateway, topo.prefixlen("private"),
                                   advert_int=advert_int, version=version)
            self._path(router, "conf").write_text(conf)

    def _path(self, router: str, what: str) -> Path:
        return self.dir / f"{router}.{what}"

    def command(self, router: str) -> list[str]:
        return ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
                "--vrrp", "--dont-respawn",
                "-f", str(self._path(router, "conf")), "-p", str(self._path(router, "pid")),
                "-r", str(self._path(router, "vrrp.pid")),
                "-c", str(self._path(router, "checkers.pid"))]

    def start(self, router: str) -> None:
        if router in self.procs and self.procs[router].poll() is None:
            raise LabError(f"keepalived already runs on {router}")
        with open(self._path(router, "log"), "ab") as log:
            self.procs[router] = self.lab.popen(router, *self.command(router),
                                                stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT)

    def start_all(self) -> None:
        for router in self.lab.routers:
            self.start(router)

    def kill(self, router: str) -> None:
        """SIGKILL every keepalived process in ``router``'s namespace (parent and VRRP child)."""
        proc = self.procs.pop(router, None)
        out = sh("ip", "netns", "pids", self.lab.ns(router), check=False).stdout
        for pid in (int(p) for p in out.split() if p.isdigit()):
            if _comm(pid) == "keepalived":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        # Stale after SIGKILL: a restart soon after (fast timers) may find the killed VRRP
        # child not yet reaped and refuse to start ("daemon is already running").
        for what in ("pid", "vrrp.pid", "checkers.pid"):
            self._path(router, what).unlink(missing_ok=True)

    def crash(self, router: str) -> None:
        """Links down, then SIGKILL keepalived (its VRRP child too) and the stand-in."""
        self.lab.kill(router, link_down=True)
        self.kill(router)

    def restart(self, router: str) -> None:
        """After a crash: drop the VIPs SIGKILL left behind, links up, keepalived again."""
        topo = self.lab.topology
        for addr, dev in ((f"{self.lab.vip}/{topo.prefixlen('public')}", "eth0"),
                          (f"{self.lab.gateway}/{topo.prefixlen('private')}", "eth1")):
            self.lab.exec(router, "ip", "addr", "del", addr, "dev", dev)
        self.lab.start(router)
        self.start(router)

    def stop_all(self) -> None:
        for router in list(self.procs):
            self.kill(router)

    def log_tail(self, router: str, lines: int = 20) -> list[str]:
        try:
            return self._path(router, "log").read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
