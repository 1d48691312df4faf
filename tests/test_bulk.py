"""cluster.bulk: the collector pauses around bulk work, in any thread, and comes back."""

from __future__ import annotations

import asyncio
import gc
import os
import threading

from cluster.bulk import gc_paused, in_thread


def test_the_collector_pauses_inside_and_resumes_after_the_last_block():
    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def worker() -> None:
        with gc_paused():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled(), "another thread is still inside its block"
    release.set()
    t.join(5)
    assert gc.isenabled()


def test_a_collector_switched_off_before_stays_off():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_in_thread_runs_off_the_loop_with_the_collector_paused():
    main = threading.get_ident()

    def job(x: int) -> tuple[int, bool, bool]:
        return x + 1, gc.isenabled(), threading.get_ident() != main

    assert asyncio.run(in_thread(job, 1)) == (2, False, True)
    assert gc.isenabled()


def test_an_error_inside_still_resumes_the_collector():
    try:
        with gc_paused():
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_give_back_returns_freed_heap_pages_to_the_system() -> None:
    """A bulk step's garbage freed among survivors stays resident until malloc_trim."""
    from cluster.bulk import give_back

    blocks = [bytes(2048) for _ in range(100_000)]  # 200 MB from the C heap (not pymalloc)
    keep = blocks[::50]  # survivors scattered through it: the heap cannot shrink from its top
    del blocks
    before = _rss_mb()
    give_back()
    after = _rss_mb()
    assert before - after > 100, (before, after)
    assert len(keep) == 2000


def test_settle_hides_what_lives_from_the_collector_and_collects_old_cycles_later() -> None:
    """After settle() the collector's passes skip what was alive then (frozen). A cycle
    among those that becomes garbage afterwards is left by a light settle() (which
    collects what was made since) and collected by the next full one: forced, or the
    first after hold_full_collections (a big config adopted)."""
    import weakref

    from cluster import bulk

    class Node:
        pass

    def cycle() -> tuple[Node, weakref.ref[Node]]:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        return a, weakref.ref(a)

    async def adopted() -> None:
        bulk.hold_full_collections(10)

    before = gc.get_threshold()
    try:
        kept = [Node() for _ in range(10_000)]
        alive, old = cycle()
        bulk.settle(full=True)
        assert gc.get_freeze_count() >= len(kept)
        del alive
        gc.collect()
        assert old() is not None  # frozen: a full pass does not see it
        alive, new = cycle()  # made since the freeze
        del alive
        bulk.settle()  # light: no config adopted since the last full settle
        assert new() is None and old() is not None
        asyncio.run(adopted())
        bulk.settle()  # the first after a big config: full
        assert old() is None  # unfrozen, collected, the rest frozen again
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold() == before  # the hold is over
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_full_collections_are_held_off_until_settled_or_the_time_is_up() -> None:
    """hold_full_collections: no full pass (gen2 threshold out of reach), extended by a
    later call; settle() ends it at once, else it settles by itself when the time is up."""
    from cluster import bulk

    before = gc.get_threshold()

    async def main() -> None:
        bulk.hold_full_collections(10)
        assert gc.get_threshold()[2] == bulk.NO_FULL
        assert gc.get_threshold()[:2] == before[:2]  # young generations as before
        bulk.hold_full_collections(10)  # extended, not stacked
        bulk.settle()
        assert gc.get_threshold() == before and gc.get_freeze_count() > 0
        gc.unfreeze()
        bulk.hold_full_collections(0.05)
        await asyncio.sleep(0.2)  # the time is up: settled by itself
        assert gc.get_threshold() == before and gc.get_freeze_count() > 0

    try:
        asyncio.run(main())
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
