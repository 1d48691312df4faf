"""The connection table's warmth, as the preemption gate sees it (pure)."""

from __future__ import annotations

import math

from agent.dataplane.warmth import SyncReceiver, warm_at

INF = math.inf


def test_backup_receiver_is_warm_after_the_warmup() -> None:
    r = SyncReceiver(warmup=6.0)
    assert r.warm_at() == INF  # nothing known before the data plane reports
    r.observe("backup", 100.0)
    assert r.warm_at() == 106.0
    r.observe("backup", 103.0)  # the same daemon still running: the clock does not restart
    assert r.warm_at() == 106.0


def test_master_and_no_sync_never_hold_anything_back() -> None:
    r = SyncReceiver(warmup=6.0)
    r.observe(None, 100.0)
    assert r.warm_at() == -INF
    r.observe("master", 101.0)
    assert r.warm_at() == -INF
    r.observe("backup", 120.0)  # handed over: what the new active carries must come in
    assert r.warm_at() == 126.0


def test_a_failed_daemon_keeps_the_gate_shut() -> None:
    r = SyncReceiver(warmup=6.0)
    r.observe("backup", 100.0)
    r.failed(110.0)
    assert r.warm_at() == INF
    r.observe("backup", 111.0)  # set again: the warm-up starts over
    assert r.warm_at() == 117.0


def test_the_latest_source_decides() -> None:
    ipvs, other = SyncReceiver(warmup=6.0), SyncReceiver(warmup=20.0)
    ipvs.observe("backup", 100.0)
    other.observe("backup", 95.0)
    assert warm_at([ipvs, other]) == 115.0
    assert warm_at([]) == -INF
    other.observe(None, 96.0)
    assert warm_at([ipvs, other]) == 106.0


async def test_conntrackd_is_warm_sync_warmup_after_every_peer_asked_for_a_resync(
        tmp_path) -> None:
    import time
    from types import SimpleNamespace

    from agent.conntrack import ConntrackSync

    class Daemon:
        def __init__(self) -> None:
            self.up, self.stats = True, SimpleNamespace(starts=1)

        async def command(self, *args: str) -> SimpleNamespace:
            return SimpleNamespace(ok=True)

    sync = ConntrackSync("r1", tmp_path)
    assert sync.warm_at() == -INF  # no sync configured: never a reason to wait
    sync.settings = (object(),)  # type: ignore[assignment]
    sync.warmup = 5.0
    r2, r3 = Daemon(), Daemon()
    sync.daemons = {"r2": r2, "r3": r3}  # type: ignore[dict-item]
    assert sync.warm_at() == INF  # nothing asked yet
    before = time.monotonic()
    await sync._request_resync(r2)
    assert sync.warm_at() == INF  # r3 has not asked
    await sync._request_resync(r3)
    assert before + 5.0 <= sync.warm_at() <= time.monotonic() + 5.0
    r3.stats.starts = 2  # restarted since: its caches are empty again
    assert sync.warm_at() == INF
    await sync._request_resync(r3)
    r2.up = False
    assert sync.warm_at() == INF  # a daemon down: the gate stays shut
    r2.up = True
    sync.active = True
    assert sync.warm_at() == -INF  # the active receives nothing
