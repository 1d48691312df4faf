"""What this node knows about its peers, from accepted heartbeats and its own sends. No I/O.

Every time is monotonic seconds supplied by the caller (the ``now`` arguments), so the
table is driven entirely by its inputs and tests can run it on a fake clock.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from agent.heartbeat.packet import Ack, Heartbeat, Incarnation, Role


@dataclass(frozen=True)
class PeerAlive:
    """A peer is heard again (or for the first time)."""

    peer: str
    at: float


@dataclass(frozen=True)
class PeerDead:
    """No valid heartbeat from ``peer`` for ``deadtime`` seconds (``at`` = deadline)."""

    peer: str
    at: float
    last_heard: float


@dataclass(frozen=True)
class PeerRestarted:
    """A peer we knew sent a heartbeat of a new incarnation (it restarted)."""

    peer: str
    at: float
    incarnation: Incarnation


@dataclass(frozen=True)
class PeerStatus:
    """A peer's claimed role, term or etcd reachability changed (or was first heard)."""

    peer: str
    at: float
    role: Role
    term: int
    etcd_ok: bool


Change = PeerAlive | PeerDead | PeerRestarted | PeerStatus


@dataclass(frozen=True)
class ActiveClaim:
    """``peer`` claimed to be active under ``term`` in a heartbeat received at ``at``."""

    peer: str
    term: int
    at: float


@dataclass(frozen=True)
class PeerView:
    """Snapshot of one peer as last heard."""

    name: str
    incarnation: Incarnation
    seq: int  # newest seq received from it (this incarnation)
    role: Role
    term: int
    etcd_ok: bool
    last_heard: float
    address: str | None  # source address of the newest packet
    acked_seq: int | None  # newest of OUR seqs it acknowledged
    links: Mapping[str, float]  # source address -> when last heard from there


