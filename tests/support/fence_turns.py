"""Run inside a test namespace (netlab worker): how the fence's licence renewals take their
turn while another nftables write of ours holds ``WRITERS`` (tests/test_vip_fence.py)."""

from __future__ import annotations

import re
import subprocess
import threading
import time

from agent.dataplane.nft.libnft import WRITERS
from agent.vip import ArpFence, Vip


def hold(seconds: float) -> threading.Event:
    """Hold WRITERS for ``seconds`` from another thread (as a data-plane write would)."""
    held = threading.Event()

    def run() -> None:
        with WRITERS:
            held.set()
            time.sleep(seconds)

    threading.Thread(target=run, daemon=True).start()
    held.wait()
    return held


def renewals(vip: Vip) -> dict[str, float]:
    fence = ArpFence()
    fence.guard([vip])
    out: dict[str, float] = {}
    hold(1.0)
    start = time.monotonic()
    fence.license([vip], time.monotonic() + 2)  # nothing licensed yet: written at once
    out["first_waited"] = time.monotonic() - start
    out["first_writes"] = fence.writes
    fence.license([vip], time.monotonic() + 2)  # the kernel's has nearly all of it: kept
    out["kept"] = fence.kept
    time.sleep(1.2)  # 0.8 s left in the kernel, under half of a new 2 s licence
    hold(1.0)
    start = time.monotonic()
    ok = fence.license([vip], time.monotonic() + 2)  # due, but another writes: skipped
    out["renewal_waited"] = time.monotonic() - start
    out["renewal_ok"] = float(ok)
    out["deferred"] = fence.deferred
    time.sleep(1.1)
    fence.license([vip], time.monotonic() + 30)
    hold(0.5)
    start = time.monotonic()
    fence.license([vip], time.monotonic() + 0.3)  # shorter than the kernel's: written
    out["short_waited"] = time.monotonic() - start
    out["deferred_after"] = fence.deferred
    listing = subprocess.run(["nft", "list", "set", "netdev", "piranha_fence", "licensed4"],
                             capture_output=True, text=True).stdout
    found = re.search(r"timeout (\d+)ms", listing)  # not "30s": the short one replaced it
    out["short_timeout_ms"] = float(found.group(1)) if found else -1.0
    hold(0.5)
    start = time.monotonic()
    fence.revoke()  # never waits
    out["revoke_waited"] = time.monotonic() - start
    out["errors"] = fence.errors
    fence.remove()
    return out


def renewal_amid_another_commit(vip: Vip) -> dict[str, int]:
    """A licence renewal right after which someone else commits, before the fence could
    read the generation again: the generation of the fence's own commit is still recorded
    (the kernel tells it), and the other one is not."""
    from agent.dataplane.nft.netlink import generation_now, ours_between

    fence = ArpFence()
    fence.guard([vip])
    writer = fence._netlink
    assert writer is not None
    real = writer.write

    def write_then_someone_else(*args: object, **kwargs: object) -> str | None:
        error = real(*args, **kwargs)
        subprocess.run(["nft", "add", "table", "netdev", "someone_else"], check=True)
        return error

    writer.write = write_then_someone_else  # type: ignore[method-assign]
    g0 = generation_now()
    ok = fence.license([vip], time.monotonic() + 30)
    g1 = generation_now()
    fence.close()
    return {"ok": int(ok), "commits": g1 - g0, "ours": ours_between(g0, g1)}
