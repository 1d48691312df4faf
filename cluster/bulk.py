"""Bulk work without Python's cyclic garbage collector in the way.

At 40,000 real servers an agent holds about two million long-lived objects. A step that
builds hundreds of thousands more (a config's model, a desired table, an nftables plan or
listing) makes the collector run, again and again, over all of them: measured, a third of
such a step's time (docs/benchmarks.md, "Scale"). Around such steps the automatic
collector pauses; it runs again after them, once, over what the step left. Reference
counting frees everything else as usual, so only cyclic garbage made meanwhile waits.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_depth = 0  # steps under way, in any thread
_resume = False  # the collector was on when the first of them began


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic collection while any thread is inside one of these blocks."""
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()


def paused(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` in a :func:`gc_paused` block."""
    with gc_paused():
        return fn(*args, **kwargs)


async def in_thread(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``asyncio.to_thread(fn, ...)`` for bulk work: in a worker thread, collector paused."""
    return await asyncio.to_thread(paused, fn, *args, **kwargs)


# -- the C heap -------------------------------------------------------------------------------

M_ARENA_MAX = -8  # glibc mallopt() parameter
ARENAS = 2  # C heaps for all threads (glibc's default is 8 per core, one per busy thread)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim, libc.mallopt  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Few C heaps (call before any thread starts): the worker threads of bulk steps each
    took a heap of their own, and each kept its peak; False where this is not glibc."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas))


def give_back() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``): a bulk step
    of 40,000 servers frees hundreds of MB that the process otherwise keeps resident."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# -- the collector after a big step ----------------------------------------------------------


#: gen2 threshold while full collections are held off (never reached in practice).
NO_FULL = 1 << 30
_held: asyncio.TimerHandle | None = None
_thresholds: tuple[int, int, int] | None = None
_unsettled = False  # a big step began (hold_full_collections) since the last full settle


def hold_full_collections(seconds: float) -> None:
    """No full collection for ``seconds`` from now, then :func:`settle` (on the event
    loop; a later call extends it, an earlier :func:`settle` ends it). While a big config
    is adopted and programmed, each full pass of the collector went over millions of
    objects, 0.3-0.6 s of the event loop at a time, six times during a push of 40,000
    servers. Young generations are still collected; :func:`settle` makes the one full
    pass after."""
    global _held, _thresholds, _unsettled
    _unsettled = True
    if _held is None:
        _thresholds = gc.get_threshold()
        gc.set_threshold(_thresholds[0], _thresholds[1], NO_FULL)
    else:
        _held.cancel()
    _held = asyncio.get_running_loop().call_later(seconds, settle)


def _release() -> None:
    global _held, _thresholds
    if _held is not None:
        _held.cancel()
        _held = None
    if _thresholds is not None:
        gc.set_threshold(*_thresholds)
        _thresholds = None


def settle(full: bool | None = None) -> None:
    """After a big step (a config of thousands of servers adopted, or programmed):
    everything alive is moved out of the collector's sight (``gc.freeze``). The collector's
    full passes then go over what was made since, not over the two million objects of
    40,000 servers: each such pass held the event loop 0.3-0.5 s, every 20-40 s at steady
    state (the checks' results keep reaching the oldest generation).

    The first settle after :func:`hold_full_collections` (a big config adopted), or with
    ``full``, unfreezes what earlier calls froze first, so that cyclic garbage of the
    previous config is collected too. Any other collects only what was made since the last
    freeze: with everything unfrozen, a pass over 100,000 servers' objects held the loop
    0.35-0.95 s, after each big pass of the data plane, six times in a push
    (docs/benchmarks.md, "Scale"). Objects that die by reference counting (nearly all)
    are freed at once, frozen or not. Ends :func:`hold_full_collections`."""
    global _unsettled
    full = _unsettled if full is None else full
    _release()
    if full:
        _unsettled = False
        gc.unfreeze()
    gc.collect()
    gc.freeze()
