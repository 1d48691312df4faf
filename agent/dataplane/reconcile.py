"""Keep the kernel's virtual server table equal to the desired one, with the fewest changes.

The :class:`Reconciler` is the thin shell between the desired table (``desired.py``) and a
backend (IPVS or nftables). It never flushes: the first call adopts what the kernel holds
(an agent restart keeps every connection), later calls diff against what it last applied,
and :meth:`Reconciler.check_drift` compares with the kernel and repairs. Kernel errors are
counted and logged, never raised; the next call reads the kernel again. See
docs/dataplane.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from agent.dataplane.backend import Backend
from agent.dataplane.table import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    EditDest,
    EditService,
    Op,
    Service,
    ServiceKey,
    Table,
    diff,
)
from cluster.bulk import in_thread

log = logging.getLogger(__name__)


def _own_copy(table: Table, given: Mapping[ServiceKey, Service],
              copies: Mapping[ServiceKey, Service]
              ) -> tuple[dict[ServiceKey, Service], dict[ServiceKey, Service], int]:
    """(a private copy of ``table``, ``table`` as given, its real servers). A service given
    as the same object as last time (``given``) keeps its copy (so :func:`diff` skips it by
    identity)."""
    want = {key: copies[key] if given.get(key) is s and key in copies
            else Service(s.spec, dict(s.dests)) for key, s in table.items()}
    return want, dict(table), sum(len(s.dests) for s in want.values())

#: Errors that are bugs (in us or in the desired table), not kernel trouble: raised.
PROGRAMMING_ERRORS: tuple[type[Exception], ...] = (
    TypeError,
    ValueError,
    AttributeError,
    LookupError,
    AssertionError,
    NameError,
    NotImplementedError,
)


@dataclass(frozen=True)
class ReconcileStats:
    """Counters for metrics (a snapshot; the reconciler replaces it as it goes)."""

    desired_services: int = 0
    desired_dests: int = 0
    applies: int = 0  # successful backend.apply calls
    ops_applied: int = 0
    drift_checks: int = 0
    drift_repairs: int = 0  # drift checks that found and repaired something
    drift_ops: int = 0  # ops those repairs took
    errors: int = 0  # failed kernel reads or applies
    last_apply_seconds: float = 0.0


@dataclass(frozen=True)
class ReconcileResult:
    """What one call did. ``ops``: the changes it computed (applied unless ``error``)."""

    ops: tuple[Op, ...] = ()
    applied: bool = False  # backend.apply ran and succeeded
    read_kernel: bool = False  # the kernel was listed (first call, after an error, drift)
    error: str | None = None  # the kernel error, if any
    repaired: tuple[str, ...] = ()  # drift checks: what was repaired, one line each

    @property
    def ok(self) -> bool:
        return self.error is None


def describe_ops(have: Table, ops: Sequence[Op]) -> list[str]:
    """Short lines saying what ``ops`` change in ``have``, for drift logs."""
    lines: list[str] = []
    added: dict[ServiceKey, int] = {}
    for op in ops:
        if isinstance(op, AddService):
            added[op.key] = 0
        elif isinstance(op, AddDest) and op.service in added:
            added[op.service] += 1
    for op in ops:
        lines.extend(_describe(have, op, added))
    return lines


def _describe(have: Table, op: Op, added: Mapping[ServiceKey, int]) -> list[str]:
    if isinstance(op, AddService):
        n = added[op.key]
        return [f"re-added service {op.key} ({n} dest{'' if n == 1 else 's'})"]
    if isinstance(op, DelService):
        return [f"removed unwanted service {op.key}"]
    if isinstance(op, EditService):
        old = have[op.key].spec
        changes = [
            f"{name} {getattr(old, name)} -> {getattr(op.spec, name)}"
            for name in ("scheduler", "persistent", "netmask")
            if getattr(old, name) != getattr(op.spec, name)
        ]
        if old.flags != op.spec.flags:
            changes.append(f"flags {','.join(sorted(old.flags)) or '-'} -> "
                           f"{','.join(sorted(op.spec.flags)) or '-'}")
        if old.maglev != op.spec.maglev:
            changes.append("maglev table inputs (size, seed or configured servers)")
        return [f"settings of {op.key}: {', '.join(changes)}"]
    if op.service in added:  # AddDest of a re-added service: counted there
        return []
    where = f"{op.key.address}:{op.key.port} in {op.service}"
    if isinstance(op, AddDest):
        return [f"re-added {where} (weight {op.spec.weight})"]
    if isinstance(op, DelDest):
        return [f"removed unwanted {where}"]
    assert isinstance(op, EditDest)
    old = have[op.service].dests[op.key]
    lines = []
    if old.weight != op.spec.weight:
        lines.append(f"weight of {where} {old.weight} -> {op.spec.weight}")
    if old.forward != op.spec.forward:
        lines.append(f"forwarding of {where} {old.forward} -> {op.spec.forward}")
    return lines


class Reconciler:
    """Applies desired tables through ``backend``; one call at a time.

    ``on_log``: called with each line worth showing an operator (repairs, errors), besides
    the ``logging`` record.
    """

    def __init__(self, backend: Backend, *, on_log: Callable[[str], None] | None = None) -> None:
        self.backend = backend
        self._on_log = on_log
        self._lock = asyncio.Lock()
        self._desired: dict[ServiceKey, Service] | None = None
        self._given: dict[ServiceKey, Service] = {}  # the caller's last table (its objects)
        self._applied: dict[ServiceKey, Service] | None = None  # None: kernel state unknown
        self._stats = ReconcileStats()
        self._wake = asyncio.Event()
        self._last_error: str | None = None

    @property
    def stats(self) -> ReconcileStats:
        return self._stats

    @property
    def desired(self) -> Table | None:
        """The last desired table (None before the first :meth:`set_desired`)."""
        return self._desired

    async def set_desired(self, table: Table) -> ReconcileResult:
        """Make the kernel hold ``table``, applying only what differs (one apply call)."""
        async with self._lock:
            # Copies and diffs are O(servers): off the event loop (a config of 40,000
            # servers would hold it for seconds, and with it the lease and heartbeats).
            want, given, dests = await in_thread(_own_copy, table, self._given,
                                                 self._desired or {})
            self._given, self._desired = given, want
            self._stats = replace(self._stats, desired_services=len(want), desired_dests=dests)
            read_kernel = self._applied is None
            if read_kernel:
                have = await self._read()
                if have is None:
                    return ReconcileResult(read_kernel=True, error=self._last_error)
            else:
                have = self._applied
            ops = await in_thread(diff, have, want)
            error = await self._apply(ops, want)
            return ReconcileResult(tuple(ops), bool(ops) and error is None, read_kernel, error)

    async def check_drift(self) -> ReconcileResult:
        """Compare the kernel with the desired table and repair what differs."""
        async with self._lock:
            self._stats = replace(self._stats, drift_checks=self._stats.drift_checks + 1)
            want = self._desired
            if want is None:
                return ReconcileResult()  # nothing desired yet: nothing to hold the kernel to
            have = await self._read()
            if have is None:
                return ReconcileResult(read_kernel=True, error=self._last_error)
            ops = await in_thread(diff, have, want)
            if not ops:
                self._applied = want
                return ReconcileResult(read_kernel=True)
            repaired = tuple(describe_ops(have, ops))
            self._log(logging.WARNING, "drift: " + "; ".join(repaired))
            error = await self._apply(ops, want)
            if error is None:
                self._stats = replace(
                    self._stats,
                    drift_repairs=self._stats.drift_repairs + 1,
                    drift_ops=self._stats.drift_ops + len(ops),
                )
            return ReconcileResult(tuple(ops), error is None, True, error, repaired)

    def request_check(self) -> None:
        """Ask :meth:`run_drift_checks` for a drift check now."""
        self._wake.set()

    async def run_drift_checks(self, interval: float, *, retry: float = 1.0) -> None:
        """Check for drift every ``interval`` seconds and on :meth:`request_check`; forever.

        After a kernel error the next check comes after ``retry`` seconds (if shorter). A
        check that takes long (reading a huge IPVS table) stretches the interval so that
        periodic checks use at most 5% of the time.
        """
        if not interval > 0 or not retry > 0:
            raise ValueError(f"drift check interval and retry must be > 0 s: {interval}, {retry}")
        wait = interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            started = time.monotonic()
            try:
                result = await self.check_drift()
            except Exception:  # a bug: say so loudly, keep checking
                log.exception("drift check failed")
                wait = interval
            else:
                every = max(interval, 20 * (time.monotonic() - started))
                wait = every if result.ok else min(every, retry)

    # ------------------------------------------------------------ kernel calls

    async def _read(self) -> dict[ServiceKey, Service] | None:
        """The kernel's table, or None after counting and logging a kernel error."""
        try:
            return dict(await self.backend.read())
        except PROGRAMMING_ERRORS:
            self._applied = None
            raise
        except Exception as exc:
            self._kernel_error("reading the kernel's table", exc)
            return None

    async def _apply(self, ops: list[Op], want: dict[ServiceKey, Service]) -> str | None:
        """Apply ``ops`` (nothing when empty); the error text, or None on success."""
        if not ops:
            self._applied = want
            return None
        self._applied = None  # unknown until the apply is known to have succeeded
        start = time.monotonic()
        try:
            await self.backend.apply(ops)
        except PROGRAMMING_ERRORS:
            raise
        except Exception as exc:
            self._kernel_error(f"applying {len(ops)} change{'' if len(ops) == 1 else 's'}", exc)
            return self._last_error
        self._applied = want
        self._stats = replace(
            self._stats,
            applies=self._stats.applies + 1,
            ops_applied=self._stats.ops_applied + len(ops),
            last_apply_seconds=time.monotonic() - start,
        )
        return None

    def _kernel_error(self, what: str, exc: Exception) -> None:
        """Count and log a kernel error; the next call lists the kernel again."""
        self._applied = None
        self._stats = replace(self._stats, errors=self._stats.errors + 1)
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._log(logging.ERROR, f"data plane error {what} (will re-read and retry): {exc}")

    def _log(self, level: int, message: str) -> None:
        log.log(level, "%s", message)
        if self._on_log is not None:
            self._on_log(message)
