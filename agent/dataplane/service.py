"""The data plane of one router: desired state in, minimal kernel changes out.

Inputs (config, health, admin flags, role, the cluster's hash seed) arrive as they change;
one worker computes the desired table from the newest inputs and hands it to the
reconciler, so a burst of changes costs one apply. Drift is checked periodically and on
request (SIGUSR1).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from cluster.bulk import give_back, in_thread, settle
from cluster.model import LvsConfig

from ..latency import DETECT_TO_DATAPLANE, RECONCILE_DURATION
from .backend import Backend
from .desired import (
    DesiredTables,
    Health,
    ServerKey,
    midstream_protocols,
    sync_daemon,
    sync_refresh,
    timeouts,
)
from .ipvs.backend import IpvsError
from .reconcile import Reconciler
from .select import choose_backend
from .table import Table
from .warmth import SyncReceiver

log = logging.getLogger(__name__)

DRIFT_INTERVAL = 5.0
GIVE_BACK = 1000  # changes in a pass after which the C heap's free pages go back
QUIET_MAX = 10.0  # seconds :meth:`DataPlane.quiet` waits for a pass at most


class DataPlane:
    """Owns the backend; ``update()`` never blocks, ``run()`` does the work."""

    def __init__(self, kind: str = "auto", *, netns: str | None = None,
                 licensed: Callable[[], bool] = lambda: True) -> None:
        self.kind = kind
        self.netns = netns
        self.licensed = licensed  # asked right before the sync daemon starts as master
        self.warmth = SyncReceiver()  # is our connection table warm (the preemption gate)
        self.backend: Backend | None = None
        self.reconciler: Reconciler | None = None
        self._inputs: tuple[LvsConfig, Mapping[ServerKey, Health],
                            Mapping[ServerKey, str], bool, int] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # no pass under way, none due
        self._idle.set()
        self._pass_end: asyncio.Future[None] | None = None  # what quiet() waits for
        self.last_update: float | None = None  # monotonic time of the newest applied input
        self.applied = asyncio.Event()
        self._kernel_settings: tuple[object, ...] | None = None
        self._kernel_of: tuple[LvsConfig, bool] | None = None  # the inputs of those
        self._sysctls_before: dict[str, str] = {}  # sysctls we changed: their old values
        self._cause: float | None = None
        self.full_nat = False
        self.seed: int | None = None  # the hash seed of the newest inputs
        self.refused = 0  # desired tables the backend could not express
        self._drift: asyncio.Task[None] = None  # type: ignore[assignment]
        self.tables = DesiredTables()  # the desired table, rebuilt per changed virtual

    @property
    def name(self) -> str:
        return self.backend.name if self.backend is not None else self.kind

    def start(self, full_nat: bool = False) -> None:
        """Choose the backend (BackendUnavailable with a clear message if impossible)."""
        self.full_nat = full_nat
        self.backend = choose_backend(self.kind, netns=self.netns, full_nat=full_nat)
        self.reconciler = Reconciler(self.backend)
        log.info("data plane: %s%s", self.name, " (full NAT)" if full_nat else "")

    def update(self, cfg: LvsConfig, health: Mapping[ServerKey, Health],
               admin: Mapping[ServerKey, str], active: bool,
               cause: float | None = None, seed: int = 0) -> None:
        """New inputs; ``cause``: when the health change behind them was detected (epoch);
        ``seed``: the cluster's hash seed (``mh`` tables; ClusterView.hash_seed())."""
        self._inputs = (cfg, health, admin, active, seed)  # copied when taken: run()
        if cause is not None:
            self._cause = cause if self._cause is None else min(self._cause, cause)
        self._wake.set()
        self._idle.clear()  # a pass is due

    async def quiet(self, limit: float = QUIET_MAX) -> None:
        """Wait for the end of the pass under way or due, if any (``limit`` seconds at most).
        Work that can wait waits here: the health publication of a new config of 40,000
        servers competed with its own programming for the CPU (and its etcd echo with the
        backup's), and made the active serve it seconds later. A pass of one change takes
        milliseconds."""
        if self._idle.is_set():
            return
        if self._pass_end is None:  # the end of the pass under way (or due)
            self._pass_end = asyncio.get_running_loop().create_future()
        try:  # that one only: passes that follow it back to back do not hold this back
            await asyncio.wait_for(asyncio.shield(self._pass_end), limit)
        except TimeoutError:
            pass

    def request_check(self) -> None:
        if self.reconciler is not None:
            self.reconciler.request_check()

    async def run(self) -> None:
        assert self.reconciler is not None
        self._drift = asyncio.create_task(self.reconciler.run_drift_checks(DRIFT_INTERVAL))
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                try:
                    await self._pass()
                finally:
                    end, self._pass_end = self._pass_end, None
                    if end is not None and not end.done():
                        end.set_result(None)
                    if not self._wake.is_set():  # else the next pass is due already
                        self._idle.set()
        finally:
            self._drift.cancel()
            await asyncio.gather(self._drift, return_exceptions=True)

    async def _pass(self) -> None:
        """One pass: the desired table of the newest inputs, applied."""
        assert self.reconciler is not None
        if self._inputs is None:
            return
        cfg, health, admin, active, seed = self._inputs
        # Snapshots, taken here on the loop (the callers' maps change in place);
        # a burst of updates costs one copy.
        health, admin = dict(health), dict(admin)
        if seed != self.seed:
            if self.seed is not None:
                log.warning("hash seed %d -> %d: every mh table is re-made, its flows "
                            "may move", self.seed, seed)
            self.seed = seed
        if cfg.full_nat != self.full_nat:
            self._switch_full_nat(cfg.full_nat)
        try:
            # O(servers changed), but a new config of 40,000 servers is a second of
            # Python: off the event loop (only this task touches self.tables).
            table = await in_thread(self._desired, cfg, health, admin, seed)
        except ValueError as exc:
            log.error("cannot compute the data plane: %s", exc)
            return
        cause, self._cause = self._cause, None
        started = time.monotonic()
        try:
            result = await self.reconciler.set_desired(table)
        except ValueError as exc:  # this backend cannot express it: keep what runs
            self.refused += 1
            log.error("data plane %s cannot program this configuration (the running "
                      "one stays): %s", self.name, exc)
            return
        RECONCILE_DURATION.observe(time.monotonic() - started)
        if result.ops and cause is not None:
            took = time.time() - cause
            DETECT_TO_DATAPLANE.observe(took)
            log.info("data plane: %d change(s) applied %.1f ms after detection",
                     len(result.ops), took * 1000)
        elif result.ops:
            log.info("data plane: %d change(s) applied", len(result.ops))
        if len(result.ops) >= GIVE_BACK:  # a big pass freed much: hand it back
            settle()
            await in_thread(give_back)
        await self._kernel(cfg, active)
        self.last_update = time.monotonic()
        self.applied.set()

    def _desired(self, cfg: LvsConfig, health: Mapping[ServerKey, Health],
                 admin: Mapping[ServerKey, str], seed: int) -> Table:
        assert self.backend is not None
        return self.backend.programmable(self.tables.table(cfg, health, admin, seed))

    async def _kernel(self, cfg: LvsConfig, active: bool) -> None:
        """Timeouts and the connection sync daemon (IPVS only), and taking up mid-stream
        flows (stateless schedulers), when they change."""
        of = self._kernel_of
        if self._kernel_settings is not None and of is not None and of[0] is cfg \
                and of[1] == active:
            return  # the same inputs (each an O(virtuals) walk): the same settings
        self._kernel_of = (cfg, active)
        self.warmth.warmup = cfg.sync_warmup
        midstream = midstream_protocols(cfg)
        settings = (timeouts(cfg), sync_daemon(cfg, active), sync_refresh(cfg), midstream)
        if settings == self._kernel_settings or self.backend is None:
            return
        if midstream != (self._kernel_settings or (None, None, None, None))[3]:
            await self._midstream(midstream)
        self._kernel_settings = settings
        state = None
        try:
            tcp, fin, udp = settings[0]
            if any(t is not None for t in (tcp, fin, udp)):
                await self.backend.set_timeouts(tcp, fin, udp)
            state, iface, syncid = settings[1]
            if settings[2] is not None:
                await self.backend.sync_refresh(settings[2])
            if state == "master" and not self.licensed():  # asked at the instant of the act
                self._kernel_settings = None  # try again with the next update
                state = "backup"
            await self.backend.sync_daemon(state, iface, syncid)
        except (OSError, ValueError, RuntimeError, IpvsError) as exc:
            log.error("data plane kernel settings: %s", exc)
            self.warmth.failed(time.monotonic())  # the gate stays shut: nothing is received
            return
        # Only IPVS syncs connections itself; other state syncs report their own warmth.
        was = self.warmth.state
        self.warmth.observe(state if self.backend.name == "ipvs" else None, time.monotonic())
        if self.warmth.state != was:
            log.info("connection sync: %s%s", self.warmth.state,
                     f" (warm in {self.warmth.warmup:g} s)" if self.warmth.state == "backup"
                     else "")

    async def _midstream(self, protocols: frozenset[str]) -> None:
        """Let the kernel take up connections of ``protocols`` mid-stream (the sysctls the
        backend names); put back the old value of those we set that are no longer wanted."""
        assert self.backend is not None
        wanted = self.backend.midstream_sysctls(protocols)
        restore = {k: v for k, v in self._sysctls_before.items() if k not in wanted}
        if not wanted and not restore:
            return
        try:
            changed = await self.backend.set_sysctls({**wanted, **restore})
        except OSError as exc:
            log.error("data plane: cannot let the kernel take up mid-stream connections "
                      "(%s: mh/sh flows may break on failover): %s", ", ".join(wanted), exc)
            return
        for name in restore:
            log.info("data plane: %s back to %s (no mh/sh service needs it)", name,
                     self._sysctls_before.pop(name))
        for name, old in changed.items():
            if name in wanted:
                self._sysctls_before.setdefault(name, old)
                log.warning("data plane: %s was %s, now %s: a new active takes up the "
                            "connections of mh/sh services mid-stream", name, old, wanted[name])

    def _switch_full_nat(self, on: bool) -> None:
        """A new backend with masquerade on/off; its first apply adopts the kernel's table."""
        old = self.backend
        self._drift.cancel()
        self.start(full_nat=on)
        if old is not None:
            old.close()
        assert self.reconciler is not None
        self._drift = asyncio.create_task(self.reconciler.run_drift_checks(DRIFT_INTERVAL))

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
