"""The router's role as a pure function of what it knows: backup, candidate or active.

Nothing here does I/O. The pulse loop gathers a :class:`World` (lease, leader key,
heartbeat peers, requests), calls :meth:`RoleMachine.step`, and carries out the returned
:class:`Action` list in order. Safety rules (docs/protocol.md):

* ACTIVE (holds VIPs) only while licensed: before the deadline of the lease that holds its
  term's key, minus a margin, or while every other router acknowledges one of its
  heartbeats sent within the ack window (failsafe). The licence is continuous: evidence
  that arrives after it lapsed (a new lease, acknowledgements of heartbeats sent after
  the end) never revives it; the router demotes and starts over. Every act that asserts
  ownership checks the licence at that instant (:meth:`RoleMachine.licensed`).
* CANDIDATE (holds the leader key, no VIPs) becomes ACTIVE only once every active claim
  it has heard is older than the ack window plus a margin, so an old active still in
  failsafe has seen its acknowledgements go stale and released.
* BACKUP campaigns only when the leader key is absent and no peer has claimed active in
  a valid heartbeat within deadtime; lower priorities wait longer.
* A preempting BACKUP asks for the switchover only once it has been healthy for hold_down
  and its connection table is warm (``conn_warm_at``): the connections the active carries
  must be in its kernel before they move to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from cluster.timing import Timing

INF = float("inf")


class Role(StrEnum):
    BACKUP = "backup"
    CANDIDATE = "candidate"  # holds the leader key, waits before taking the VIPs
    ACTIVE = "active"


@dataclass(frozen=True)
class Peer:
    """Another configured router as this one sees it."""

    name: str
    priority: int
    eligible: bool = True  # router active = 1 in the configuration
    alive: bool = False  # a valid heartbeat within deadtime
    registered: bool = False  # its nodes/<name> key exists in etcd
    active_heard: float | None = None  # receive time of its newest heartbeat, if "active"
    active_term: int = 0
    acked_send: float | None = None  # send time of our newest heartbeat it acknowledged
    etcd_ok: bool = True  # what its newest heartbeat says about its etcd link


@dataclass(frozen=True)
class Leader:
    node: str
    term: int
    lease: int = 0


@dataclass(frozen=True)
class World:
    """Everything the role depends on, sampled at ``now`` (monotonic seconds)."""

    now: float
    me: str
    priority: int
    eligible: bool = True
    lease_deadline: float = -INF  # send time of the last confirmed refresh + TTL
    lease_sent: float = -INF  # send time of the last confirmed refresh (or the grant)
    lease: int | None = None  # our lease id
    etcd_ok: bool = False  # etcd answered recently
    leader_known: bool = False  # the leader key's state has been read at least once
    leader: Leader | None = None
    leader_absent_since: float | None = None
    last_term: int = 0  # the newest term seen in the leader key
    started_at: float = -INF  # when this agent started (it first listens for peers)
    released: Leader | None = None  # the last graceful hand-over marker (node, term)
    switchover_to: str | None = None  # a pending `lvsctl switchover --to` target ("" = any)
    switchover_term: int = 0  # the term the request was made against
    preempt: bool = False
    stopping: bool = False
    peers: tuple[Peer, ...] = ()
    evict_votes: tuple[tuple[str, int], ...] = ()  # fast eviction: (voter, term) in etcd
    stall_fence: float = -INF  # time the clock may have lost track of: older evidence is void
    # When our connection table is (or will be) warm: every connection the active carries
    # has been synced to us (IPVS sync daemon, conntrackd). -inf: warm, or nothing to sync;
    # inf: not known to be warm. Only preemption waits for it (docs/protocol.md rule 7).
    conn_warm_at: float = -INF


@dataclass(frozen=True)
class Campaign:
    """Try to create the leader key (create-if-absent, bound to our lease)."""


@dataclass(frozen=True)
class Activate:
    """Add the VIPs and announce them; we are active from now on. ``detected``: when this
    router judged the old active gone (None: there was none, e.g. a cold start); the shell
    measures the failover from it to the VIPs up (``lvs_failover_duration_seconds``)."""

    term: int
    detected: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Deactivate:
    """Remove every VIP now, before anything else."""

    reason: str


@dataclass(frozen=True)
class Resign:
    """Delete the leader key if still ours, leaving a 'released' marker (VIPs are gone)."""

    term: int
    reason: str


@dataclass(frozen=True)
class RequestSwitchover:
    """Ask the current active to hand over to us (preemption)."""

    to: str


@dataclass(frozen=True)
class Evict:
    """Fast eviction: every live backup lost the active of ``term``; revoke its lease."""

    node: str
    term: int
    lease: int


Action = Campaign | Activate | Deactivate | Resign | RequestSwitchover | Evict


@dataclass
class RoleMachine:
    """The explicit state machine; :meth:`step` is the only way it changes."""

    timing: Timing
    role: Role = Role.BACKUP
    term: int = 0  # the leader key's create revision while we hold it
    term_lease: int | None = None  # the lease our term's key is bound to
    licensed_until: float = -INF  # the continuous licence as of the last step (ACTIVE)
    resigned_at: float = -INF  # last graceful hand-over (we then defer to others)
    healthy_since: float | None = None  # preempt hold-down
    preempt_asked_at: float = -INF
    rekeying: bool = False  # an active's campaign to take its expired key back is pending
    # When this router (a backup) first judged the old active gone in the current outage:
    # its holder silent for deadtime (the fast-eviction vote) or its key gone with no fresh
    # claim. Measurement only: no decision reads it.
    detected_at: float | None = None
    reasons: list[str] = field(default_factory=list)

    # -- what the shell asks --------------------------------------------------------------

    def licence(self, w: World, not_before: float = -INF) -> float:
        """Until when this router may hold and assert VIPs (monotonic; -inf: not licensed).

        Evidence: the deadline of the lease our term's key is bound to (a new lease of ours
        proves nothing about the old term), or the failsafe. Evidence sent before
        ``not_before`` (or the world's stall fence) does not count.
        """
        fence = max(not_before, w.stall_fence)
        by_lease = -INF
        if self.term_lease is not None and w.lease == self.term_lease and w.lease_sent >= fence:
            by_lease = w.lease_deadline - self.timing.margin
        return max(by_lease, self.failsafe_until(w, fence))

    def failsafe_until(self, w: World, fence: float = -INF) -> float:
        """Failsafe licence: every other eligible router acknowledged one of our heartbeats
        sent while we were still licensed (continuity) and after ``fence``."""
        if not self.timing.failsafe_possible:
            return -INF
        acks = [p.acked_send for p in w.peers if p.eligible]
        if any(a is None for a in acks):
            return -INF
        oldest: float = min(acks, default=w.now)  # type: ignore[type-var,assignment]
        if oldest >= self.licensed_until or oldest < fence:
            return -INF
        return oldest + self.timing.window - self.timing.margin

    def licensed(self, w: World, not_before: float = -INF) -> bool:
        """May this router assert ownership (add or renew a VIP, announce it, write as the
        active) at ``w.now``? Asked at the instant of every such act."""
        return self.role is Role.ACTIVE and w.now < self.licence(w, not_before)

    def takeover_at(self, w: World) -> float:
        """Earliest time a new active may add the VIPs (every old claim stale + window)."""
        latest = -INF
        for p in w.peers:
            if p.active_heard is None:
                continue
            if w.released and w.released.node == p.name and w.released.term >= p.active_term:
                continue  # it handed over gracefully: its VIPs are gone
            latest = max(latest, p.active_heard)
        return latest + self.timing.window + self.timing.margin

    # -- the transition function ----------------------------------------------------------

    def eviction_vote(self, w: World) -> int | None:
        """Fast eviction: the term we vote to evict (its holder silent for deadtime), if any."""
        if not self.timing.fast_eviction or self.role is not Role.BACKUP or not w.etcd_ok:
            return None
        if w.leader is None or w.leader.node == w.me:
            return None
        holder = next((p for p in w.peers if p.name == w.leader.node), None)
        if holder is None or holder.alive:
            return None
        return w.leader.term

    def _evict(self, w: World) -> list[Action]:
        """Revoke the silent active's lease once every live backup has voted for its term."""
        term = self.eviction_vote(w)
        if term is None or w.leader is None:
            return []
        voters = {v for v, t in w.evict_votes if t == term}
        backups = {p.name for p in w.peers if p.registered and p.name != w.leader.node}
        if w.me not in voters or not backups <= voters:
            return []
        return [Evict(w.leader.node, term, w.leader.lease)]

    def step(self, w: World) -> tuple[list[Action], float]:
        """Advance on ``w``; return the actions to carry out (in order) and the next wake-up."""
        handler = {Role.ACTIVE: self._active, Role.CANDIDATE: self._candidate,
                   Role.BACKUP: self._backup}[self.role]
        return handler(w)

    def _mine(self, w: World) -> bool | None:
        """Is the leader key ours, on our current lease? None if we cannot tell.

        A key we created on a lease that has since been lost is not ours any more, even
        while a stale view still shows it (etcd deletes it with that lease).
        """
        if not w.leader_known:
            return None
        return (w.leader is not None and w.leader.node == w.me and w.leader.term == self.term
                and w.lease is not None and w.leader.lease == w.lease)

    def _demote(self, reason: str, resign: bool) -> list[Action]:
        actions: list[Action] = []
        if self.role is Role.ACTIVE:
            actions.append(Deactivate(reason))
        if resign and self.term:
            actions.append(Resign(self.term, reason))
        self.role = Role.BACKUP
        self.term = 0
        self.term_lease = None
        self.licensed_until = -INF
        self.healthy_since = None  # preempt hold-down starts again
        self.reasons.append(reason)
        return actions

    def _active(self, w: World) -> tuple[list[Action], float]:
        if w.stopping:
            return self._demote("shutting down", resign=True), INF
        if (w.switchover_to is not None and w.switchover_to != w.me
                and w.switchover_term == self.term):
            self.resigned_at = w.now
            return self._demote(f"switchover requested (to {w.switchover_to or 'any'})",
                                resign=True), w.now
        licence = self.licence(w)
        if w.now >= licence:
            return self._demote("licence expired (lease unconfirmed, no failsafe)",
                                resign=False), w.now
        self.licensed_until = licence
        if self._mine(w) is False and w.etcd_ok:
            if self._rekey_possible(w):
                # Our key went with a lease that expired while we held the VIPs in failsafe
                # (every peer still acknowledging us without a break). The others defer to
                # our heartbeats, so take the key again without dropping the VIPs.
                self.rekeying = True
                return [Campaign()], min(w.now + self.timing.keepalive, licence)
            return self._demote("the leader key is no longer ours", resign=False), w.now
        return [], licence

    def _candidate(self, w: World) -> tuple[list[Action], float]:
        if w.stopping:
            return self._demote("shutting down", resign=True), INF
        if self._mine(w) is False and w.etcd_ok:
            return self._demote("lost the leader key", resign=False), w.now
        licence = self.licence(w)  # the term's lease only: no failsafe before we act
        if w.now >= licence:
            return [], w.now + self.timing.keepalive  # wait for a confirmed refresh
        at = self.takeover_at(w)
        if w.now < at:
            return [], min(at, licence)
        self.role = Role.ACTIVE
        self.licensed_until = licence
        detected, self.detected_at = self.detected_at, None
        return [Activate(self.term, detected)], licence

    def won(self, term: int, lease: int) -> None:
        """The shell reports a successful campaign: ``term`` held on ``lease``."""
        if self.role is Role.ACTIVE and self.rekeying:
            self.term = term  # re-took the key while holding the VIPs: a new term, no gap
        else:
            self.role, self.term = Role.CANDIDATE, term
        self.term_lease = lease
        self.rekeying = False

    def _rekey_possible(self, w: World) -> bool:
        """The key is gone (or is our own on a lost lease), not someone else's; one try."""
        if self.rekeying:
            self.rekeying = False
            return False  # the last attempt failed: someone else holds the key
        leader = w.leader
        return leader is None or (leader.node == w.me and leader.term == self.term)

    def _backup(self, w: World) -> tuple[list[Action], float]:
        t = self.timing
        healthy = w.etcd_ok and w.now < w.lease_deadline - t.margin and w.eligible
        if not healthy:
            self.healthy_since = None
            return [], w.now + t.keepalive
        # The key is ours on our current, confirmed lease (we demoted without resigning,
        # e.g. etcd was unreachable for a while and the lease survived): resume.
        if (w.leader_known and w.leader is not None and w.leader.node == w.me
                and w.lease is not None and w.leader.lease == w.lease and not w.stopping
                and w.switchover_term != w.leader.term):
            self.won(w.leader.term, w.lease)
            return self._candidate(w)
        if self.healthy_since is None:
            self.healthy_since = w.now
        if w.stopping:
            return [], INF
        self._detect(w)
        if w.leader is not None:
            evict = self._evict(w)
            if evict:
                return evict, w.now + t.keepalive
            if self.eviction_vote(w) is not None:
                return [], w.now + t.keepalive
            return self._maybe_preempt(w)
        if not w.leader_known or w.leader_absent_since is None:
            return [], w.now + t.keepalive
        # Someone still claims active in a fresh heartbeat: not our turn.
        claims = [p.active_heard for p in w.peers if p.active_heard is not None
                  and p.alive and w.now - p.active_heard < t.deadtime
                  and not (w.released and w.released.node == p.name
                           and w.released.term >= p.active_term)]
        if claims:
            return [], max(claims) + t.deadtime  # type: ignore[type-var]
        at = w.leader_absent_since + self._campaign_delay(w)
        # Just started: hear the others first, and let a higher-priority router that is
        # still connecting to etcd get there (bounded by deadtime).
        if any(p.eligible and (not (p.alive or p.registered)
                               or (p.priority > w.priority and p.alive and not p.etcd_ok))
               for p in w.peers):
            at = max(at, w.started_at + t.deadtime)
        if w.now < at:
            return [], at
        return [Campaign()], w.now + t.keepalive

    def _detect(self, w: World) -> None:
        """Note when the old active is first judged gone (:attr:`detected_at`); forget it
        while an active is alive. Called by a healthy backup on every step."""
        t = self.timing
        if w.leader is not None:
            if w.leader.node == w.me:
                return
            holder = next((p for p in w.peers if p.name == w.leader.node), None)
            gone = holder is not None and not holder.alive
        else:
            claims = any(p.active_heard is not None and p.alive
                         and w.now - p.active_heard < t.deadtime
                         and not (w.released and w.released.node == p.name
                                  and w.released.term >= p.active_term) for p in w.peers)
            gone = w.leader_known and w.last_term > 0 and not claims
        if not gone:
            self.detected_at = None
        elif self.detected_at is None:
            self.detected_at = w.now

    def _campaign_delay(self, w: World) -> float:
        t = self.timing
        if w.switchover_to:
            if w.switchover_to == w.me:
                return 0.0
            target = next((p for p in w.peers if p.name == w.switchover_to), None)
            if target is not None and (target.alive or target.registered):
                return t.switchover_wait
        handed_over = (w.released.node if w.released and w.released.term >= w.last_term
                       else None)  # the last active resigned: it goes last this time
        rank = sum(1 for p in w.peers if p.eligible and (p.alive or p.registered)
                   and p.name != handed_over
                   and (p.priority, _neg(p.name)) > (w.priority, _neg(w.me)))
        delay = rank * t.priority_step
        if w.now - self.resigned_at < t.deadtime:
            delay += t.switchover_wait  # we just handed over: let the others go first
        return delay

    def _maybe_preempt(self, w: World) -> tuple[list[Action], float]:
        t = self.timing
        if not w.preempt or w.leader is None or w.leader.node == w.me:
            return [], INF
        holder = next((p for p in w.peers if p.name == w.leader.node), None)
        if holder is None or holder.priority >= w.priority:
            return [], INF
        since = self.healthy_since if self.healthy_since is not None else w.now
        ready = max(since + t.hold_down, w.conn_warm_at)
        if w.now < ready:
            # A time not yet known (inf) is sampled again: the shell measures it.
            return [], ready if ready < INF else w.now + t.keepalive
        if w.switchover_to == w.me or w.now - self.preempt_asked_at < t.switchover_wait:
            return [], self.preempt_asked_at + t.switchover_wait
        self.preempt_asked_at = w.now
        return [RequestSwitchover(w.me)], w.now + t.switchover_wait


def _neg(name: str) -> tuple[int, ...]:
    """Order names so that the alphabetically first one ranks higher at equal priority."""
    return tuple(-ord(c) for c in name)
