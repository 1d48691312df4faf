"""Connection state sync at the role transitions (nftables data plane, conntrackd).

The order is what keeps connections (docs/conntrack-sync.md):

* becoming active: ``conntrackd -c`` commits the external cache (the states the old active
  sent us) into our kernel **before** the VIPs are added (:meth:`ConntrackSync.activate`,
  awaited by pulse before it acquires the VIPs), bounded by ``commit_bound``; then, in the
  background, ``-f`` (flush both caches), ``-R`` (our kernel table into the internal cache)
  and ``-B`` (a bulk send to the backups), as conntrackd's primary-backup.sh does;
* becoming backup: ``-t`` (the kernel's entries expire after PurgeTimeout, so a later
  takeover does not clash with stale ones) and ``-n`` (ask the active for a resync);
* conntrackd (re)started: as backup ``-n``; as active ``-R`` and ``-B``.

No failure here changes the role: without conntrackd the router serves new connections as
before and established ones may be reset at a failover, which is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cluster.model import LvsConfig

from ..subproc import communicate
from .config import SyncConfigError, SyncSettings, local_address, render, settings
from .daemon import CommandResult, Conntrackd

INF = float("inf")

log = logging.getLogger(__name__)

#: Longest wait for the commit before the VIPs are added anyway (seconds). conntrackd
#: commits about 115,000 entries a second here (100k in 0.86 s, docs/benchmarks.md), so a
#: full conntrack table of the kernel's default size (262,144) takes about 2.3 s; the bound
#: leaves twice that. A commit still running past it is a daemon in trouble, and a longer
#: wait keeps every client of the VIPs waiting: the VIPs go up, the commit goes on in
#: conntrackd, and connections whose state is not in the kernel yet when their next packet
#: arrives may be reset.
COMMIT_BOUND = 5.0
COMMIT_HARD = 60.0  # the commit client is killed after this
RESOLVE_EVERY = 5.0  # seconds between looks for the sync link while it is missing
CONNTRACK_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")


@dataclass
class SyncStats:
    """Counters of the transitions (the daemon's own are in ``Conntrackd.stats``)."""

    commits: dict[str, int] = field(default_factory=lambda: {
        "ok": 0, "failed": 0, "timeout": 0, "skipped": 0})
    commit_seconds: float = 0.0  # the newest commit, as we waited for it
    commit_seconds_max: float = 0.0
    resync_requests: int = 0  # -n sent
    config_error: str = ""  # why sync cannot run with this config ("" if it can)


class ConntrackSync:
    """conntrackd for one router: one daemon per peer (their configs from lvs.cf), their
    processes, the transitions."""

    def __init__(self, node: str, state_dir: Path, *, binary: str = "conntrackd",
                 commit_bound: float = COMMIT_BOUND, external_cache: bool = True,
                 netns: str | None = None) -> None:
        self.node = node
        self.binary = binary
        self.netns = netns  # a named network namespace to work in (tests; None: ours)
        self.state_dir = state_dir
        self.commit_bound = commit_bound
        self.external_cache = external_cache
        self.stats = SyncStats()
        self.settings: tuple[SyncSettings, ...] = ()
        self.daemons: dict[str, Conntrackd] = {}  # by peer
        self.active = False
        self._cfg: LvsConfig | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._supervisors: dict[str, asyncio.Task[None]] = {}
        self._handled: dict[str, int] = {}  # the daemon start brought up to date, by peer
        self._wake = asyncio.Event()  # a new config, or a daemon came up or went down
        self._pending = False
        self.resolved = asyncio.Event()  # set once the newest config was applied
        self.warmup = 10.0  # lvs.cf sync_warmup
        self._resynced: dict[str, tuple[int, float]] = {}  # peer -> (daemon start, when)

    @property
    def enabled(self) -> bool:
        return bool(self.settings)

    def up(self) -> list[Conntrackd]:
        """The daemons running now."""
        return [d for d in self.daemons.values() if d.up]

    # -- configuration ----------------------------------------------------------------

    def configure(self, cfg: LvsConfig | None) -> None:
        """Sync as ``cfg`` says (None: no sync, e.g. the IPVS data plane); applied by
        :meth:`run`."""
        self._cfg = cfg
        if cfg is not None:
            self.warmup = cfg.sync_warmup
        self._pending = True
        self._wake.set()

    async def _resolve(self) -> None:
        """Settings from the config and the link holding our sync address; the daemons
        follow them (one started or stopped per peer that came or went)."""
        cfg, new = self._cfg, ()
        error = ""
        self._pending = False
        if cfg is not None:
            try:
                local = local_address(cfg, self.node)
                if local is not None:
                    iface = await interface_of(str(local), self.netns)
                    if iface is None:
                        raise SyncConfigError(f"connection sync: no interface holds this "
                                              f"router's sync address {local}")
                    new = settings(cfg, self.node, interface=iface,
                                   state_dir=self.state_dir, hash_limit=hash_limit(),
                                   external_cache=self.external_cache)
            except SyncConfigError as exc:
                error = str(exc)
        if error and error != self.stats.config_error:
            log.error("%s: connection state is not synced", error)
        self.stats.config_error = error
        if new != self.settings:
            self.settings = new
            if new:
                log.info("connection sync: conntrackd over %s from %s to %s", new[0].interface,
                         new[0].local, ", ".join(f"{s.peer_name} {s.peer}:{s.port}"
                                                 for s in new))
            await self._apply({s.peer_name: s for s in new})
        self.resolved.set()

    async def _apply(self, wanted: dict[str, SyncSettings]) -> None:
        for peer in [p for p in self.daemons if p not in wanted]:
            task = self._supervisors.pop(peer)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.daemons.pop(peer).close()
            self._handled.pop(peer, None)
        for peer, s in wanted.items():
            daemon = self.daemons.get(peer)
            if daemon is None:
                daemon = self.daemons[peer] = Conntrackd(self.binary, netns=self.netns)
                daemon.changed = self._wake
                self._supervisors[peer] = asyncio.create_task(daemon.run(),
                                                              name=f"conntrackd-{peer}")
            daemon.configure(render(s), s.config_path)

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Supervise the daemons; after every (re)start, bring each up to date with our
        role."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RESOLVE_EVERY)
                self._wake.clear()
                try:
                    if self._pending or self.stats.config_error:  # (the address may be up)
                        await self._resolve()
                    for peer, daemon in list(self.daemons.items()):
                        if daemon.up and daemon.stats.starts != self._handled.get(peer):
                            self._handled[peer] = daemon.stats.starts
                            await self._after_start(daemon)
                except Exception:  # never stop the agent for state sync
                    log.exception("connection sync")
                    await asyncio.sleep(RESOLVE_EVERY)
        finally:
            await self._apply({})

    async def _after_start(self, daemon: Conntrackd) -> None:
        async with self._lock:
            if self.active:
                await daemon.command("-R")
                await daemon.command("-B")
            else:
                await self._request_resync(daemon)

    async def _request_resync(self, daemon: Conntrackd) -> None:
        if (await daemon.command("-n")).ok:
            self.stats.resync_requests += 1
            for peer, d in self.daemons.items():
                if d is daemon:
                    self._resynced[peer] = (daemon.stats.starts, time.monotonic())

    def warm_at(self) -> float:
        """The preemption gate's measure (agent/dataplane/warmth.py): a backup's table is
        warm ``sync_warmup`` seconds after every peer's daemon, running since, asked the
        active for a resync. -inf with no sync or as the active; inf while a daemon is down
        or has not asked yet (the gate stays shut: preempting would reset connections)."""
        if not self.enabled or self.active:
            return -INF
        times = []
        for peer, daemon in self.daemons.items():
            asked = self._resynced.get(peer)
            if not daemon.up or asked is None or asked[0] != daemon.stats.starts:
                return INF
            times.append(asked[1] + self.warmup)
        return max(times, default=INF)

    # -- transitions ------------------------------------------------------------------

    async def activate(self, until: Callable[[], float] | None = None) -> None:
        """Becoming active: the synced state into the kernel, before the VIPs (awaited).

        Waits at most ``commit_bound`` seconds, and never past ``until()`` (monotonic: the
        end of the licence to add the VIPs, asked only when there is a commit to wait for;
        the commit then goes on in the background).
        """
        self.active = True
        if not self.enabled:
            return
        daemons = self.up()
        if len(daemons) < len(self.daemons):
            down = [p for p, d in self.daemons.items() if not d.up]
            log.warning("conntrackd for %s is not running (%s): taking over without the "
                        "connection state it holds; those connections may be reset",
                        ", ".join(down), "; ".join(self.daemons[p].stats.last_error
                                                   or "starting" for p in down))
            if not daemons:  # (some up: their commit counts, ok or not)
                self.stats.commits["skipped"] += 1
                return
        start = time.monotonic()
        bound = self.commit_bound if until is None else \
            max(0.0, min(self.commit_bound, until() - start))
        commit = asyncio.create_task(self._commit(daemons))
        done, _ = await asyncio.wait({commit}, timeout=bound)  # the lock too
        if done:
            self._commit_done(all(r.ok for r in commit.result()), time.monotonic() - start)
        else:
            self.stats.commits["timeout"] += 1
            log.error("conntrackd commit still running after %.1f s (%s): adding the VIPs "
                      "now; connections whose state is not in the kernel yet may be reset",
                      bound, "the bound" if bound == self.commit_bound else
                      "the licence ends")
        self._spawn(self._after_commit(commit, daemons, start, done=bool(done)))

    async def _commit(self, daemons: list[Conntrackd]) -> list[CommandResult]:
        """Every peer's external cache into the kernel, at once (only the old active's
        holds much)."""
        async with self._lock:
            return list(await asyncio.gather(
                *(d.command("-c", within=COMMIT_HARD) for d in daemons)))

    def _commit_done(self, ok: bool, took: float) -> None:
        self.stats.commits["ok" if ok else "failed"] += 1
        self.stats.commit_seconds = took
        self.stats.commit_seconds_max = max(self.stats.commit_seconds_max, took)
        if ok:  # (conntrackd logs how many entries: "conntrackd: Committed N ...")
            log.info("conntrackd: the synced connection state is in the kernel (commit: "
                     "%.1f ms): adding the VIPs", took * 1000)

    async def _after_commit(self, commit: asyncio.Task[list[CommandResult]],
                            daemons: list[Conntrackd], start: float, done: bool) -> None:
        results = await commit
        if not done:
            self.stats.commit_seconds = time.monotonic() - start
            self.stats.commit_seconds_max = max(self.stats.commit_seconds_max,
                                                self.stats.commit_seconds)
            log.warning("conntrackd commit ended after %.1f s (%s)",
                        self.stats.commit_seconds,
                        "ok" if all(r.ok for r in results) else "failed")
        async with self._lock:
            for daemon in daemons:
                if not self.active:
                    return
                for step in ("-f", "-R", "-B"):  # flush caches, kernel -> internal, bulk
                    if not (await daemon.command(step)).ok:
                        break

    def deactivate(self) -> None:
        """Becoming backup (returns at once; the steps run in order in the background)."""
        was, self.active = self.active, False
        if was and self.enabled:
            self._spawn(self._backup_steps())

    async def _backup_steps(self) -> None:
        async with self._lock:
            daemons = self.up()
            if self.active or not daemons:
                return
            await daemons[0].command("-t")  # the kernel's entries expire (PurgeTimeout)
            for daemon in daemons:
                await self._request_resync(daemon)

    def _spawn(self, coro: object) -> None:
        task = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._apply({})


async def interface_of(address: str, netns: str | None = None) -> str | None:
    """The link in our network namespace (or ``netns``) that holds ``address`` (None: none
    does, or ``ip`` failed)."""
    argv = ["ip", *(["-n", netns] if netns else []), "-j", "addr", "show"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await communicate(proc, 10)
        links = json.loads(out or b"[]")
    except (OSError, TimeoutError, ValueError) as exc:
        log.warning("connection sync: cannot list addresses: %s", exc)
        return None
    for link in links:
        for addr in link.get("addr_info", ()):
            if addr.get("local") == address:
                return str(link.get("ifname"))
    return None


def hash_limit() -> int:
    """conntrackd's HashLimit: twice the kernel's nf_conntrack_max, as its manual advises."""
    try:
        return 2 * int(CONNTRACK_MAX.read_text().strip())
    except (OSError, ValueError):
        return 524288
