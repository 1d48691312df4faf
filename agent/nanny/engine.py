"""The nanny engine: checks thousands of real servers from one asyncio loop.

One scheduler, not one task per target: a heap of due times served by a single event-loop
timer, which starts every check due within a small batching window in one wake-up. At most
``max_concurrency`` checks run at once; the rest wait in a FIFO queue. TCP connect checks run
on callbacks (no task at all); other kinds run as one short task per check. Only program
checks create processes.

Each target is checked every ``interval`` seconds (fixed rate: N targets at interval I make
exactly N/I checks per second), never two at once: a check that takes longer than the interval
(a timeout, when ``interval == timeout`` as in Piranha) is followed at once by the next. The
first check of a new target is jittered over :data:`FIRST_SPREAD` (or its interval, if
shorter): thousands of new targets do not fire in one instant, yet a router that starts knows
its real servers within about a second; ``max_concurrency`` still bounds how many run at once.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass

from agent.nanny.checks import NONE_REASON, Running, start_check
from agent.nanny.checks.load import read_load, scale_weight
from agent.nanny.result import CheckResult
from agent.nanny.spec import CheckSpec
from agent.nanny.state import (
    State,
    StateSpec,
    Tracked,
    Transition,
    initial,
    is_news,
    step,
    transition,
)
from cluster.health import Health

log = logging.getLogger("agent.nanny")
Initial = State | Health | None
Target = tuple[CheckSpec, StateSpec, Initial]
Subscriber = Callable[[Transition], None]
_STARTING = object()  # marks a check whose start has not returned yet

#: The first checks of new targets start within this many seconds (uniformly spread).
FIRST_SPREAD = 1.0


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Counters since the engine was created."""

    checks: int  # results applied
    failed: int  # of which failed
    in_flight: int
    peak_in_flight: int
    queued: int  # due but waiting for a free slot
    max_lag: float  # worst delay between a check's due time and its start, seconds
    mean_lag: float


class _Target:
    """Mutable bookkeeping of one target; only the engine touches it."""

    __slots__ = (
        "check", "due", "gen", "key", "last", "load", "load_due", "load_task", "running",
        "spec", "tracked",
    )

    def __init__(self, key: Hashable, check: CheckSpec, spec: StateSpec, tracked: Tracked):
        self.key, self.check, self.spec, self.tracked = key, check, spec, tracked
        self.gen = 0  # bumped whenever in-flight work or queued starts become stale
        self.due = 0.0  # when the current (or last) check was due
        self.running: Running | object | None = None
        self.last: CheckResult | None = None
        self.load: float | None = None
        self.load_due = 0.0
        self.load_task: asyncio.Task[float | None] | None = None


