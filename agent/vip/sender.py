"""Send one announcement round for a set of VIPs: gratuitous ARP (IPv4) or unsolicited NA (IPv6).

Frames are built once per (VIP, MAC) and written to a cached packet socket per interface.
Errors are logged and counted, never raised: an announcement is best effort.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from .arp import ARP_FORMS, ArpForm, garps
from .link import Links
from .model import Vip
from .ndp import unsolicited_na

log = logging.getLogger(__name__)
_MAX_CACHED = 4096  # (VIP, MAC) pairs; MACs and VIP sets rarely change


@dataclass
class SendStats:
    rounds: int = 0
    frames: int = 0
    errors: int = 0
    garp: int = 0  # of the frames: gratuitous ARP (IPv4)
    na: int = 0  # unsolicited neighbour advertisements (IPv6)


class GratuitousSender:
    """Announce VIPs from the MAC of their interface.

    ``arp_forms``: which gratuitous ARP forms to send per IPv4 VIP (default both, as
    send_arp/keepalived users expect). ``ipv6_router``: the NA Router flag; ``None`` follows
    the interface's IPv6 forwarding setting.
    """

    def __init__(
        self, arp_forms: tuple[ArpForm, ...] = ARP_FORMS, ipv6_router: bool | None = None
    ) -> None:
        if not arp_forms or any(f not in ARP_FORMS for f in arp_forms):
            raise ValueError(f"arp_forms must be a non-empty subset of {ARP_FORMS}")
        self.arp_forms = tuple(arp_forms)
        self.ipv6_router = ipv6_router
        self.links = Links()
        self.stats = SendStats()
        self._frames: dict[tuple[Vip, bytes], list[bytes]] = {}

    def frames(self, vip: Vip, mac: bytes, forwarding: bool) -> list[bytes]:
        key = (vip, mac)
        frames = self._frames.get(key)
        if frames is None:
            if vip.version == 4:
                frames = garps(mac, vip.ip, self.arp_forms)
            else:
                router = forwarding if self.ipv6_router is None else self.ipv6_router
                frames = [unsolicited_na(mac, vip.ip, router)]
            if len(self._frames) >= _MAX_CACHED:
                self._frames.clear()
            self._frames[key] = frames
        return frames

    def send(self, vips: Iterable[Vip]) -> int:
        """Send one round for ``vips``; returns the number of frames sent."""
        sent = 0
        for vip in sorted(vips):
            try:
                link = self.links.get(vip.interface)
                for frame in self.frames(vip, link.mac, link.ipv6_forwarding):
                    link.send(frame)
                    sent += 1
                    if vip.version == 4:
                        self.stats.garp += 1
                    else:
                        self.stats.na += 1
            except OSError as exc:
                self.stats.errors += 1
                self.links.drop(vip.interface)
                log.warning("announcing %s failed: %s", vip, exc)
        self.stats.rounds += 1
        self.stats.frames += sent
        return sent

    def close(self) -> None:
        self.links.close()
        self._frames.clear()
