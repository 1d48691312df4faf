"""Watch a key prefix and never miss a change, across etcd restarts and compactions.

:class:`PrefixWatch` yields a :class:`Snapshot` first, then batches of
:class:`Change`. After a broken stream it resumes from the last revision it delivered
+ 1; if that revision has been compacted away it reloads the prefix and yields a fresh
:class:`Snapshot` (consumers replace their whole view).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from etcd3aio import prefix_range_end
from etcd3aio._protobuf import WatchCreateRequest, WatchRequest, WatchStub

from .client import KV, Etcd, EtcdAuthError, EtcdUnavailable

log = logging.getLogger(__name__)

PUT, DELETE = 0, 1


@dataclass(frozen=True)
class Snapshot:
    """Every key under the prefix at ``revision``."""

    items: dict[str, KV]
    revision: int


@dataclass(frozen=True)
class Change:
    """One key changed at ``revision``; ``kv`` is None for a delete."""

    key: str
    kv: KV | None
    revision: int


@dataclass
class WatchStats:
    reconnects: int = 0
    reloads: int = 0
    events: int = 0


@dataclass
class PrefixWatch:
    """Resumable watch of every key under ``prefix``.

    Iterate with ``async for update in watch:``; each update is a Snapshot or a
    list of Change (one etcd revision's worth or more, in order).
    """

    etcd: Etcd
    prefix: str
    min_backoff: float = 0.05
    max_backoff: float = 2.0
    revision: int = 0
    stats: WatchStats = field(default_factory=WatchStats)

    def __aiter__(self) -> AsyncIterator[Snapshot | list[Change]]:
        return self._run()

    async def _run(self) -> AsyncIterator[Snapshot | list[Change]]:
        backoff = self.min_backoff
        need_snapshot = True
        while True:
            try:
                if need_snapshot:
                    kvs, rev = await self.etcd.scan(self.prefix)
                    self.revision = rev
                    need_snapshot = False
                    yield Snapshot({kv.key: kv for kv in kvs}, rev)
                async for batch in self._stream():
                    backoff = self.min_backoff
                    if batch is None:  # compacted: our revision is gone
                        need_snapshot = True
                        self.stats.reloads += 1
                        log.warning("watch %s: revision %d compacted, reloading",
                                    self.prefix, self.revision + 1)
                        break
                    yield batch
            except (EtcdUnavailable, grpc.aio.AioRpcError) as exc:
                self.stats.reconnects += 1
                log.warning("watch %s: %s; retrying in %.2fs from revision %d",
                            self.prefix, _brief(exc), backoff, self.revision + 1)
            except EtcdAuthError:
                raise
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _stream(self) -> AsyncIterator[list[Change] | None]:
        """One watch stream from ``revision + 1``; yields None if that was compacted."""
        stub = WatchStub(self.etcd.channel())
        create = WatchCreateRequest(
            key=self.prefix.encode(),
            range_end=prefix_range_end(self.prefix),
            start_revision=self.revision + 1,
        )
        stop = asyncio.Event()

        async def requests() -> AsyncIterator[Any]:
            yield WatchRequest(create_request=create)
            await stop.wait()

        call = stub.Watch(requests(), metadata=self.etcd.metadata)
        try:
            async for resp in call:
                if resp.compact_revision:
                    yield None
                    return
                if resp.canceled:
                    raise EtcdUnavailable(f"watch canceled by etcd: {resp.cancel_reason}")
                if not resp.events:
                    continue
                changes = []
                for ev in resp.events:
                    kv = KV.from_pb(ev.kv)
                    changes.append(Change(kv.key, kv if ev.type == PUT else None,
                                          kv.mod_revision))
                self.revision = changes[-1].revision
                self.stats.events += len(changes)
                yield changes
            raise EtcdUnavailable("watch stream ended")
        finally:
            stop.set()
            call.cancel()


def _brief(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)
