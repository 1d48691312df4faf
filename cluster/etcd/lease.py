"""Keep one etcd lease alive on our own timer, and know until when it certainly lives.

etcd resets a lease's TTL when it *receives* a keep-alive; we only know when we *sent* it.
So the lease is certainly alive on the server until ``send time of the last confirmed
refresh + TTL``: that is :attr:`LeaseKeeper.deadline`, on the monotonic clock. The active
router holds its VIPs only before that deadline (minus a margin).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from etcd3aio._protobuf import LeaseKeepAliveRequest, LeaseStub

from cluster.etcd.client import Etcd, EtcdAuthError, EtcdUnavailable

log = logging.getLogger(__name__)


@dataclass
class LeaseStats:
    grants: int = 0
    refreshes: int = 0
    failures: int = 0
    lost: int = 0


class LeaseKeeper:
    """Grants a lease and refreshes it every ``interval`` seconds over one keep-alive stream.

    ``on_change()`` is called whenever the lease id changes (granted, lost, re-granted) and
    whenever the deadline moves, so the caller can re-evaluate its role at once.
    """

    def __init__(self, etcd: Etcd, ttl: int, interval: float,
                 on_change: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.etcd = etcd
        self.ttl = ttl
        self.interval = interval
        self.on_change = on_change or (lambda: None)
        self.clock = clock
        self.lease_id: int | None = None
        self.granted_ttl = ttl
        self.confirmed_at: float | None = None  # send time of the newest confirmed refresh
        self.stats = LeaseStats()
        #: Called with each refresh's latency, sent to answered (seconds; metrics).
        self.observe: Callable[[float], None] | None = None
        self._stop = asyncio.Event()
        self._refresh = asyncio.Event()  # set: send a refresh now
        # The keep-alive stream goes to one member at a time (agents spread over them) and
        # moves to the next when it fails or stops answering.
        self._member = random.randrange(etcd.members)

    @property
    def deadline(self) -> float:
        """Monotonic time until which the lease certainly lives (-inf without a lease)."""
        if self.lease_id is None or self.confirmed_at is None:
            return float("-inf")
        return self.confirmed_at + self.granted_ttl

    @property
    def answer_within(self) -> float:
        """How long a refresh may go unanswered before its stream is given up."""
        return min(2 * self.interval, self.granted_ttl)

    def refresh_now(self) -> None:
        """Send a refresh at once (e.g. after a stall: the licence wants fresh evidence)."""
        self._refresh.set()

    async def run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                if self.lease_id is None:
                    await self._grant()
                await self._keep_alive()
                backoff = 0.05
            except (EtcdUnavailable, grpc.aio.AioRpcError, TimeoutError) as exc:
                self.stats.failures += 1
                self._member = (self._member + 1) % self.etcd.members
                log.debug("lease keep-alive: %s; next stream to member %d", _why(exc),
                          self._member)
            except EtcdAuthError as exc:
                self.stats.failures += 1
                log.error("lease keep-alive refused: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, self.interval)

    async def _grant(self) -> None:
        sent = self.clock()
        lease_id, ttl = await self.etcd.grant(self.ttl)
        self.lease_id, self.granted_ttl, self.confirmed_at = lease_id, ttl, sent
        self.stats.grants += 1
        log.info("lease %x granted (TTL %ds)", lease_id, ttl)
        self.on_change()

    async def _keep_alive(self) -> None:
        """One stream: send a refresh every interval, match answers to send times (FIFO)."""
        assert self.lease_id is not None
        lease_id = self.lease_id
        sent: collections.deque[float] = collections.deque()

        async def requests() -> AsyncIterator[LeaseKeepAliveRequest]:
            while not self._stop.is_set():
                self._refresh.clear()
                sent.append(self.clock())
                yield LeaseKeepAliveRequest(ID=lease_id)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._refresh.wait(), self.interval)

        stub = LeaseStub(self.etcd.channel(self._member))
        call = stub.LeaseKeepAlive(requests(), metadata=self.etcd.metadata)
        try:
            while not self._stop.is_set():
                # No answer within two intervals: the stream's member is stuck (say, cut
                # from its peers before it noticed: etcd then waits for the leader for
                # seconds). Open the next stream to the next member, while the lease
                # still has half its TTL.
                resp = await asyncio.wait_for(call.read(), self.answer_within)
                if resp is grpc.aio.EOF:
                    raise EtcdUnavailable("keep-alive stream closed")
                now = self.clock()
                at = sent.popleft() if sent else now
                self.etcd.last_ok = time.monotonic()  # the Etcd's clock (metrics)
                if self.observe is not None:
                    self.observe(now - at)
                if resp.TTL <= 0:
                    self._lose("etcd says the lease is gone")
                    return
                self.stats.refreshes += 1
                self.granted_ttl = resp.TTL
                if self.confirmed_at is None or at > self.confirmed_at:
                    self.confirmed_at = at
                self.on_change()
        finally:
            call.cancel()

    def _lose(self, why: str) -> None:
        log.warning("lease %x lost: %s", self.lease_id or 0, why)
        self.stats.lost += 1
        self.lease_id = None
        self.confirmed_at = None
        self.on_change()

    async def revoke(self) -> None:
        """Revoke the lease now (its keys vanish at once) and stop refreshing."""
        self._stop.set()
        lease_id, self.lease_id, self.confirmed_at = self.lease_id, None, None
        if lease_id is not None:
            with contextlib.suppress(EtcdUnavailable, EtcdAuthError):
                await self.etcd.revoke(lease_id)
        self.on_change()


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name} {exc.details()}"
    return str(exc)
