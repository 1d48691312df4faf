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
