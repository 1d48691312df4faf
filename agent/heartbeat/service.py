"""The asyncio shell: sends our heartbeats, receives and verifies the peers', feeds the table."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.heartbeat.config import MIN_SECRET, ConfigError, HeartbeatConfig
from agent.heartbeat.links import open_sockets, pick_source
from agent.heartbeat.packet import (
    MAX_PACKET,
    REASONS,
    Ack,
    Heartbeat,
    Incarnation,
    Reason,
    Rejected,
    Role,
    encode,
)
from agent.heartbeat.table import Change, PeerTable
from agent.heartbeat.verify import Verifier

log = logging.getLogger(__name__)

READ_BURST = 64  # datagrams read per wake-up before yielding to the loop
LOG_EVERY = 10.0  # seconds between repeated warnings of one kind


@dataclass(frozen=True)
class LocalState:
    """What our heartbeats announce; the agent's state callback returns one per send."""

    role: Role
    term: int = 0
    etcd_ok: bool = False


@dataclass(frozen=True)
class Counters:
    """Plain numbers for metrics. ``dropped`` has every reason of ``REASONS``."""

    sent: int = 0
    send_errors: dict[str, int] = field(default_factory=dict)  # errno name -> count
    received: int = 0  # datagrams read
    accepted: int = 0
    dropped: dict[Reason, int] = field(default_factory=dict)
    receive_errors: int = 0
    state_errors: int = 0  # the state callback failed: that round was not sent
    # (peer the source address belongs to, or "unknown"; reason) -> count
    dropped_by_peer: dict[tuple[str, Reason], int] = field(default_factory=dict)


