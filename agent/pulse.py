"""The pulse agent: one router's asyncio process. Wires the parts; decides nothing itself.

Decisions are made by :class:`~agent.role.RoleMachine` from a :class:`~agent.role.World`
sampled here; this module gathers the inputs (lease, leader key, heartbeats, operator
requests), carries out the actions in order, and keeps the VIPs' lifetimes renewed while
the machine says it may.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cluster import lvscf
from cluster.bulk import give_back, hold_full_collections, in_thread
from cluster.config_follow import ConfigFollower
from cluster.documents import ConfigRefusal, EvictionVote, NodeRecord, SwitchoverRequest
from cluster.election import campaign, fenced_put, resign
from cluster.etcd.client import Etcd, EtcdAuthError, EtcdUnavailable
from cluster.etcd.lease import LeaseKeeper
from cluster.etcd.settings import EtcdSettings
from cluster.keys import Keys
from cluster.model import LvsConfig
from cluster.store import StoredConfig, now_iso
from cluster.timing import Timing

from . import __version__
from .checks import targets
from .config_gc import PartCollector
from .conntrack import ConntrackSync
from .dataplane.service import DataPlane
from .dataplane.warmth import Warmth, warm_at
from .health import HealthService
from .heartbeat import HeartbeatService, LocalState, load_secret
from .history import HistoryWriter, OldActive, Takeover, takeover_event
from .hooks import run_hook
from .inputs import etcd_ok, licence_world, sample_world
from .latency import CHECK_DURATION, ETCD_REQUEST, FAILOVER_DURATION, LEASE_REFRESH
from .registration import Registration
from .resume import Flow, Resumer, synced_flows
from .role import (
    Action,
    Activate,
    Campaign,
    Deactivate,
    Evict,
    RequestSwitchover,
    Resign,
    Role,
    RoleMachine,
    World,
)
from .sdnotify import Notifier
from .stall import Stall, StallWatch
from .topology import RouterPlan, TopologyError, plan
from .view import ClusterView
from .vip import ArpFence, VipManager
from .vip.guardian import Guardian

log = logging.getLogger(__name__)

ETCD_ERRORS = (EtcdUnavailable, EtcdAuthError)
GIVE_BACK = 1000  # servers in a new config after whose adoption the C heap's free pages go back
HOLD_FULL = 60.0  # seconds at most without full collections while a big config is taken in
#                  (the data plane's pass settles the collector sooner: cluster.bulk.settle)

#: TEST-ONLY HOOK (tests/test_agent_lab.py): with this set to N, an internal task named
#: ``test-dies`` raises N seconds after the router started, to check that pulse then hands
#: over and exits with status 1. Never set it in production.
TEST_DIES_AFTER = "PULSE_TEST_TASK_DIES_AFTER"


@dataclass(frozen=True)
class AgentOptions:
    settings: EtcdSettings
    cluster: str
    node: str
    bootstrap: Path | None = None
    dataplane: str = "auto"
    metrics_address: str | None = None
    heartbeat_key_file: str | None = None
    vip_guardian: bool = True
    state_dir: Path | None = None  # default: /run/pulse/<cluster>/<node>
    conntrackd: str = "conntrackd"  # the program (a name on PATH, or a path)
    #: Past this many real servers the metrics have no series per real server (their
    #: scrape would be megabytes): per virtual service only (docs/metrics.md). 0: no cap.
    metrics_max_servers: int = 10000

    @property
    def run_dir(self) -> Path:
        return self.state_dir or Path("/run/pulse") / self.cluster / self.node


class Pulse:
    """One router. ``await Pulse(opts).run()`` until SIGTERM; returns the exit status:
    0 after SIGTERM/SIGINT, 1 after an internal task died (so that a supervisor restarts us).
    """

    def __init__(self, opts: AgentOptions) -> None:
        self.opts = opts
        self.keys = Keys(opts.cluster)
        self.clock = time.monotonic
        self.etcd = Etcd(opts.settings)
        self.etcd.observe = lambda op, seconds: ETCD_REQUEST.labels(op).observe(seconds)
        self.kick = asyncio.Event()
        self.stopping = False
        self.notify = Notifier.from_env()  # systemd (Type=notify, WatchdogSec): no-op if absent
        self.plan: RouterPlan | None = None
        self.config: LvsConfig | None = None
        #: The config the data plane runs: the newest whose health checks are all set up.
        #: A big config's checks are set up in parts (HealthService.configure_async); the
        #: data plane meanwhile keeps the previous config, so that it takes the new one in
        #: one pass rather than a pass per part, and health changes of the servers it
        #: already runs still reach it at once.
        self.plane_config: LvsConfig | None = None
        self.machine: RoleMachine | None = None
        self.heartbeat: HeartbeatService | None = None
        self.secret = load_secret(opts.heartbeat_key_file or os.environ.get(
            "LVS_HEARTBEAT_KEY_FILE"))
        self.follower = ConfigFollower(self.etcd, self.keys, self._on_config, self._on_refused)
        self.config_refused: ConfigRefusal | None = None  # the newest stored config refused
        self.configs_refused = 0  # stored configs not adopted (metrics)
        self.stored_serial: int | None = None  # serial_no of the newest stored config seen
        self.died: str | None = None  # the internal task whose death stopped us
        self.view = ClusterView(self.etcd, self.keys, self.follower, clock=self.clock)
        self.lease: LeaseKeeper | None = None
        self.vips: VipManager | None = None
        self.guardian: Guardian | None = None
        self.stall: StallWatch | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # once running (metrics count tasks)
        self.fence: ArpFence | None = None
        self.dataplane = DataPlane(opts.dataplane, licensed=self.licensed)
        self.ctsync = ConntrackSync(opts.node, opts.run_dir / "conntrackd",
                                    binary=opts.conntrackd)
        # Whatever fills our kernel with the active's connections (the IPVS sync daemon,
        # conntrackd for nftables): preemption waits until all are warm.
        self.warmth: list[Warmth] = [self.dataplane.warmth, self.ctsync]
        self.resumer = Resumer(clock=self.clock)
        # The cluster's history: who took over and why, health transitions (never blocks).
        self.history = HistoryWriter(self.etcd, self.keys, opts.node, pruner=lambda: (
            self.machine is not None and self.machine.role is Role.ACTIVE))
        # Parts of older configs go once every router runs the current one (active only).
        self.part_collector = PartCollector(
            self.etcd, self.keys, lambda: self.view.state, lambda: self.follower.current,
            lambda: self.machine is not None and self.machine.role is Role.ACTIVE)
        self.health = HealthService(self.etcd, self.keys, opts.node, self.view,
                                    on_change=self._dataplane_update,
                                    lease=lambda: self.lease.lease_id if self.lease else None,
                                    licensed=self.licensed, history=self.history.record,
                                    quiet=self.dataplane.quiet)
        self.health.engine.on_result = (
            lambda kind, result: CHECK_DURATION.labels(kind).observe(result.elapsed))
        self._router_started = False
        self._registered: NodeRecord | None = None  # as etcd last stored it
        self.registration: Registration | None = None
        self.started_at = now_iso()
        self.started_mono = self.clock()
        self.transitions: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._vote: int | None = None
        self._hb_forward: asyncio.Task[None] | None = None
        self._hb_restart = asyncio.Lock()

    # -- life cycle -----------------------------------------------------------------------

    async def run(self) -> int:
        loop = self.loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGUSR1, self.dataplane.request_check)
        bootstrap = self._bootstrap()
        await self.etcd.connect()
        # Registered from the start: a router waiting for a config it can run says so in
        # nodes/<node> (role "starting", what it refused) and does not count as running.
        await self._ensure_lease(int(Timing().ttl))
        self.registration = Registration(self.etcd, self.keys, self.opts.node, self._node_doc,
                                         on_written=self._on_registered)
        self._spawn(self.registration.run(lambda: self.lease), "register")
        self._spawn(self.view.run(), "view")
        self._spawn(self._forward(self.view.changed, self._on_view_change), "view-kick")
        try:
            await self._wait_for_config(bootstrap)
            if self.stopping:
                return self._exit_status()
            await self._start_router()
            if TEST_DIES_AFTER in os.environ:  # test-only, see TEST_DIES_AFTER
                self._spawn(_dies_after(float(os.environ[TEST_DIES_AFTER])), "test-dies")
            await self._role_loop()
        finally:
            await self._shutdown()
        return self._exit_status()

    def _exit_status(self) -> int:
        if self.died is not None:
            log.error("exiting with status 1: internal task %s died", self.died)
            return 1
        return 0

    def request_stop(self) -> None:
        log.info("stop requested: handing over")
        self.stopping = True
        self.notify.set_stopping("handing over and stopping")
        self.kick.set()

    def _bootstrap(self) -> LvsConfig | None:
        if self.opts.bootstrap is None:
            return None
        return lvscf.load(self.opts.bootstrap)  # ConfigError: reported by main

    async def _wait_for_config(self, bootstrap: LvsConfig | None) -> None:
        """etcd's config rules; the bootstrap file only counts while etcd holds none."""
        while not self.stopping and self.config is None:
            self.notify.tick(self.clock())
            self.notify.set_status(self._waiting_status())
            if (bootstrap is not None and self.view.leader_known
                    and self.follower.current is None and self.keys.config not in self.view.kvs):
                log.info("etcd holds no config yet: using the bootstrap file %s "
                         "(not pushed)", self.opts.bootstrap)
                self._adopt(bootstrap)
                break
            self.kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.kick.wait(),
                                       min(1.0, self.notify.due_in(self.clock())))

    async def _on_config(self, stored: StoredConfig) -> None:
        self.stored_serial = stored.config.serial_no
        # The check targets of 40,000 servers are half a second of Python (pure): made off
        # the event loop before the adoption, which must run in one turn.
        cfg = stored.config
        if sum(len(v.servers) for v in cfg.virtuals) >= GIVE_BACK:
            hold_full_collections(HOLD_FULL)  # until settled, after the data plane's pass
        try:  # (the follower found it can run: this router's plan, off the loop too)
            planned = await in_thread(plan, cfg, self.opts.node, cluster=self.opts.cluster)
        except ValueError:
            planned = None  # _adopt says why
        wanted = await in_thread(targets, cfg) if self._router_started else None
        if not self._adopt(cfg, stored.source, health=wanted is None, planned=planned):
            return
        if wanted is not None and self._router_started:
            # A part at a time: 40,000 new servers would hold the loop for a second.
            await self.health.configure_async(cfg, wanted)
            if len(wanted) >= GIVE_BACK:
                await in_thread(give_back)
            if self.config is cfg:
                self.plane_config = cfg
                self._dataplane_update()
                self._configure_ctsync()

    def _on_refused(self, serial_no: int | None, reason: str) -> None:
        """A stored config we do not run: published in our node record until we adopt one."""
        self.configs_refused += 1
        if serial_no is not None:
            self.stored_serial = serial_no
            self.config_refused = ConfigRefusal(serial_no=serial_no, reason=reason)
            self._kick_registration()

    def _adopt(self, cfg: LvsConfig, source: str | None = None, *, health: bool = True,
               planned: RouterPlan | None = None) -> bool:
        """Run ``cfg`` if it can run here (False if not). ``health``: configure the health
        checks and the data plane too (else the caller does, after). ``planned``: this
        router's plan of ``cfg``, made already (it checks that ``cfg`` can run)."""
        try:
            new = planned
            if new is None:
                problems = lvscf.cannot_run(cfg, source=source)
                if problems:
                    raise TopologyError("; ".join(map(str, problems)))
                new = plan(cfg, self.opts.node, cluster=self.opts.cluster)
        except ValueError as exc:
            log.error("config serial_no %s cannot run on %s (keeping serial_no %s): %s",
                      cfg.serial_no, self.opts.node,
                      self.config.serial_no if self.config else None, exc)
            self._on_refused(cfg.serial_no, str(exc))
            return False
        old, self.plan, self.config = self.plan, new, cfg
        self.config_refused = None
        self._kick_registration()
        if self.machine is None:
            self.machine = RoleMachine(new.timing)
        else:
            self.machine.timing = new.timing
        if old is not None and old.heartbeat != new.heartbeat:
            # The running service knows the old peers only (the role loop would ask it about
            # new ones): out of use until the new one runs.
            stale, self.heartbeat = self.heartbeat, None
            self._spawn(self._restart_heartbeat(stale), "heartbeat-restart")
        if old is not None and old.vips != new.vips and self.fence is not None:
            self.fence.guard(new.vips)  # licenses none: the acquire below licenses again
        if old is not None and self.machine.role is Role.ACTIVE and old.vips != new.vips:
            self._spawn(self._acquire(), "vips-reconfigure")
        if self._router_started and health:
            self.health.configure(cfg)
            self.plane_config = cfg
            self._dataplane_update()
            self._configure_ctsync()
        self.kick.set()
        return True

    async def _start_router(self) -> None:
        assert self.plan is not None and self.config is not None
        self.dataplane.start(full_nat=self.config.full_nat)
        self._configure_ctsync()
        self._spawn(self.ctsync.run(), "conntrack-sync")
        timing = self.plan.timing
        self.stall = StallWatch(timing.margin, period=min(0.05, timing.margin / 2),
                                on_stall=self._on_stall)
        self._spawn(self.stall.run(), "stall-watch")
        self.fence = ArpFence(clock=self.clock)
        self.fence.guard(self.plan.vips)  # nothing licensed: the kernel claims no VIP yet
        self.vips = VipManager(lifetime=timing.vip_lifetime, announce=self.plan.announce,
                               licence=self.licence_end, fence=self.fence, clock=self.clock)
        if self.opts.vip_guardian:
            self.guardian = Guardian()
            await self.guardian.start()
        # Leftovers of a crashed run go before we say anything to anyone.
        removed = await self.vips.cleanup_leftovers(self.plan.vips)
        if removed.removed:
            log.warning("removed leftover VIPs from a previous run: %s",
                        ", ".join(map(str, removed.removed)))
        await self._restart_heartbeat()
        await self._ensure_lease(int(self.plan.timing.ttl))
        self.health.configure(self.config)
        self.plane_config = self.config
        self._router_started = True
        self._dataplane_update()
        self._spawn(self.dataplane.run(), "dataplane")
        self._spawn(self.health.run(), "health")
        self._spawn(self.history.run(), "history")
        self._spawn(self.part_collector.run(), "config-gc")
        self._spawn(self._renew_loop(), "vip-renew")
        self._kick_registration()
        self._on_registered()

    async def _restart_heartbeat(self, stale: HeartbeatService | None = None) -> None:
        """(Re)start the heartbeat on the current plan, one restart at a time; ``stale``: a
        service already taken out of use, stopped here."""
        assert self.plan is not None
        async with self._hb_restart:
            for old in (stale, self.heartbeat):
                if old is not None:
                    await old.stop()
            self.heartbeat = HeartbeatService(self.plan.heartbeat, self.secret,
                                              self._local_state)
            await self.heartbeat.start()
            if self._hb_forward is not None:
                self._hb_forward.cancel()
            self._hb_forward = self._spawn(self._forward(self.heartbeat.changed, None),
                                           "heartbeat-kick")

    async def _shutdown(self) -> None:
        self.notify.set_stopping()
        if self.machine is not None and self.machine.role is not Role.BACKUP:
            actions, _ = self.machine.step(self._world(stopping=True))
            await self._execute(actions)
        if self.heartbeat is not None:
            self.heartbeat.send_now()
            await asyncio.sleep(0.01)
            await self.heartbeat.stop()
        if self.lease is not None:
            await self.lease.revoke()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.vips is not None:
            await self.vips.release()
            await self.vips.close()
        if self.fence is not None:
            self.fence.remove()
        if self.guardian is not None:
            await self.guardian.close()
        await self.ctsync.close()
        self.resumer.close()
        self.dataplane.close()
        await self.etcd.close()
        self.notify.close()
        log.info("stopped")

    def _configure_ctsync(self) -> None:
        """conntrackd syncs connection state for the nftables data plane (IPVS has its own
        sync daemon): on with ``syncdaemon = 1`` (docs/conntrack-sync.md)."""
        nft = self.dataplane.name == "nftables"
        self.ctsync.configure(self.config if nft else None)

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        task.add_done_callback(self._task_done)
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """An internal task ended with an error: hand over and exit with status 1."""
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("internal task %s died: %s: %s (stopping: exit status 1)",
                      task.get_name(), type(exc).__name__, exc, exc_info=exc)
            self.died = self.died or task.get_name()
            self.request_stop()

    async def _forward(self, event: asyncio.Event, then: object) -> None:
        while True:
            await event.wait()
            event.clear()
            self.kick.set()
            if callable(then):
                then()

    def _on_view_change(self) -> None:
        if self._router_started:
            self.health.view_changed()
            self._dataplane_update()

    def _dataplane_update(self) -> None:
        """Hand the newest inputs to the data plane (it coalesces bursts)."""
        if self.plane_config is None or not self._router_started:
            return
        active = self.machine is not None and self.machine.role is Role.ACTIVE
        self.dataplane.update(self.plane_config, self.health.for_dataplane(), self.view.admin(),
                              active, cause=self.health.take_cause(),
                              seed=self.view.hash_seed())

    # -- the role loop --------------------------------------------------------------------

    async def _role_loop(self) -> None:
        assert self.machine is not None
        while True:
            self.kick.clear()
            world = self._world(stopping=self.stopping)
            actions, wake = self.machine.step(world)
            await self._execute(actions)
            await self._sync_vote(self.machine.eviction_vote(world))
            now = self.clock()
            self.notify.tick(now)  # WATCHDOG=1 from here: a stalled loop stops the pings
            if self.notify.ready and not self.stopping:
                self.notify.set_status(self._role_status())
            if self.stopping and self.machine.role is Role.BACKUP:
                return
            if actions:
                continue
            delay = min(max(0.0, wake - now), 1.0, self.notify.due_in(now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.kick.wait(), delay)

    def _world(self, stopping: bool) -> World:
        assert self.plan is not None
        return sample_world(now=self.clock(), node=self.opts.node, plan=self.plan,
                            heartbeat=self.heartbeat, lease=self.lease, view=self.view,
                            started=self.started_mono, stopping=stopping, stall=self.stall,
                            conn_warm_at=warm_at(self.warmth))

    # -- the licence, asked at the instant of every act ----------------------------------

    def licence_end(self) -> float:
        """Until when we may assert ownership (monotonic; -inf: not now). A stall not yet
        noticed is noticed here; after one, only evidence sent since counts."""
        if self.machine is None or self.machine.role is not Role.ACTIVE or self.plan is None:
            return float("-inf")
        fence = float("-inf")
        if self.stall is not None:
            self.stall.check()
            fence = self.stall.act_fence
        w = licence_world(now=self.clock(), node=self.opts.node, plan=self.plan,
                          heartbeat=self.heartbeat, lease=self.lease, stall=self.stall)
        return self.machine.licence(w, not_before=fence)

    def licensed(self) -> bool:
        return self.clock() < self.licence_end()

    def _on_stall(self, stall: Stall) -> None:
        """Ask for fresh evidence at once: a lease refresh and a heartbeat round."""
        if self.lease is not None:
            self.lease.refresh_now()
        if self.heartbeat is not None:
            self.heartbeat.send_now()
        self.kick.set()

    def _etcd_ok(self, now: float) -> bool:
        return etcd_ok(self.lease, now)

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            log.info("action: %s", action)
            try:
                await self._do(action)
            except ETCD_ERRORS as exc:
                log.warning("%s failed: %s", type(action).__name__, exc)

    async def _do(self, action: Action) -> None:
        assert self.machine is not None and self.lease is not None
        if isinstance(action, Deactivate):
            await self._release(action.reason)
        elif isinstance(action, Resign):
            deleted = await resign(self.etcd, self.keys, action.term, self.opts.node,
                                   action.reason)
            if deleted is not None:  # gone as of that revision: fresher than our watch
                self.view.observe_leader(None, deleted)
                log.info("resigned term %d (%s)", action.term, action.reason)
        elif isinstance(action, Campaign):
            if self.lease.lease_id is None:
                return
            won, key = await campaign(self.etcd, self.keys, self.opts.node, self.lease.lease_id)
            if key is not None:  # the key as etcd holds it now: fresher than our watch (a
                self.view.observe_leader(key, key.term)  # leader key is never rewritten)
            if won and key is not None:
                self.machine.won(key.term, key.lease)
                if self.machine.role is Role.ACTIVE:
                    self.health.rekeyed(key.term)
                    self._kick_registration()
                    log.info("re-took the leader key while holding the VIPs: term %d",
                             key.term)
                else:
                    self._count("candidate")
                    log.info("won the leader key: term %d", key.term)
        elif isinstance(action, Activate):
            await self._activate(action.term, action.detected)
        elif isinstance(action, RequestSwitchover):
            await self._request_switchover(action.to)
        elif isinstance(action, Evict) and await self.etcd.revoke(action.lease):
            log.warning("fast eviction: every live backup lost %s (term %d); revoked its "
                        "lease", action.node, action.term)

    async def _activate(self, term: int, detected: float | None = None) -> None:
        self._count("active")
        log.info("becoming ACTIVE (term %d)", term)
        self.health.activate(term)
        self._dataplane_update()
        # The old active's connection state into our kernel BEFORE the VIPs draw its
        # connections' packets here (bounded, never past the licence: keepalived issue #2254
        # is the race otherwise).
        await self.ctsync.activate(until=self.licence_end)
        # What the sync handed over is in the kernel now: list it while the VIPs go up.
        flows = self._spawn(self._synced_flows(), "resume-list")
        takeover = self._takeover_context(term)
        if await self._acquire() and detected is not None:
            took = self.clock() - detected
            FAILOVER_DURATION.observe(took)
            log.info("failover: VIPs up %.0f ms after the old active was judged gone",
                     took * 1000)
        self._record_takeover(term, takeover)
        self._spawn(self._resume(flows), "resume")
        if self.heartbeat is not None:
            self.heartbeat.send_now()
        assert self.config is not None
        self._spawn(run_hook("active_cmd", self.config.active_cmd, self._hook_env(term)),
                    "active_cmd")
        if self.view.switchover() is not None and self.licensed():
            await fenced_put(self.etcd, self.keys, term, {}, (self.keys.switchover,))
        self._kick_registration()

    def _takeover_context(self, term: int) -> Takeover:
        """What we know, as we take the role, of who had it and how it ended (history;
        never fails: an empty account rather than a failed takeover)."""
        try:
            return Takeover(old=self._old_active(term), key_gone=self.view.leader_gone_at,
                            released=self.view.state.released,
                            request=self.view.state.switchover)
        except Exception as exc:
            log.error("history: %s: %s", type(exc).__name__, exc)
            return Takeover()

    def _old_active(self, term: int) -> OldActive | None:
        """The router that had the role before ``term``, and what its heartbeats said."""
        prev = self.view.leader_before(term)
        hb = self.heartbeat
        claim = hb.table.last_active_claim() if hb is not None else None
        if prev is None and claim is not None and 0 < claim.term < term:
            prev = (claim.peer, claim.term)
        if prev is None:
            return None
        name, old_term = prev
        pv = hb.table.view(name) if hb is not None and name in hb.table.peers else None
        return OldActive(
            node=name, term=old_term,
            last_active=claim.at if claim is not None and (claim.peer, claim.term) == prev
            else None,
            alive=pv is not None and hb is not None and hb.alive(name),
            etcd_ok=pv.etcd_ok if pv is not None else True,
            role=pv.role if pv is not None else "")

    def _record_takeover(self, term: int, seen: Takeover) -> None:
        """The failover or switchover we just completed, into the history (never fails)."""
        try:
            event = takeover_event(node=self.opts.node, term=term, at=time.time(),
                                   vips_up=self.clock(), seen=seen)
            self.history.record(event)
            log.info("history: %s", event.encode())
        except Exception as exc:  # the history is not worth a failed takeover
            log.error("history: cannot record the takeover: %s: %s", type(exc).__name__, exc)

    async def _synced_flows(self) -> list[Flow]:
        """The connections to nudge after this takeover (none if off or not synced)."""
        cfg = self.config
        if cfg is None or not cfg.resume_connections or self.plan is None:
            return []
        plane = self.dataplane.name
        if not (self.ctsync.enabled if plane == "nftables"
                else cfg.syncdaemon and cfg.network == "nat"):
            return []
        try:
            start = self.clock()
            flows = await synced_flows(plane, {str(v.ip) for v in self.plan.vips})
            log.info("resume: %d synced connections listed in %.0f ms", len(flows),
                     (self.clock() - start) * 1000)
            return flows
        except Exception as exc:  # best effort: counted and logged, never fatal
            self.resumer.stats.error(type(exc).__name__)
            log.error("resume: cannot list the connections: %s: %s", type(exc).__name__, exc)
            return []

    async def _resume(self, listing: asyncio.Task[list[Flow]]) -> None:
        """The connections the sync gave us retransmit now, not at their next backed-off
        timeout (docs/conntrack-sync.md, "Resuming at once"). Best effort, never fatal."""
        flows = await listing
        try:
            await self.resumer.resume(flows, self.licence_end)
        except Exception as exc:  # best effort: counted and logged, never fatal
            self.resumer.stats.error(type(exc).__name__)
            log.error("resume: %s: %s", type(exc).__name__, exc)

    async def _acquire(self) -> bool:
        """Add (and announce) our VIPs; True if every one is up."""
        assert self.vips is not None and self.plan is not None
        if self.guardian is not None:  # first: should we die right after adding them
            await self.guardian.hold(self.plan.vips)
        result = await self.vips.acquire(self.plan.vips)
        if result.failed:
            log.error("could not add VIPs: %s", result.failed)
        return not result.failed

    async def _release(self, reason: str) -> None:
        assert self.vips is not None
        removal = await self.vips.release()
        log.info("released VIPs (%s): %d removed", reason, len(removal.removed))
        if self.guardian is not None:
            await self.guardian.hold(())
        self.ctsync.deactivate()
        self.health.deactivate()
        self._dataplane_update()
        self._count("backup")
        if self.heartbeat is not None:
            self.heartbeat.send_now()
        assert self.config is not None
        self._spawn(run_hook("inactive_cmd", self.config.inactive_cmd, self._hook_env(0)),
                    "inactive_cmd")
        self._kick_registration()

    async def _request_switchover(self, to: str) -> None:
        leader = self.view.leader
        if leader is None:
            return
        lease, _ = await self.etcd.grant(10)
        request = SwitchoverRequest(to=to, term=leader.term, id=uuid.uuid4().hex,
                                    by=self.opts.node, reason="preempt", at=now_iso())
        await self.etcd.put(self.keys.switchover, request.encode(), lease=lease)
        log.info("preempt: asked %s (term %d) to hand over to us", leader.node, leader.term)

    async def _sync_vote(self, term: int | None) -> None:
        """Keep ``control/evict-<me>`` equal to our fast-eviction vote (lease-bound)."""
        if term == self._vote or self.lease is None or self.lease.lease_id is None:
            return
        key = self.keys.eviction(self.opts.node)
        try:
            if term is None:
                await self.etcd.delete(key)
            else:
                leader = self.view.leader
                vote = EvictionVote(term=term, node=leader.node if leader else "", at=now_iso())
                await self.etcd.put(key, vote.encode(), lease=self.lease.lease_id)
            self._vote = term
        except ETCD_ERRORS as exc:
            log.debug("eviction vote: %s", exc)

    def _count(self, to: str) -> None:
        self.transitions[to] = self.transitions.get(to, 0) + 1

    def _hook_env(self, term: int) -> dict[str, str]:
        return {"LVS_NODE": self.opts.node, "LVS_CLUSTER": self.opts.cluster,
                "LVS_TERM": str(term)}

    # -- VIP lifetimes --------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        """Renew VIP lifetimes often, but only while the role machine allows it."""
        assert self.plan is not None and self.vips is not None
        every = self.plan.timing.vip_renew_every
        while True:
            await asyncio.sleep(every)
            if self.licensed():
                failures = await self.vips.renew()
                if failures:
                    log.warning("VIP renew failed: %s", failures)

    # -- what we tell others --------------------------------------------------------------

    def _role_name(self) -> str:
        return self.machine.role.value if self.machine else "starting"

    def _local_state(self) -> LocalState:
        role = self.machine.role if self.machine else None
        return LocalState(
            role="active" if role is Role.ACTIVE else "backup" if role else "starting",
            term=self.machine.term if self.machine else 0,
            etcd_ok=self._etcd_ok(self.clock()),
        )

    def _node_doc(self) -> NodeRecord:
        return NodeRecord(
            node=self.opts.node, role=self._role_name(),
            address=str(self.plan.me.address) if self.plan else "", pid=os.getpid(),
            version=__version__, started_at=self.started_at,
            dataplane=self.dataplane.name, etcd=True,
            term=self.machine.term if self.machine else 0,
            config_serial=self.config.serial_no if self.config else None,
            config_refused=self.config_refused,
            metrics=self.opts.metrics_address or "",
        )

    def _on_registered(self, doc: NodeRecord | None = None) -> None:
        """Joined (READY=1) once the router runs and etcd holds our record with a role."""
        self._registered = doc or self._registered
        if (self._router_started and self._registered is not None
                and self._registered.role != "starting"):
            self.notify.set_ready(self._role_status())

    def _role_status(self) -> str:
        """One line for systemd's STATUS=: role, term, config in force."""
        serial = self.config.serial_no if self.config else None
        term = self.machine.term if self.machine else 0
        return f"{self._role_name()} (term {term}, config serial_no {serial})"

    def _waiting_status(self) -> str:
        refused = self.config_refused
        why = f": refused serial_no {refused.serial_no}: {refused.reason}" if refused else ""
        return f"waiting for a config this router can run{why}"

    def _kick_registration(self) -> None:
        if self.registration is not None:
            self.registration.kick()

    async def _ensure_lease(self, ttl: int) -> None:
        """A lease of ``ttl`` seconds, refreshed on our own timer (a new one if the TTL
        changed: the old one is revoked, its keys go with it and are written again)."""
        if self.lease is not None and self.lease.ttl == ttl:
            return
        if self.lease is not None:
            await self.lease.revoke()
        self.lease = LeaseKeeper(self.etcd, ttl, interval=ttl / 4, on_change=self.kick.set,
                                 clock=self.clock)
        self.lease.observe = LEASE_REFRESH.observe
        self._spawn(self.lease.run(), "lease")


async def _dies_after(seconds: float) -> None:
    """TEST-ONLY (see TEST_DIES_AFTER): an internal task that dies."""
    await asyncio.sleep(seconds)
    raise RuntimeError(f"{TEST_DIES_AFTER}={seconds:g}: dying as the test asked")
