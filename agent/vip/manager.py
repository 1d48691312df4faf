"""The VIP facade the election drives: acquire on takeover, renew with the lease, release.

Every VIP is installed with a finite kernel lifetime (``lifetime`` whole seconds) and
:meth:`VipManager.renew` pushes it forward; if the agent dies or hangs, the kernel deletes
the addresses by itself, between ``lifetime`` and ``lifetime + 1`` s after the last renew
(``cluster.timing.Timing.vip_survival``; docs/vip.md).

Every act that asserts ownership asks ``licence()`` (until when we may, on the monotonic
clock) at that instant: each address added or renewed (checked again right after, and
taken back if the licence ended meanwhile), each announcement frame, and the kernel fence
(:mod:`.fence`) that lets the kernel answer ARP for the VIPs only until the licence ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .addresses import AddressTable, Removal
from .announcer import AnnounceConfig, Announcer
from .arp import ARP_FORMS, ArpForm
from .fence import ArpFence
from .model import Vip, check_lifetime, vips_of
from .sender import GratuitousSender

UNLICENSED = "not licensed (the licence ended or was never granted)"

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Acquired:
    """Outcome of :meth:`VipManager.acquire`."""

    added: frozenset[Vip] = frozenset()  # installed now (and being announced)
    failed: Mapping[Vip, str] = field(default_factory=dict)  # retried by every renew()
    removed: Removal = field(default_factory=Removal)  # previously held, no longer wanted

    @property
    def ok(self) -> bool:
        return not self.failed and self.removed.ok


class VipManager:
    """Own the floating addresses of this router while it is active.

    Not thread-safe; use from one event loop. Operations are serialised; :meth:`release`
    stops announcements and renewals before it waits for anything.
    """

    def __init__(
        self,
        lifetime: int = 3,
        announce: AnnounceConfig | None = None,
        *,
        arp_forms: tuple[ArpForm, ...] = ARP_FORMS,
        ipv6_router: bool | None = None,
        table: AddressTable | None = None,
        sender: GratuitousSender | None = None,
        licence: Callable[[], float] | None = None,
        fence: ArpFence | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime = check_lifetime(lifetime)
        self.table = table or AddressTable()
        self.sender = sender or GratuitousSender(arp_forms, ipv6_router)
        self.announcer = Announcer(self._announce, announce or AnnounceConfig())
        self.licence = licence or (lambda: float("inf"))
        self.fence = fence
        self.clock = clock
        self._wanted: frozenset[Vip] = frozenset()
        self._held: set[Vip] = set()
        self._failing: set[Vip] = set()
        self._lock = asyncio.Lock()
        self.stats: dict[str, int] = {
            "acquires": 0,
            "releases": 0,
            "renews": 0,
            "renew_errors": 0,
            "add_errors": 0,
            "remove_errors": 0,
            "leftovers_removed": 0,
            "unlicensed": 0,  # acts refused because the licence had ended
        }

    def licensed(self) -> bool:
        """May we assert ownership right now?"""
        return self.clock() < self.licence()

    def held(self) -> set[Vip]:
        """VIPs installed by us and not yet released (a copy)."""
        return set(self._held)

    async def present(self) -> set[Vip]:
        """Held VIPs whose address really is on their interface now (one dump per interface)."""
        return await self.table.present(self.held())

    def wanted(self) -> frozenset[Vip]:
        """VIPs given to the last :meth:`acquire`, until :meth:`release`."""
        return self._wanted

    async def acquire(self, vips: Iterable[Any]) -> Acquired:
        """Install exactly ``vips`` (with lifetime) and announce them.

        VIPs held from an earlier acquire but not in ``vips`` are removed. A VIP that cannot
        be added (e.g. its interface is missing) is reported in ``failed`` and retried by
        every :meth:`renew`. Raises :class:`VipError` only for malformed input.
        """
        wanted = vips_of(vips)
        async with self._lock:
            self._wanted = wanted
            dropped = self._held - wanted
            removal = await self.table.remove_all(dropped) if dropped else Removal()
            self._held -= dropped - set(removal.failed)
            self._fence(wanted)
            added, failed = await self._add(wanted)
            self.stats["acquires"] += 1
            if added:
                self.announcer.start(added)
            else:
                self.announcer.cancel()
        log.info("acquired %d VIP(s), %d failed", len(added), len(failed))
        return Acquired(frozenset(added), failed, removal)

    async def renew(self) -> dict[Vip, str]:
        """Refresh the lifetime of every wanted VIP; returns the failures (VIP -> error).

        One netlink request per VIP. A wanted VIP that had expired or failed before is
        installed again and announced.
        """
        async with self._lock:
            if not self._wanted:
                return {}
            before = set(self._held)
            self._fence(self._wanted)
            added, failed = await self._add(self._wanted)
            self.stats["renews"] += 1
            self.stats["renew_errors"] += len(failed)
            if added - before:
                self.announcer.start(added)  # newcomers: announce the whole set again
        return failed

    async def release(self) -> Removal:
        """Remove every VIP we installed, trying each one; stop announcing. Idempotent."""
        self.announcer.cancel()  # no further frame goes out from here on
        if self.fence is not None:
            self.fence.revoke()  # nor from the kernel
        wanted, self._wanted = self._wanted, frozenset()  # a renew queued behind us: no-op
        async with self._lock:
            wanted |= self._wanted  # an acquire that was queued before us
            self._wanted = frozenset()
            # wanted-but-failed VIPs too: cheap insurance against a half-done add
            removal = await self.table.remove_all(self._held | wanted)
            self._held = set(removal.failed)  # those still expire by their lifetime
            self._failing.clear()
            self.stats["releases"] += 1
            self.stats["remove_errors"] += len(removal.failed)
        await self.announcer.stop()
        log.info(
            "released VIPs: %d removed, %d already gone, %d failed",
            len(removal.removed),
            len(removal.absent),
            len(removal.failed),
        )
        return removal

    async def cleanup_leftovers(self, vips: Iterable[Any]) -> Removal:
        """Remove these VIP addresses wherever they are on this host (a crash's leftovers).

        Meant for start-up, before the first acquire; VIPs we currently want are kept.
        """
        candidates = vips_of(vips)
        async with self._lock:
            mine = {v.ip for v in self._wanted}
            removal = await self.table.cleanup(v for v in candidates if v.ip not in mine)
            self.stats["leftovers_removed"] += len(removal.removed)
        for vip in removal.removed:
            log.warning("removed leftover VIP %s", vip)
        return removal

    async def close(self) -> None:
        """Stop announcing and close sockets. Installed VIPs are left to expire."""
        await self.announcer.stop()
        self.sender.close()
        self.table.close()

    async def __aenter__(self) -> VipManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _fence(self, vips: frozenset[Vip]) -> None:
        """Let the kernel claim ``vips`` until the licence ends (nothing if it has)."""
        if self.fence is not None:
            until = self.licence()
            if self.clock() < until:
                self.fence.license(vips, until)
            else:
                self.fence.revoke()

    def _announce(self, vips: frozenset[Vip]) -> None:
        """One announcement round; each frame only while licensed."""
        for vip in sorted(vips):
            if not self.licensed():
                self.stats["unlicensed"] += 1
                return
            self.sender.send((vip,))

    async def _add(self, vips: Iterable[Vip]) -> tuple[set[Vip], dict[Vip, str]]:
        added: set[Vip] = set()
        failed: dict[Vip, str] = {}
        for vip in sorted(vips):
            if not self.licensed():
                failed[vip] = UNLICENSED
                self.stats["unlicensed"] += 1
                continue
            try:
                await self.table.add(vip, self.lifetime)
                if not self.licensed():  # the licence ended while the kernel worked
                    await self.table.remove(vip)
                    self._held.discard(vip)
                    failed[vip] = UNLICENSED
                    self.stats["unlicensed"] += 1
                    continue
            except Exception as exc:  # one bad VIP must not block the rest
                failed[vip] = str(exc)
                self._held.discard(vip)
                self.stats["add_errors"] += 1
                if vip not in self._failing:  # log changes, not every renew
                    self._failing.add(vip)
                    log.error("could not add VIP %s: %s", vip, exc)
            else:
                added.add(vip)
                self._held.add(vip)
                if vip in self._failing:
                    self._failing.discard(vip)
                    log.info("VIP %s installed after earlier failures", vip)
        return added, failed
