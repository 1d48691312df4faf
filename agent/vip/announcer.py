"""When to announce VIPs after a takeover: the schedule (pure) and its asyncio runner.

On takeover: a first burst of ``count`` rounds ``interval`` apart starting at once, a second
burst ``second_delay`` seconds after takeover (for neighbours that were busy or whose switch
port came up late), then, if ``refresh`` is set, one round every ``refresh`` seconds for as
long as we stay active. :meth:`Announcer.cancel` stops it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .model import Vip, VipError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnnounceConfig:
    """The announcement schedule; times in seconds after the takeover."""

    count: int = 5  # rounds in the first burst (the first one is sent immediately)
    interval: float = 0.2  # between rounds of a burst
    second_delay: float | None = 5.0  # start of the second burst; None = no second burst
    second_count: int | None = None  # rounds in the second burst; None = same as count
    refresh: float | None = None  # then one round every `refresh` s; None = off

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise VipError(f"announce count must be an integer >= 1, got {self.count!r}")
        if self.second_count is not None and (
            isinstance(self.second_count, bool)
            or not isinstance(self.second_count, int)
            or self.second_count < 1
        ):
            raise VipError(f"second burst count must be an integer >= 1, got {self.second_count!r}")
        _check_seconds("announce interval", self.interval, allow_zero=True)
        if self.second_delay is not None:
            _check_seconds("second burst delay", self.second_delay)
        if self.refresh is not None:
            _check_seconds("announce refresh period", self.refresh)


def offsets(config: AnnounceConfig) -> Iterator[float]:
    """Times (seconds after takeover, non-decreasing) of every announcement round.

    Infinite when ``config.refresh`` is set.
    """
    last = 0.0
    for i in range(config.count):
        last = i * config.interval
        yield last
    if config.second_delay is not None:
        start = max(config.second_delay, last)
        for i in range(config.second_count or config.count):
            last = start + i * config.interval
            yield last
    if config.refresh is not None:
        for k in itertools.count(1):
            yield last + k * config.refresh


class Announcer:
    """Runs :func:`offsets` for one set of VIPs, calling ``send(vips)`` at each time.

    ``send`` must not block (packet sockets are non-blocking). One schedule at a time:
    :meth:`start` replaces the running one.
    """

    def __init__(self, send: Callable[[frozenset[Vip]], object], config: AnnounceConfig) -> None:
        self._send = send
        self.config = config
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, vips: Iterable[Vip]) -> None:
        """Send the first round now and schedule the rest (replacing any running schedule)."""
        self.cancel()
        vips = frozenset(vips)
        if not vips:
            return
        loop = asyncio.get_running_loop()
        times = offsets(self.config)
        next(times)  # the immediate first round, sent here without waiting for the loop
        self._round(vips)
        self._task = loop.create_task(self._run(vips, loop.time(), times), name="vip-announce")

    def cancel(self) -> None:
        """Stop now: after this returns no further round is sent."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel and wait until the schedule has ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, vips: frozenset[Vip], start: float, times: Iterator[float]) -> None:
        loop = asyncio.get_running_loop()
        for offset in times:
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._round(vips)

    def _round(self, vips: frozenset[Vip]) -> None:
        try:
            self._send(vips)
        except Exception:  # a bug in one round must not end the schedule
            log.exception("announcement round failed")


def _check_seconds(what: str, value: object, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VipError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise VipError(f"{what} must be {'>= 0' if allow_zero else '> 0'} s, got {value!r}")