class _Throttle:
    """Log a kind of message at most once per LOG_EVERY seconds, with the count skipped."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warn(self, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -math.inf) < LOG_EVERY:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        skipped = self._skipped.pop(kind, 0)
        self._last[kind] = now
        suffix = f" ({skipped} more since last report)" if skipped else ""
        log.warning(msg + suffix, *args)


class HeartbeatService:
    """UDP heartbeats of this router to its peers and back.

    ``state`` is called before every send round for the role/term/etcd flag to announce.
    ``on_change`` is called with every :data:`Change`; ``changed`` is set as well (clear it
    yourself). Time queries use ``clock`` (monotonic); ``wall`` stamps packets and is the
    reference for the freshness window.
    """

    def __init__(
        self,
        config: HeartbeatConfig,
        secret: bytes,
        state: Callable[[], LocalState],
        *,
        on_change: Callable[[Change], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < MIN_SECRET:
            raise ConfigError(f"heartbeat key is {len(secret)} bytes, need at least {MIN_SECRET}")
        self.config = config
        self._secret = secret
        self._state = state
        self._on_change = on_change
        self._clock = clock
        self._wall = wall
        self.incarnation = Incarnation.new(wall())
        # Send history: every packet of the last 4 deadtimes, for acked_since().
        per_round = sum(len(a) for a in config.peers.values())
        rounds = math.ceil(4 * config.deadtime / config.keepalive) + 4
        self.table = PeerTable(
            config.node,
            self.incarnation,
            config.peers,
            config.deadtime,
            history=max(64, rounds * per_round),
        )
        self.verifier = Verifier(
            config.cluster, config.node, config.peers, secret, config.freshness
        )
        self.changed = asyncio.Event()
        self._seq = 0
        self._sent = 0
        self._send_errors: dict[str, int] = {}
        self._received = 0
        self._accepted = 0
        self._dropped: dict[Reason, int] = dict.fromkeys(REASONS, 0)
        self._dropped_by_peer: dict[tuple[str, Reason], int] = {}
        self._peer_of = {a: peer for peer, addrs in config.peers.items() for a in addrs}
        self._receive_errors = 0
        self._state_errors = 0
        self._socks: dict[str, socket.socket] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._throttle = _Throttle()
        self._last_ack_round = float("-inf")

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the sockets and start sending. Raises BindError (clear message) on failure."""
        if self._task is not None:
            raise RuntimeError("heartbeat service already started")
        loop = asyncio.get_running_loop()
        self._socks = open_sockets(self.config.local_addresses, self.config.port)
        for sock in self._socks.values():
            loop.add_reader(sock.fileno(), self._on_readable, sock)
        self._task = asyncio.create_task(self._run(), name=f"heartbeat-{self.config.node}")
        log.info(
            "heartbeat %s/%s listening on %s port %d, peers %s",
            self.config.cluster,
            self.config.node,
            ", ".join(self._socks),
            self.config.port,
            dict(self.config.peers),
        )

    async def stop(self) -> None:
        """Stop sending and close the sockets. Safe to call twice or before start."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # our own cancellation still propagates
        loop = asyncio.get_running_loop()
        for sock in self._socks.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self._socks = {}

    async def __aenter__(self) -> HeartbeatService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def send_now(self) -> None:
        """Send a round at once (e.g. right after our role changed), then keep the rhythm."""
        self._wake.set()

    # --- queries --------------------------------------------------------------------------

    def now(self) -> float:
        """The monotonic clock the table's times are on."""
        return self._clock()

    def alive(self, peer: str) -> bool:
        return self.table.alive(peer, self._clock())

    def alive_peers(self) -> frozenset[str]:
        return self.table.alive_peers(self._clock())

    def active_claims(self) -> dict[str, int]:
        return self.table.active_claims(self._clock())

    def acked_since(self, peer: str) -> float | None:
        return self.table.acked_since(peer)

    def all_acked_within(self, window: float, peers: Iterable[str] | None = None) -> bool:
        return self.table.all_acked_within(window, self._clock(), peers)

    def counters(self) -> Counters:
        return Counters(
            sent=self._sent,
            send_errors=dict(self._send_errors),
            received=self._received,
            accepted=self._accepted,
            dropped=dict(self._dropped),
            dropped_by_peer=dict(self._dropped_by_peer),
            receive_errors=self._receive_errors,
            state_errors=self._state_errors,
        )

    # --- sending --------------------------------------------------------------------------

    async def _run(self) -> None:
        keepalive = self.config.keepalive
        next_send = self._clock()
        while True:
            now = self._clock()
            try:
                if now >= next_send or self._wake.is_set():
                    self._wake.clear()
                    self._send_round()
                    next_send = max(next_send + keepalive, now)
                self._emit(self.table.tick(self._clock()))
            except Exception:  # a bug here must not end the heartbeat
                log.exception("heartbeat round failed")
                next_send = now + keepalive
            deadline = self.table.next_deadline()
            until = next_send if deadline is None else min(next_send, deadline)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, until - self._clock())):
                    await self._wake.wait()

    def _send_round(self) -> None:
        try:
            state = self._state()
        except Exception:
            self._state_errors += 1
            log.exception("heartbeat state callback failed; skipping this round")
            return
        acks = self.table.acks()
        for peer, addresses in self.config.peers.items():
            for link, address in enumerate(addresses):
                self._send_one(state, acks, peer, link, address)

    def _send_one(
        self, state: LocalState, acks: Mapping[str, Ack], peer: str, link: int, address: str
    ) -> None:
        self._seq += 1
        hb = Heartbeat(
            cluster=self.config.cluster,
            node=self.config.node,
            incarnation=self.incarnation,
            seq=self._seq,
            timestamp=self._wall(),
            role=state.role,
            term=state.term,
            etcd_ok=state.etcd_ok,
            acks=acks,
        )
        try:
            data = encode(hb, self._secret)
        except ValueError as e:
            self._state_errors += 1
            self._throttle.warn("state", "heartbeat not sent, bad local state %r: %s", state, e)
            return
        port = self.config.port
        try:
            source = pick_source(address, port, self.config.local_addresses, link)
            self.table.sent(self._seq, self._clock())
            self._socks[source].sendto(data, (address, port))
        except OSError as e:
            name = errno.errorcode.get(e.errno or 0, "OSError")
            self._send_errors[name] = self._send_errors.get(name, 0) + 1
            self._throttle.warn(
                f"send {address}", "heartbeat to %s (%s) failed: %s", peer, address, e
            )
            return
        self._sent += 1

    # --- receiving ------------------------------------------------------------------------

    def _on_readable(self, sock: socket.socket) -> None:
        for _ in range(READ_BURST):
            try:
                data, source = sock.recvfrom(MAX_PACKET + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._receive_errors += 1
                self._throttle.warn("recv", "heartbeat receive failed: %s", e)
                return
            self._received += 1
            self._handle(data, str(source[0]))

    def _handle(self, data: bytes, source: str) -> None:
        now = self._clock()
        try:
            hb = self.verifier.verify(data, now, self._wall())
        except Rejected as r:
            self._dropped[r.reason] += 1
            key = (self._peer_of.get(source, "unknown"), r.reason)
            self._dropped_by_peer[key] = self._dropped_by_peer.get(key, 0) + 1
            log.debug("heartbeat from %s dropped: %s", source, r)
            self._throttle.warn(f"drop {r.reason}", "heartbeat from %s dropped: %s", source, r)
            return
        self._accepted += 1
        self._emit(self.table.received(now, hb, source))
        # Acknowledge the active's heartbeat at once rather than on our next round: its
        # failsafe licence is only as fresh as our acknowledgements (docs/protocol.md).
        if hb.role == "active" and now - self._last_ack_round >= self.config.keepalive / 4:
            self._last_ack_round = now
            self._wake.set()

    def _emit(self, changes: list[Change]) -> None:
        if not changes:
            return
        for change in changes:
            log.info("heartbeat: %s", change)
            if self._on_change is not None:
                try:
                    self._on_change(change)
                except Exception:
                    log.exception("heartbeat change callback failed on %s", change)
        self.changed.set()