class SendHistory:
    """Ring buffer of (seq, monotonic send time) of our own heartbeats, seqs ascending."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("send history size must be at least 1")
        self._seqs: deque[int] = deque(maxlen=size)
        self._times: deque[float] = deque(maxlen=size)

    def add(self, seq: int, at: float) -> None:
        if self._seqs and seq <= self._seqs[-1]:
            raise ValueError(f"sequence must increase: {seq} after {self._seqs[-1]}")
        self._seqs.append(seq)
        self._times.append(at)

    def time_of(self, seq: int) -> float | None:
        """Send time of ``seq``, or None if it is unknown or fell out of the buffer."""
        i = bisect.bisect_left(self._seqs, seq)
        if i < len(self._seqs) and self._seqs[i] == seq:
            return self._times[i]
        return None

    @property
    def newest(self) -> int:
        return self._seqs[-1] if self._seqs else 0


@dataclass
class _Peer:
    incarnation: Incarnation
    seq: int
    role: Role
    term: int
    etcd_ok: bool
    last_heard: float
    address: str | None
    acked_seq: int | None = None
    links: dict[str, float] = field(default_factory=dict)


class PeerTable:
    """Liveness, claims and acknowledgements of the configured peers of ``node``."""

    def __init__(
        self,
        node: str,
        incarnation: Incarnation,
        peers: Iterable[str],
        deadtime: float,
        history: int = 1024,
    ) -> None:
        self.node = node
        self.incarnation = incarnation
        self.deadtime = deadtime
        self.peers: tuple[str, ...] = tuple(sorted(set(peers) - {node}))
        self._state: dict[str, _Peer] = {}
        self._alive: set[str] = set()  # peers we last reported alive
        self._history = SendHistory(history)
        self._last_claim: ActiveClaim | None = None

    # --- inputs ---------------------------------------------------------------------------

    def sent(self, seq: int, at: float) -> None:
        """Record that we sent our heartbeat ``seq`` at ``at``."""
        self._history.add(seq, at)

    def received(self, now: float, hb: Heartbeat, address: str | None = None) -> list[Change]:
        """Take an accepted heartbeat from a peer; return the changes it causes."""
        name = self._known(hb.node)
        old = self._state.get(name)
        changes: list[Change] = []
        if old is not None and name in self._alive and now - old.last_heard >= self.deadtime:
            self._alive.discard(name)
            changes.append(PeerDead(name, old.last_heard + self.deadtime, old.last_heard))
        status = (hb.role, hb.term, hb.etcd_ok)
        if old is None or old.incarnation != hb.incarnation:
            if old is not None:
                changes.append(PeerRestarted(name, now, hb.incarnation))
            peer = _Peer(hb.incarnation, hb.seq, *status, now, address)
            self._state[name] = peer
            newest = status_changed = True
        else:
            peer = old
            peer.last_heard, peer.address = now, address
            # A packet overtaken by a newer one (other link) proves liveness, but its
            # status is outdated: never let it roll the peer's role or term back.
            newest = hb.seq > peer.seq
            status_changed = newest and (peer.role, peer.term, peer.etcd_ok) != status
            if newest:
                peer.seq = hb.seq
                peer.role, peer.term, peer.etcd_ok = status
        if name not in self._alive:
            self._alive.add(name)
            changes.append(PeerAlive(name, now))
        if status_changed:
            changes.append(PeerStatus(name, now, *status))
        ack = hb.acks.get(self.node)
        if ack and ack.nonce == self.incarnation.nonce and ack.seq <= self._history.newest:
            peer.acked_seq = max(peer.acked_seq or 0, ack.seq)
        if address is not None:
            peer.links[address] = now
        if newest and hb.role == "active":
            self._last_claim = ActiveClaim(name, hb.term, now)
        return changes

    def tick(self, now: float) -> list[Change]:
        """Report peers whose deadtime ran out since the last call."""
        changes: list[Change] = []
        for name in sorted(self._alive):
            heard = self._state[name].last_heard
            if now - heard >= self.deadtime:
                self._alive.discard(name)
                changes.append(PeerDead(name, heard + self.deadtime, heard))
        return changes

    def next_deadline(self) -> float | None:
        """When the next peer reported alive will be dead if nothing arrives (or None)."""
        times = [self._state[n].last_heard + self.deadtime for n in self._alive]
        return min(times, default=None)

    # --- queries --------------------------------------------------------------------------

    def alive(self, peer: str, now: float) -> bool:
        """True if a valid heartbeat from ``peer`` arrived less than ``deadtime`` ago."""
        state = self._state.get(self._known(peer))
        return state is not None and now - state.last_heard < self.deadtime

    def alive_peers(self, now: float) -> frozenset[str]:
        return frozenset(p for p in self.peers if self.alive(p, now))

    def last_heard(self, peer: str) -> float | None:
        """Monotonic time of the newest valid heartbeat from ``peer``, if any."""
        state = self._state.get(self._known(peer))
        return None if state is None else state.last_heard

    def view(self, peer: str) -> PeerView | None:
        """Everything known about ``peer`` (None if never heard)."""
        s = self._state.get(self._known(peer))
        if s is None:
            return None
        return PeerView(
            peer,
            s.incarnation,
            s.seq,
            s.role,
            s.term,
            s.etcd_ok,
            s.last_heard,
            s.address,
            s.acked_seq,
            MappingProxyType(dict(s.links)),
        )

    def last_active_claim(self) -> ActiveClaim | None:
        """The newest heartbeat, from any peer, that claimed the active role."""
        return self._last_claim

    def active_claims(self, now: float) -> dict[str, int]:
        """Alive peers whose newest heartbeat claims active, with the term they claim."""
        return {
            p: s.term for p, s in self._state.items() if s.role == "active" and self.alive(p, now)
        }

    def acked_seq(self, peer: str) -> int | None:
        """Newest of our seqs (this incarnation) that ``peer`` acknowledged."""
        state = self._state.get(self._known(peer))
        return None if state is None else state.acked_seq

    def acked_since(self, peer: str) -> float | None:
        """Send time of the newest of our heartbeats ``peer`` acknowledged.

        None if it never acknowledged one, or the acknowledged one is older than the
        send history holds.
        """
        seq = self.acked_seq(peer)
        return None if seq is None else self._history.time_of(seq)

    def all_acked_within(
        self, window: float, now: float, peers: Iterable[str] | None = None
    ) -> bool:
        """True if every peer in ``peers`` (default: all configured) acknowledged one of
        our heartbeats sent within the last ``window`` seconds. True for no peers."""
        for p in self.peers if peers is None else peers:
            since = self.acked_since(p)
            if since is None or now - since > window:
                return False
        return True

    def acks(self) -> dict[str, Ack]:
        """What to acknowledge in our next heartbeat: newest seq received from each peer."""
        return {p: Ack(s.incarnation.nonce, s.seq) for p, s in self._state.items()}

    def _known(self, peer: str) -> str:
        if peer not in self.peers:
            raise KeyError(f"{peer!r} is not a configured peer of {self.node!r}")
        return peer
