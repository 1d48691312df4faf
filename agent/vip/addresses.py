"""VIP addresses in the kernel: add / renew / remove / list with a finite lifetime.

Thin asyncio shell over one :class:`pyroute2.AsyncIPRoute` socket in the caller's network
namespace. Every address is written with ``valid_lft = preferred_lft = lifetime`` (whole
seconds) through ``RTM_NEWADDR`` with ``NLM_F_REPLACE | NLM_F_CREATE``, so the same call
creates the address or refreshes its lifetime; if nobody renews it, the kernel deletes it.
IPv6 VIPs carry ``IFA_F_NODAD`` so they are usable at once (no duplicate address detection).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from .model import Vip, check_lifetime

log = logging.getLogger(__name__)

# The address (or its interface) is not there: for a removal, that is success.
_GONE = frozenset({errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENXIO, errno.ENOENT})


class AddressError(OSError):
    """The kernel refused an address operation (the message names the VIP)."""


@dataclass(frozen=True)
class Removal:
    """Outcome of removing a set of VIPs: every VIP lands in exactly one field."""

    removed: frozenset[Vip] = frozenset()
    absent: frozenset[Vip] = frozenset()  # already gone (expired, removed by hand, no link)
    failed: Mapping[Vip, str] = field(default_factory=dict)  # VIP -> error text

    @property
    def ok(self) -> bool:
        return not self.failed


class AddressTable:
    """Add, renew, list and remove VIP addresses in the current network namespace.

    Create it inside the running event loop; call :meth:`close` when done. Interface
    indexes are cached and looked up again when an interface disappears.
    """

    def __init__(self) -> None:
        self._ipr: AsyncIPRoute | None = None
        self._index: dict[str, int] = {}

    @property
    def ipr(self) -> AsyncIPRoute:
        if self._ipr is None:
            self._ipr = AsyncIPRoute(groups=0)  # no multicast subscriptions: requests only
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def ifindex(self, interface: str) -> int:
        """Index of ``interface``; :class:`AddressError` (ENODEV) if there is none."""
        idx = self._index.get(interface)
        if idx is None:
            found = await self.ipr.link_lookup(ifname=interface)
            if not found:
                raise AddressError(errno.ENODEV, f"no interface {interface!r}")
            idx = self._index[interface] = found[0]
        return idx

    async def add(self, vip: Vip, lifetime: int) -> None:
        """Create ``vip`` or refresh its lifetime to ``lifetime`` seconds from now."""
        check_lifetime(lifetime)
        extra: dict[str, object] = {}
        if vip.version == 6:
            extra["flags"] = IFA_F_NODAD
        elif vip.label:
            extra["label"] = vip.label
        await self._request(
            "replace",
            vip,
            address=vip.ip,
            prefixlen=vip.prefixlen,
            valid_lft=lifetime,
            preferred_lft=lifetime,
            **extra,
        )

    renew = add  # a renewal is the same replace: fresh lifetime, re-created if it had expired

    async def remove(self, vip: Vip) -> bool:
        """Delete ``vip``; True if it was there, False if it was already gone."""
        try:
            await self._request("del", vip, address=vip.ip, prefixlen=vip.prefixlen)
        except AddressError as exc:
            if exc.errno in _GONE:
                return False
            raise
        return True

    async def remove_all(self, vips: Iterable[Vip]) -> Removal:
        """Remove every VIP, trying each one whatever happened to the others."""
        removed: set[Vip] = set()
        absent: set[Vip] = set()
        failed: dict[Vip, str] = {}
        for vip in sorted(vips):
            try:
                (removed if await self.remove(vip) else absent).add(vip)
            except Exception as exc:  # one failure must not stop the others
                failed[vip] = str(exc)
                log.error("could not remove VIP %s: %s", vip, exc)
        return Removal(frozenset(removed), frozenset(absent), failed)

    async def present(self, vips: Iterable[Vip]) -> set[Vip]:
        """Those of ``vips`` whose address is on their own interface (matched by address)."""
        wanted = {(v.interface, v.ip): v for v in vips}
        found: set[Vip] = set()
        for interface in {v.interface for v in wanted.values()}:
            try:
                for ip in await self.addresses(interface):
                    if (interface, ip) in wanted:
                        found.add(wanted[(interface, ip)])
            except AddressError as exc:
                if exc.errno not in _GONE:
                    raise
        return found

    async def addresses(self, interface: str) -> list[str]:
        """Every address on ``interface`` (canonical text form)."""
        idx = await self.ifindex(interface)
        try:
            return [_canon(m.get("address")) async for m in await self.ipr.addr("dump", index=idx)]
        except (NetlinkError, OSError) as exc:
            self._check_socket(exc)
            self._index.pop(interface, None)
            raise _error(exc, f"list addresses on {interface}") from exc

    async def find(self, ips: Iterable[str]) -> list[Vip]:
        """Addresses in ``ips`` found on any interface of this namespace, as they are there."""
        wanted = {_canon(ip) for ip in ips}
        try:
            links = [link async for link in await self.ipr.link("dump")]
            dump = [msg async for msg in await self.ipr.addr("dump")]
        except (NetlinkError, OSError) as exc:
            self._check_socket(exc)
            raise _error(exc, "list addresses") from exc
        names = {link["index"]: link.get("ifname") for link in links}
        found = []
        for msg in dump:
            ip = _canon(msg.get("address"))
            if ip in wanted and msg["index"] in names:
                label = msg.get("label") if msg["family"] == socket.AF_INET else None
                ifname = names[msg["index"]]
                found.append(Vip(ip, msg["prefixlen"], ifname, label if label != ifname else None))
        return found

    async def cleanup(self, vips: Iterable[Vip]) -> Removal:
        """Remove VIP addresses left on this host (e.g. by a crashed agent).

        Matches by address on every interface, whatever the prefix length or label there.
        """
        return await self.remove_all(await self.find(v.ip for v in vips))

    def _check_socket(self, exc: Exception) -> None:
        """After a socket-level error (not a kernel refusal) start over with a new socket."""
        if not isinstance(exc, NetlinkError):
            log.warning("netlink socket error, reopening: %s", exc)
            self.close()

    async def _request(self, command: str, vip: Vip, **kwarg: object) -> None:
        for attempt in (1, 2):
            idx = await self.ifindex(vip.interface)
            try:
                await self.ipr.addr(command, index=idx, **kwarg)
                return
            except (NetlinkError, OSError) as exc:
                self._check_socket(exc)
                error = _error(exc, f"{command} {vip}")
                if error.errno == errno.ENODEV:
                    self._index.pop(vip.interface, None)  # the link may have been re-created
                    if attempt == 1:
                        continue
                raise error from exc


def _canon(ip: object) -> str:
    try:
        return ipaddress.ip_address(str(ip)).compressed
    except ValueError:
        return str(ip)


def _error(exc: Exception, what: str) -> AddressError:
    code = getattr(exc, "code", None) or getattr(exc, "errno", None) or errno.EIO
    reason = exc.args[1] if isinstance(exc, NetlinkError) and len(exc.args) > 1 else exc
    return AddressError(code, f"{what}: {reason}")