class Engine:
    """Schedules checks, runs them, feeds the state machine, tells subscribers of changes.

    ``clock`` gives the timestamps of health states (``since``; epoch seconds by default).
    Subscribers are called synchronously in the event loop: keep them quick.
    """

    def __init__(
        self, *, max_concurrency: int = 1000, clock: Callable[[], float] = time.time,
        batch: float = 0.002, seed: int | None = None,
    ) -> None:
        if type(max_concurrency) is not int or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an integer >= 1, not {max_concurrency!r}")
        self._max = max_concurrency
        self._clock = clock
        self._batch = batch
        self._rng = random.Random(seed)
        self._targets: dict[Hashable, _Target] = {}
        self._heap: list[tuple[float, int, _Target, int]] = []
        self._seq = itertools.count()
        self._ready: deque[tuple[_Target, int]] = deque()
        self._subscribers: list[Subscriber] = []
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = math.inf
        self._arming = True  # False while set_targets schedules many: it arms once after
        self._draining = False
        self._in_flight = self._peak = self._checks = self._failed = self._lagged = 0
        self._max_lag = self._lag_sum = 0.0
        self.results: dict[tuple[str, str], int] = {}  # (kind, "ok"|"failed") -> checks
        #: Called with (kind, result) after every applied check (metrics: its latency).
        self.on_result: Callable[[str, CheckResult], None] | None = None

    # ---- public API -------------------------------------------------------------------

    def set_targets(self, targets: Mapping[Hashable, Target]) -> None:
        """Check exactly these targets from now on.

        Unchanged targets keep their state and schedule; a target whose check changed keeps
        its state and gets a new schedule; removed ones stop (their running check is
        abandoned); new ones start in their initial state (``None``: unknown).
        """
        for key in self._targets.keys() - targets.keys():
            self._abandon(self._targets.pop(key))
        self.add_targets(targets)

    def add_targets(self, targets: Mapping[Hashable, Target]) -> None:
        """:meth:`set_targets` for these targets only: the others stay as they are (a big
        configuration, a part at a time)."""
        wanted = {key: _validated(key, value) for key, value in targets.items()}
        now = self._clock()
        self._arming = False  # one timer for all of them, armed below (40,000 targets
        # each re-arming the loop's timer as it went cost a third of a config's adoption)
        try:
            self._set_targets(wanted, now)
        finally:
            self._arming = True
        if self._heap and self._loop is not None and self._heap[0][0] < self._timer_when:
            self._arm(self._heap[0][0])

    def _set_targets(self, wanted: dict[Hashable, tuple[CheckSpec, StateSpec, Initial]],
                     now: float) -> None:
        for key, (check, spec, init) in wanted.items():
            target = self._targets.get(key)
            if target is None:
                if isinstance(init, Health):
                    tracked = Tracked(init)
                else:
                    tracked = initial(init, now, check.weight)
                if check.kind == "none":  # up, always: no check, no transition
                    self._targets[key] = _Target(key, check, spec, _unchecked(now, check))
                    continue
                target = self._targets[key] = _Target(key, check, spec, tracked)
                self._schedule_first(target)
            elif target.check != check:
                self._abandon(target)
                target.check, target.spec = check, spec
                if check.kind == "none":
                    old, target.tracked = target.tracked, _unchecked(now, check)
                    if is_news(old, target.tracked):
                        self._publish(transition(key, old, target.tracked))
                self._schedule_first(target)
            else:
                target.spec = spec

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(transition)`` on every change; returns a function to unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def has(self, key: Hashable) -> bool:
        """Is ``key`` a target?"""
        return key in self._targets

    def snapshot(self, keys: Iterable[Hashable] | None = None) -> dict[Hashable, Health]:
        """Current health of every target (of ``keys`` only, if given: targets all)."""
        if keys is not None:
            return {key: self._targets[key].tracked.health for key in keys}
        return {key: target.tracked.health for key, target in self._targets.items()}

    def last_result(self, key: Hashable) -> CheckResult | None:
        """The latest check result of ``key`` (None if never checked or unknown key)."""
        target = self._targets.get(key)
        return target.last if target is not None else None

    def stats(self) -> EngineStats:
        """Counters, for metrics and the benchmark."""
        mean = self._lag_sum / self._lagged if self._lagged else 0.0
        return EngineStats(
            self._checks, self._failed, self._in_flight, self._peak, len(self._ready),
            self._max_lag, mean,
        )

    async def start(self) -> None:
        """Start checking (from inside the running event loop)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        for target in self._targets.values():
            self._schedule_first(target)

    async def stop(self) -> None:
        """Stop checking: abandon running checks, kill their programs, wait for them."""
        if self._loop is None:
            return
        self._loop = None
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_when = None, math.inf
        for target in self._targets.values():
            self._abandon(target)
        self._heap.clear()
        self._ready.clear()
        tasks, self._tasks = list(self._tasks), set()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- scheduling -------------------------------------------------------------------

    def _schedule_first(self, target: _Target) -> None:
        if self._loop is None or target.check.kind == "none":  # (its result is set already)
            return
        spread = min(target.check.every, FIRST_SPREAD)
        self._schedule(target, self._loop.time() + self._rng.random() * spread)

    def _schedule(self, target: _Target, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), target, target.gen))
        if due < self._timer_when and self._arming:
            self._arm(due)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._tick)  # type: ignore[union-attr]

    def _tick(self) -> None:
        self._timer, self._timer_when = None, math.inf
        now = self._loop.time()  # type: ignore[union-attr]
        horizon = now + self._batch
        heap = self._heap
        while heap and heap[0][0] <= horizon:
            due, _, target, gen = heapq.heappop(heap)
            if gen != target.gen:
                continue  # removed or rescheduled meanwhile
            target.due = due
            lag = now - due
            if lag > 0:
                self._lag_sum += lag
                self._max_lag = max(self._max_lag, lag)
            self._lagged += 1
            if self._in_flight < self._max and not self._ready:
                self._launch(target)
            else:
                self._ready.append((target, gen))
        self._drain_ready()
        if heap and self._loop is not None and heap[0][0] < self._timer_when:
            self._arm(heap[0][0])

    def _drain_ready(self) -> None:
        if self._draining:
            return  # a check that finished inside _launch: the outer loop goes on
        self._draining = True
        try:
            ready = self._ready
            while ready and self._in_flight < self._max:
                target, gen = ready.popleft()
                if gen == target.gen:
                    self._launch(target)
        finally:
            self._draining = False

    # ---- running checks -----------------------------------------------------------------

    def _launch(self, target: _Target) -> None:
        self._in_flight += 1
        if self._in_flight > self._peak:
            self._peak = self._in_flight
        gen = target.gen
        target.running = _STARTING
        handle = start_check(target.check, lambda result: self._done(target, gen, result))
        if target.running is _STARTING:  # still under way
            target.running = handle
            if isinstance(handle, asyncio.Task):
                self._tasks.add(handle)
                handle.add_done_callback(self._tasks.discard)

    def _done(self, target: _Target, gen: int, result: CheckResult) -> None:
        if gen != target.gen:
            return  # abandoned: its slot was given back then
        self._in_flight -= 1
        target.running = None
        self._checks += 1
        if not result.ok:
            self._failed += 1
        kind = target.check.kind
        key = (kind, "ok" if result.ok else "failed")
        self.results[key] = self.results.get(key, 0) + 1
        if self.on_result is not None:
            self.on_result(kind, result)
        self._apply(target, result)  # subscribers may remove or change the target meanwhile
        if gen == target.gen and self._loop is not None and target.check.kind != "none":
            self._schedule(target, max(target.due + target.check.every, self._loop.time()))
        self._drain_ready()

    def _abandon(self, target: _Target) -> None:
        """Make running work and queued starts of ``target`` stale, and stop them."""
        target.gen += 1
        if target.running is not None:
            if target.running is not _STARTING:
                target.running.cancel()  # type: ignore[union-attr]
            target.running = None
            self._in_flight -= 1
        if target.load_task is not None:
            target.load_task.cancel()
            target.load_task = None

    def _apply(self, target: _Target, result: CheckResult) -> None:
        target.last = result
        old = target.tracked
        check = target.check
        weight = old.health.weight if old.health.weight is not None else check.weight
        if result.ok:
            weight = check.weight if result.weight is None else result.weight
            if target.load is not None:
                weight = scale_weight(weight, target.load, check.load_full)
        new = step(old, target.spec, self._clock(), result.ok, result.reason, weight)
        if new is not old:
            target.tracked = new
            if is_news(old, new):
                self._publish(transition(target.key, old, new))
        if check.load_monitor is not None and new.health.state == "up":
            self._maybe_read_load(target)

    def _publish(self, change: Transition) -> None:
        for callback in list(self._subscribers):
            try:
                callback(change)
            except Exception:
                log.exception("nanny: subscriber %r failed on %r", callback, change)

    # ---- load monitor -------------------------------------------------------------------

    def _maybe_read_load(self, target: _Target) -> None:
        loop = self._loop
        if loop is None or target.load_task is not None or loop.time() < target.load_due:
            return
        gen = target.gen
        task = loop.create_task(read_load(target.check))
        target.load_task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: self._load_read(target, gen, t))

    def _load_read(self, target: _Target, gen: int, task: asyncio.Task[float | None]) -> None:
        if gen != target.gen or task.cancelled() or self._loop is None:
            return
        target.load_task = None
        target.load_due = self._loop.time() + target.check.load_interval
        load = task.result()
        if load is not None:
            target.load = load  # applied with the next check result


def _validated(key: Hashable, value: object) -> tuple[CheckSpec, StateSpec, Initial]:
    """Unpack one ``set_targets`` value, with a clear error if it is not what it must be."""
    if not isinstance(value, tuple) or len(value) != 3:
        raise TypeError(f"target {key!r}: expected (CheckSpec, StateSpec, initial), got {value!r}")
    check, spec, init = value
    if not isinstance(check, CheckSpec) or not isinstance(spec, StateSpec):
        raise TypeError(f"target {key!r}: expected (CheckSpec, StateSpec, initial), got {value!r}")
    if not (init is None or isinstance(init, Health) or init in ("unknown", "up", "down")):
        raise ValueError(f"target {key!r}: initial state must be up, down, unknown or None")
    return check, spec, init


def _unchecked(now: float, check: CheckSpec) -> Tracked:
    """A server checked by "none": up from now on, whatever it was (no result ever comes to
    move it, so no reentry delay or earlier "down" may hold it)."""
    return Tracked(Health("up", since=now, reason=NONE_REASON, weight=check.weight), 0, now)
