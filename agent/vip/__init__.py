"""Floating virtual IPs for the active router.

The election calls :class:`VipManager`: ``acquire`` on takeover, ``renew`` on each lease
refresh, ``release`` when it stops being active. Modules, one concern each:

* :mod:`.model` - the :class:`Vip` value and input validation
* :mod:`.addresses` - kernel addresses with finite lifetimes (pyroute2, asyncio)
* :mod:`.arp`, :mod:`.ndp` - gratuitous ARP / unsolicited NA frames (pure)
* :mod:`.link` - raw packet sockets per interface
* :mod:`.sender` - one announcement round for a set of VIPs
* :mod:`.announcer` - the announcement schedule after a takeover
* :mod:`.fence` - nftables: the kernel claims a VIP only while the licence lasts
* :mod:`.manager` - the facade
"""

from .addresses import AddressError, AddressTable, Removal
from .announcer import AnnounceConfig, Announcer, offsets
from .fence import ArpFence
from .manager import Acquired, VipManager
from .model import Vip, VipError, vips_of

__all__ = [
    "Acquired",
    "AddressError",
    "AddressTable",
    "AnnounceConfig",
    "Announcer",
    "ArpFence",
    "Removal",
    "Vip",
    "VipError",
    "VipManager",
    "offsets",
    "vips_of",
]
