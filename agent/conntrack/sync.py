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
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster.model import LvsConfig

from .config import SyncConfigError, SyncSettings, local_address, render, settings
from .daemon import CommandResult, Conntrackd

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
    """conntrackd for one router: its config from lvs.cf, its process, the transitions."""

    def __init__(self, node: str, state_dir: Path, *, binary: str = "conntrackd",
                 commit_bound: float = COMMIT_BOUND, external_cache: bool = True,
                 netns: str | None = None, daemon: Conntrackd | None = None) -> None:
        self.node = node
        self.netns = netns  # a named network namespace to work in (tests; None: ours)
        self.state_dir = state_dir
        self.commit_bound = commit_bound
        self.external_cache = external_cache
        self.daemon = daemon or Conntrackd(binary, netns=netns)
        self.stats = SyncStats()
        self.settings: SyncSettings | None = None
        self.active = False
        self._cfg: LvsConfig | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._pending = False
        self.resolved = asyncio.Event()  # set once the newest config was applied

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    # -- configuration ----------------------------------------------------------------

    def configure(self, cfg: LvsConfig | None) -> None:
        """Sync as ``cfg`` says (None: no sync, e.g. the IPVS data plane); applied by
        :meth:`run`."""
        self._cfg = cfg
        self._pending = True
        self._wake.set()

    async def _resolve(self) -> None:
        """Settings from the config and the link holding our sync address; the daemon
        follows them."""
        cfg, new = self._cfg, None
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
            if new is None:
                self.daemon.configure(None, None)
            else:
                log.info("connection sync: conntrackd over %s (%s) from %s to %s",
                         new.interface, new.transport, new.local,
                         ", ".join(map(str, new.peers)))
                self.daemon.configure(render(new), new.config_path)
        self.resolved.set()

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Supervise conntrackd; after every (re)start, bring it up to date with our role."""
        supervisor = asyncio.create_task(self.daemon.run(), name="conntrackd")
        handled = 0  # the daemon start brought up to date
        try:
            while True:
                events = [asyncio.create_task(e.wait()) for e in (self.daemon.changed,
                                                                   self._wake)]
                await asyncio.wait(events, timeout=RESOLVE_EVERY,
                                   return_when=asyncio.FIRST_COMPLETED)
                for task in events:
                    task.cancel()
                self.daemon.changed.clear()
                self._wake.clear()
                try:
                    if self._pending or self.stats.config_error:  # (the address may be up)
                        await self._resolve()
                    if self.daemon.up and self.daemon.stats.starts != handled:
                        handled = self.daemon.stats.starts
                        await self._after_start()
                except Exception:  # never stop the agent for state sync
                    log.exception("connection sync")
                    await asyncio.sleep(RESOLVE_EVERY)
        finally:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)

    async def _after_start(self) -> None:
        async with self._lock:
            if self.active:
                await self.daemon.command("-R")
                await self.daemon.command("-B")
            else:
                await self._request_resync()

    async def _request_resync(self) -> None:
        if (await self.daemon.command("-n")).ok:
            self.stats.resync_requests += 1

    # -- transitions ------------------------------------------------------------------

    async def activate(self) -> None:
        """Becoming active: the synced state into the kernel, before the VIPs (awaited)."""
        self.active = True
        if not self.enabled:
            return
        if not self.daemon.up:
            self.stats.commits["skipped"] += 1
            log.warning("conntrackd is not running (%s): taking over without the old "
                        "active's connection state; its connections may be reset",
                        self.daemon.stats.last_error or "starting")
            return
        start = time.monotonic()
        commit = asyncio.create_task(self._commit())
        done, _ = await asyncio.wait({commit}, timeout=self.commit_bound)  # the lock too
        if done:
            self._commit_done(commit.result().ok, time.monotonic() - start)
        else:
            self.stats.commits["timeout"] += 1
            log.error("conntrackd commit still running after %.1f s: adding the VIPs now; "
                      "connections whose state is not in the kernel yet may be reset",
                      self.commit_bound)
        self._spawn(self._after_commit(commit, start, done=bool(done)))

    async def _commit(self) -> CommandResult:
        async with self._lock:
            return await self.daemon.command("-c", within=COMMIT_HARD)

    def _commit_done(self, ok: bool, took: float) -> None:
        self.stats.commits["ok" if ok else "failed"] += 1
        self.stats.commit_seconds = took
        self.stats.commit_seconds_max = max(self.stats.commit_seconds_max, took)
        if ok:  # (conntrackd logs how many entries: "conntrackd: Committed N ...")
            log.info("conntrackd: the synced connection state is in the kernel (commit: "
                     "%.1f ms): adding the VIPs", took * 1000)

    async def _after_commit(self, commit: asyncio.Task[CommandResult], start: float,
                            done: bool) -> None:
        result = await commit
        if not done:
            self.stats.commit_seconds = time.monotonic() - start
            self.stats.commit_seconds_max = max(self.stats.commit_seconds_max,
                                                self.stats.commit_seconds)
            log.warning("conntrackd commit ended after %.1f s (%s)",
                        self.stats.commit_seconds, "ok" if result.ok else result.output)
        async with self._lock:
            if not self.active:
                return
            for step in ("-f", "-R", "-B"):  # flush caches, kernel -> internal, bulk send
                if not (await self.daemon.command(step)).ok:
                    break

    def deactivate(self) -> None:
        """Becoming backup (returns at once; the steps run in order in the background)."""
        was, self.active = self.active, False
        if was and self.enabled:
            self._spawn(self._backup_steps())

    async def _backup_steps(self) -> None:
        async with self._lock:
            if self.active:
                return
            await self.daemon.command("-t")  # our kernel entries expire (PurgeTimeout)
            await self._request_resync()

    def _spawn(self, coro: object) -> None:
        task = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.daemon.close()


async def interface_of(address: str, netns: str | None = None) -> str | None:
    """The link in our network namespace (or ``netns``) that holds ``address`` (None: none
    does, or ``ip`` failed)."""
    argv = ["ip", *(["-n", netns] if netns else []), "-j", "addr", "show"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
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
