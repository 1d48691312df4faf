"""A thin asyncio etcd v3 client: etcd3aio with timeouts, auth and one-line errors.

Every call has a deadline; every failure becomes :class:`EtcdUnavailable` or
:class:`EtcdAuthError` with a message fit for an operator. Values are bytes; the typed
documents in :mod:`cluster.documents` encode and decode them. Transactions are built from
our own small types (:class:`Put`, :class:`Delete`, :class:`Get`, :class:`CreateRevision`,
:class:`ModRevision`): etcd3aio objects never leave this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from etcd3aio import (
    Etcd3Client,
    EtcdConnectionError,
    EtcdError,
    EtcdPermissionDeniedError,
    EtcdTransientError,
    EtcdUnauthenticatedError,
    SortOrder,
    SortTarget,
    prefix_range_end,
)
from etcd3aio._protobuf import Compare
from etcd3aio.kv import KVService

from .channel import LeaderChannels
from .settings import EtcdSettings

log = logging.getLogger(__name__)


# etcd 3.4 reports some auth failures as INVALID_ARGUMENT with these texts.
_AUTH_MARKERS = ("authentication failed", "user name is empty", "invalid auth token",
                 "permission denied")


SCAN_PAGE = 1000  # keys per request of a scan (a config part is at most 256 KiB)
# gRPC's default (4 MiB) is less than one watch answer may carry: etcd puts the events of
# many revisions in one (a config push of 12 batches of 1 MiB). etcd's own Go client
# accepts up to 2 GiB.
MAX_RECEIVE = 512 * 1024 * 1024


class EtcdUnavailable(Exception):
    """etcd could not be reached (or did not answer in time)."""


class EtcdAuthError(Exception):
    """etcd refused our credentials or the operation."""


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: Any) -> KV:
        return cls(
            key=kv.key.decode("utf-8", "replace"),
            value=bytes(kv.value),
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            lease=kv.lease,
        )


@dataclass(frozen=True)
class Put:
    """Transaction op: set ``key`` to ``value`` (bound to ``lease`` unless 0)."""

    key: str
    value: str | bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    """Transaction op: delete ``key``."""

    key: str


@dataclass(frozen=True)
class Get:
    """Transaction op: read ``key`` (its KV lands in :attr:`TxnResult.ranges`)."""

    key: str


Op = Put | Delete | Get


@dataclass(frozen=True)
class CreateRevision:
    """Transaction guard: ``key`` was created at ``revision`` (0: the key is absent)."""

    key: str
    revision: int


@dataclass(frozen=True)
class ModRevision:
    """Transaction guard: ``key`` was last written at ``revision``."""

    key: str
    revision: int


Guard = CreateRevision | ModRevision


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    ranges: tuple[tuple[KV, ...], ...] = ()
    """What each op of the branch that ran read: its KVs for a :class:`Get`, () otherwise."""


class Etcd:
    """One connection to an etcd cluster. Use as ``async with Etcd(settings) as etcd``."""

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        creds = settings.credentials()
        server_name = settings.server_name
        if settings.tls and server_name is None:
            server_name = settings.endpoints[0].host
        self._client = Etcd3Client(
            [e.target for e in settings.endpoints],
            tls_server_name=server_name,
            rpc_max_attempts=3,
            **creds,
        )
        # gRPC's default reconnect backoff starts at 1 s and grows to 120 s, and channels
        # share subchannels process-wide: after an etcd restart that would keep us away
        # for seconds. Reconnect fast, and keep each client's connections its own.
        options = [("grpc.max_receive_message_length", MAX_RECEIVE),
                   ("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000),
                   ("grpc.use_local_subchannel_pool", 1)]
        self._client._manager = LeaderChannels([e.target for e in settings.endpoints], options)
        self._member_channels = [LeaderChannels([e.target], options) for e in settings.endpoints]
        self._server_name = server_name
        self._refresher: Any = None
        self._connected = False
        self._members: dict[int, grpc.aio.Channel] = {}
        #: Called with (operation, seconds) after every request, failed ones too (metrics).
        self.observe: Callable[[str, float], None] | None = None
        self.last_ok: float | None = None  # monotonic time of the newest answered request

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        await self._client.connect()
        self._connected = True
        if self.settings.user:
            async with self._errors("authenticate"):
                self._refresher = self._client.token_refresher(
                    self.settings.user, self.settings.password or "", interval=120.0
                )
                await asyncio.wait_for(self._refresher.__aenter__(), self.settings.timeout)

    async def close(self) -> None:
        if self._refresher is not None:
            with contextlib.suppress(Exception):
                await self._refresher.__aexit__(None, None, None)
            self._refresher = None
        for channel in self._members.values():
            with contextlib.suppress(Exception):
                await channel.close()
        self._members.clear()
        if self._connected:
            await self._client.close()
            self._connected = False

    async def __aenter__(self) -> Etcd:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def members(self) -> int:
        """How many endpoints (members) the settings name."""
        return len(self.settings.endpoints)

    def channel(self, member: int | None = None) -> grpc.aio.Channel:
        """The round-robin channel over every endpoint, or (``member``: an index into the
        endpoints) a channel to that member alone, for a stream that must be moved off a
        member that stopped answering. For :mod:`cluster.etcd` only."""
        if member is None or self.members == 1:
            assert self._client._channel is not None, "not connected"
            return self._client._channel
        if member not in self._members:
            self._members[member] = self._member_channels[member].get_channel(
                **self.settings.credentials(), tls_server_name=self._server_name)
        return self._members[member]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """What every call sends besides :data:`~cluster.etcd.channel.REQUIRE_LEADER`
        (the auth token, once authenticated)."""
        return self._client.kv._metadata or None if self._client.kv is not None else None

    @contextlib.asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        start = time.monotonic()
        try:
            yield
            self.last_ok = time.monotonic()
        except (EtcdUnauthenticatedError, EtcdPermissionDeniedError) as exc:
            raise EtcdAuthError(f"etcd at {self.settings.urls} refused {what}: {exc}") from None
        except (EtcdConnectionError, EtcdTransientError, TimeoutError) as exc:
            detail = str(exc) or "timed out"
            raise EtcdUnavailable(f"etcd unreachable at {self.settings.urls} ({what}): "
                                  f"{_short(detail)}") from None
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            details = exc.details() or ""
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or any(
                marker in details for marker in _AUTH_MARKERS
            ):
                raise EtcdAuthError(
                    f"etcd at {self.settings.urls} refused {what}: {exc.details()}"
                ) from None
            raise EtcdUnavailable(
                f"etcd error at {self.settings.urls} ({what}): {code.name} {exc.details()}"
            ) from None
        except EtcdError as exc:
            raise EtcdUnavailable(f"etcd error at {self.settings.urls} ({what}): {exc}") from None
        finally:
            if self.observe is not None:
                self.observe(op_of(what), time.monotonic() - start)

    # -- key/value ---------------------------------------------------------------------

    async def get(self, key: str) -> KV | None:
        async with self._errors(f"get {key}"):
            resp = await self._client.kv.get(key, timeout=self.settings.timeout)
        return KV.from_pb(resp.kvs[0]) if resp.kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[KV], int]:
        """All keys under ``prefix`` and the store revision they were read at."""
        async with self._errors(f"get {prefix}*"):
            resp = await self._client.kv.get(
                prefix, prefix_range_end(prefix), timeout=self.settings.timeout
            )
        return [KV.from_pb(kv) for kv in resp.kvs], resp.header.revision

    async def range(self, start: str, end: str, *, limit: int = 0, newest_first: bool = False,
                    by_key: bool = False, keys_only: bool = False, revision: int = 0,
                    ) -> tuple[list[KV], int]:
        """Keys in [start, end), at most ``limit`` (0: all), ordered by creation (by key if
        ``by_key``), newest first if asked; and the revision they were read at. ``end`` of
        a prefix: :func:`prefix_end`."""
        async with self._errors(f"get {start}..{end}"):
            resp = await self._client.kv.get(
                start, end, revision=revision, limit=limit,
                sort_order=SortOrder.DESCEND if newest_first else SortOrder.ASCEND,
                sort_target=SortTarget.KEY if by_key else SortTarget.CREATE,
                keys_only=keys_only, timeout=self.settings.timeout)
        return [KV.from_pb(kv) for kv in resp.kvs], resp.header.revision

    async def scan(self, prefix: str, *, page: int = SCAN_PAGE) -> tuple[list[KV], int]:
        """All keys under ``prefix`` like :meth:`get_prefix`, read ``page`` keys per request
        at one revision (a consistent view), so no answer grows past what gRPC carries."""
        end = prefix_end(prefix)
        out, rev = await self.range(prefix, end, limit=page, by_key=True)
        batch = out
        while len(batch) == page:
            batch, _ = await self.range(batch[-1].key + "\0", end, limit=page, by_key=True,
                                        revision=rev)
            out += batch
        return out, rev

    async def count(self, prefix: str) -> int:
        """How many keys are under ``prefix`` (etcd counts; nothing is transferred)."""
        async with self._errors(f"count {prefix}*"):
            resp = await self._client.kv.get(prefix, prefix_range_end(prefix), count_only=True,
                                             timeout=self.settings.timeout)
        return int(resp.count)

    async def put(self, key: str, value: bytes | str, *, lease: int = 0) -> int:
        async with self._errors(f"put {key}"):
            resp = await self._client.kv.put(key, value, lease, timeout=self.settings.timeout)
        return resp.header.revision

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete a key (or every key under a prefix); returns how many went."""
        end = prefix_range_end(key) if prefix else None
        async with self._errors(f"delete {key}"):
            resp = await self._client.kv.delete(key, end, timeout=self.settings.timeout)
        return resp.deleted

    async def txn(
        self, compare: Sequence[Guard], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Atomic: run ``success`` if every guard holds, else ``failure``."""
        async with self._errors("transaction"):
            resp = await self._client.kv.txn(
                [_guard(g) for g in compare], [_op(o) for o in success],
                [_op(o) for o in failure], timeout=self.settings.timeout
            )
        ranges = tuple(
            tuple(KV.from_pb(kv) for kv in r.response_range.kvs)
            if r.WhichOneof("response") == "response_range" else ()
            for r in resp.responses
        )
        return TxnResult(resp.succeeded, resp.header.revision, ranges)

    async def compact(self, revision: int) -> None:
        """Compact the store's history up to ``revision`` (tests of watch resumption)."""
        async with self._errors("compact"):
            await self._client.kv.compact(revision, physical=True,
                                          timeout=self.settings.timeout)

    async def revision(self) -> int:
        """The store's current revision (a cheap linearizable read)."""
        async with self._errors("status"):
            resp = await self._client.kv.get(
                "\0", count_only=True, timeout=self.settings.timeout
            )
        return resp.header.revision

    # -- leases ------------------------------------------------------------------------

    async def grant(self, ttl: int) -> tuple[int, int]:
        """Grant a lease; returns (lease id, TTL the server granted)."""
        async with self._errors("lease grant"):
            resp = await self._client.lease.grant(ttl, timeout=self.settings.timeout)
        return resp.ID, resp.TTL

    async def time_to_live(self, lease: int) -> int:
        """Seconds the lease has left (etcd rounds down); -1 if it is gone."""
        async with self._errors("lease time-to-live"):
            resp = await self._client.lease.time_to_live(lease, timeout=self.settings.timeout)
        return resp.TTL

    async def revoke(self, lease: int) -> bool:
        """Revoke a lease (its keys vanish); False if it no longer existed."""
        try:
            async with self._errors("lease revoke"):
                await self._client.lease.revoke(lease, timeout=self.settings.timeout)
        except EtcdUnavailable as exc:
            if "NOT_FOUND" in str(exc) or "lease not found" in str(exc):
                return False
            raise
        return True


def prefix_end(prefix: str) -> str:
    """The end of the key range of every key under ``prefix`` (for :meth:`Etcd.range`)."""
    return prefix_range_end(prefix).decode()


def _short(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _op(op: Op) -> Any:
    if isinstance(op, Put):
        return KVService.txn_op_put(op.key, op.value, lease=op.lease)
    if isinstance(op, Delete):
        return KVService.txn_op_delete(op.key)
    return KVService.txn_op_get(op.key)


def _guard(guard: Guard) -> Any:
    if isinstance(guard, CreateRevision):
        return KVService.txn_compare_create_revision(guard.key, guard.revision)
    # etcd3aio has no builder for this one
    return Compare(result=Compare.EQUAL, target=Compare.MOD, key=guard.key.encode(),
                   mod_revision=guard.revision)


_OPS = {"get": "get", "put": "put", "delete": "delete", "transaction": "txn",
        "compact": "compact", "status": "status", "authenticate": "auth"}


def op_of(what: str) -> str:
    """The operation label of a request (get, put, delete, txn, status, compact, grant,
    revoke, auth) from what :meth:`Etcd._errors` is told ("get /lvs/...", "lease grant")."""
    first, _, rest = what.partition(" ")
    if first == "lease":
        return rest
    return _OPS.get(first, "other")
