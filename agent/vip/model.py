"""What a virtual IP is: a validated, hashable value. Nothing here touches the kernel."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

IFNAMSIZ = 16  # kernel limit, including the trailing NUL
MAX_LIFETIME = 0xFFFFFFFE  # 0xFFFFFFFF means "forever" to the kernel


class VipError(ValueError):
    """A VIP or a VIP option is malformed; the message says what and why."""


@dataclass(frozen=True, order=True)
class Vip:
    """One floating address: ``Vip("192.168.1.100", 24, "eth0", "eth0:1")``.

    ``ip`` is kept in canonical text form (IPv6 compressed). ``label`` is IPv4 only
    (an alias name such as ``eth0:1``); IPv6 VIPs have ``label=None``.
    """

    ip: str
    prefixlen: int
    interface: str
    label: str | None = None

    def __post_init__(self) -> None:
        try:
            addr = ipaddress.ip_address(self.ip)
        except ValueError:
            raise VipError(f"VIP address {self.ip!r} is not an IPv4 or IPv6 address") from None
        object.__setattr__(self, "ip", addr.compressed)
        limit = 32 if addr.version == 4 else 128
        if isinstance(self.prefixlen, bool) or not isinstance(self.prefixlen, int):
            raise VipError(
                f"VIP {self.ip}: prefix length must be an integer, got {self.prefixlen!r}"
            )
        if not 1 <= self.prefixlen <= limit:
            raise VipError(f"VIP {self.ip}: prefix length {self.prefixlen} is not in 1..{limit}")
        _check_ifname(self.interface, f"VIP {self.ip}: interface")
        if self.label is not None:
            if addr.version == 6:
                raise VipError(f"VIP {self.ip}: IPv6 addresses take no label")
            _check_ifname(self.label, f"VIP {self.ip}: label")
            if not self.label.startswith(self.interface):
                raise VipError(
                    f"VIP {self.ip}: label {self.label!r} must start with the interface "
                    f"name {self.interface!r} (e.g. {self.interface}:1)"
                )
        if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
            raise VipError(f"VIP {self.ip}: must be a unicast address")

    @property
    def version(self) -> int:
        """4 or 6."""
        return 6 if ":" in self.ip else 4

    def __str__(self) -> str:
        alias = f" ({self.label})" if self.label else ""
        return f"{self.ip}/{self.prefixlen} dev {self.interface}{alias}"

    @classmethod
    def of(cls, value: Vip | tuple | list) -> Vip:
        """A :class:`Vip` from itself or from ``(ip, prefixlen, interface[, label])``."""
        if isinstance(value, Vip):
            return value
        if isinstance(value, tuple | list) and len(value) in (3, 4):
            return cls(*value)
        raise VipError(f"a VIP must be (ip, prefixlen, interface[, label]), got {value!r}")


def vips_of(values: Iterable[Any]) -> frozenset[Vip]:
    """Validate a collection of VIPs; two VIPs may not share one address."""
    vips = frozenset(Vip.of(v) for v in values)
    seen: dict[str, Vip] = {}
    for vip in sorted(vips):
        if vip.ip in seen:
            raise VipError(f"address {vip.ip} is given twice: {seen[vip.ip]} and {vip}")
        seen[vip.ip] = vip
    return vips


def check_lifetime(lifetime: object) -> int:
    """A VIP lifetime in whole seconds (the kernel's unit): an int in 1..2**32-2."""
    if isinstance(lifetime, bool) or not isinstance(lifetime, int):
        raise VipError(f"VIP lifetime must be a whole number of seconds, got {lifetime!r}")
    if not 1 <= lifetime <= MAX_LIFETIME:
        raise VipError(f"VIP lifetime {lifetime} s is not in 1..{MAX_LIFETIME}")
    return lifetime


def _check_ifname(name: object, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise VipError(f"{what} must be a non-empty string, got {name!r}")
    if len(name.encode()) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise VipError(f"{what} {name!r} is not a valid Linux interface name (max 15 chars)")
