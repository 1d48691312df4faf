"""Floating virtual IPs for the active router.

The election calls :class:`VipManager`: ``acquire`` on takeover, ``renew`` on each lease
refresh, ``release`` when it stops being active. Modules, one concern each:

* :mod:`.model` - the :class:`Vip` value and input validation
* :mod:`.addresses` - kernel addresses with finite lifetimes (pyroute2, asyncio)
* :mod:`.arp`, :mod:`.ndp` - gratuitous ARP / unsolicited NA frames (pure)
* :mod:`.link` - raw packet sockets per interface
* :mod:`.sender` - one announcement round for a set of VIPs
* :mod:`.announcer` - the announcement schedule after a takeover
* :mod:`.manager` - the facade
"""

from .addresses import AddressError, AddressTable, Removal
from .announcer import AnnounceConfig, Announcer, offsets
from .manager import (
    Acquired,
    VipManager,
    lifetime_for_deadline,
    max_renew_interval,
    max_survival,
)
from .model import Vip, VipError, vips_of

__all__ = [
    "Acquired",
    "AddressError",
    "AddressTable",
    "AnnounceConfig",
    "Announcer",
    "Removal",
    "Vip",
    "VipError",
    "VipManager",
    "lifetime_for_deadline",
    "max_renew_interval",
    "max_survival",
    "offsets",
    "vips_of",
]
