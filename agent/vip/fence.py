"""The kernel's half of the licence: no frame claims a VIP unless we are licensed.

The kernel answers ARP requests and neighbour solicitations for every address it holds,
and a VIP can outlive the licence by up to its lifetime plus the kernel's one-second expiry
slack when the agent and its guardian are frozen together; and a process can stop between
checking its licence and sending a frame. So the agent programs this fence into nftables,
on the egress hook of every interface that carries a VIP, where every frame passes (the
kernel's ARP and NDP, and our own gratuitous ARP and NA from packet sockets):

    table netdev piranha_fence
      set guarded4 / guarded6    every configured VIP
      set licensed4 / licensed6  the VIPs we may claim, each with a timeout = licence left
      chain egress_<dev>         (hook egress, device <dev>) an ARP or NS/NA frame whose
                                 sender address is guarded but not licensed: drop

The kernel expires set elements on lookup with millisecond precision, whatever our
process does: once the licence ends, no frame claiming the VIP leaves the router, even if
every process on it is frozen.

Best effort: without nftables (no libnftables, no CAP_NET_ADMIN, no egress hook) the fence
is off, logged and counted; the checks in the agent, the VIP lifetimes and the takeover
wait still hold (docs/protocol.md).
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable, Iterable

from agent.dataplane.nft.libnft import WRITERS, LibNft
from agent.dataplane.nft.netlink import Generation, elsewhere

from .fence_netlink import NetlinkWriter
from .model import Vip

log = logging.getLogger(__name__)

TABLE = "piranha_fence"
FAMILY = "netdev"
MAX_DRIFT = 0.01  # a write that took longer than this is redone with the time left then
WAIT = 0.02  # seconds a renewal waits for its turn to write before it may be skipped
KEEP = 0.5  # seconds of the kernel's licence left below which a renewal is never skipped
RULES = (
    "meta protocol arp arp saddr ip @guarded4 arp saddr ip != @licensed4 drop",
    "meta protocol ip6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } "
    "ip6 saddr @guarded6 ip6 saddr != @licensed6 drop",
)


def chain_name(device: str) -> str:
    """The egress chain of ``device`` (a name nft accepts whatever the device is called)."""
    return "egress_" + "".join(c if c.isalnum() else "_" for c in device)


def setup_script(vips: Iterable[Vip]) -> str:
    """nft commands that (re)create the table: guard ``vips`` on their interfaces and
    license none of them (pure). One transaction: the old fence holds until the new one."""
    vips = sorted(vips)
    v4 = sorted({v.ip for v in vips if v.version == 4})
    v6 = sorted({v.ip for v in vips if v.version == 6})
    t = f"{FAMILY} {TABLE}"
    lines = [f"add table {t}", f"delete table {t}", f"add table {t}",
             f"add set {t} guarded4 {{ type ipv4_addr; }}",
             f"add set {t} licensed4 {{ type ipv4_addr; flags timeout; }}",
             f"add set {t} guarded6 {{ type ipv6_addr; }}",
             f"add set {t} licensed6 {{ type ipv6_addr; flags timeout; }}"]
    if v4:
        lines.append(f"add element {t} guarded4 {{ {', '.join(v4)} }}")
    if v6:
        lines.append(f"add element {t} guarded6 {{ {', '.join(v6)} }}")
    for device in sorted({v.interface for v in vips}):
        chain = chain_name(device)
        lines.append(f'add chain {t} {chain} {{ type filter hook egress device "{device}" '
                     "priority 0; policy accept; }")
        lines += [f"add rule {t} {chain} {rule}" for rule in RULES]
    return "\n".join(lines) + "\n"


def license_script(vips: Iterable[Vip], seconds: float) -> str:
    """nft commands that license exactly ``vips`` for ``seconds`` (pure; 0: license none)."""
    ms = math.floor(seconds * 1000)
    t = f"{FAMILY} {TABLE}"
    lines = [f"flush set {t} licensed4", f"flush set {t} licensed6"]
    for name, version in (("licensed4", 4), ("licensed6", 6)):
        addrs = sorted({v.ip for v in vips if v.version == version})
        if addrs and ms > 0:
            items = ", ".join(f"{a} timeout {ms}ms" for a in addrs)
            lines.append(f"add element {t} {name} {{ {items} }}")
    return "\n".join(lines) + "\n"


class ArpFence:
    """The fence in this network namespace, written in-process through libnftables."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 lib: LibNft | None = None) -> None:
        self.clock = clock
        self._lib = lib if lib is not None else LibNft.load()
        self.enabled = self._lib is not None
        self._netlink: NetlinkWriter | None = None
        self._generation = Generation()
        if self.enabled:
            try:
                self._netlink = NetlinkWriter()
            except OSError as exc:  # libnftables then writes the licence too
                log.warning("VIP fence: no nf_tables netlink socket (%s): licences go "
                            "through libnftables", exc)
        self.errors = 0
        self.writes = 0
        self.deferred = 0  # renewals skipped while another nftables write ran
        self.kept = 0  # renewals that needed no write (the kernel's licence was long enough)
        self._licensed: frozenset[Vip] = frozenset()  # what the kernel licenses, and until
        self._licensed_until = (-math.inf, math.inf)  # when its licence of them ends
        self._guarded: frozenset[Vip] = frozenset()
        if not self.enabled:
            log.warning("VIP fence off: libnftables not found (the kernel may answer ARP for "
                        "a VIP up to its lifetime after the licence ends)")

    def writer(self) -> str:
        """How licences are written: "netlink", "libnftables", or "off"."""
        return "netlink" if self._netlink else "libnftables" if self._lib else "off"

    def guard(self, vips: Iterable[Vip]) -> bool:
        """Guard exactly ``vips`` and license none of them (start-up, new configuration).

        An egress hook needs its interface: VIPs on an interface that does not exist now
        are left out (logged); our own checks still cover them.
        """
        vips = frozenset(vips)
        missing = sorted({v.interface for v in vips if not _has_link(v.interface)})
        if missing:
            log.warning("VIP fence: no interface %s here: its VIPs are not fenced",
                        ", ".join(missing))
        self._guarded = frozenset(v for v in vips if v.interface not in missing)
        self._forget()  # the table is made anew: nothing licensed
        return self._run(setup_script(self._guarded), "set up")

    def _forget(self) -> None:
        """The kernel's licence is unknown from now on: the next licence is written."""
        self._licensed, self._licensed_until = frozenset(), (-math.inf, math.inf)

    def license(self, vips: Iterable[Vip], until: float) -> bool:
        """Let the kernel claim ``vips`` until ``until`` (monotonic) and no longer.

        Written only when needed: while the kernel's licence of these VIPs ends before
        ``until`` and still has half of what ours has left (and :data:`KEEP` seconds), a
        renewal writes nothing (:attr:`kept`). Every nftables write moves the ruleset's
        generation, and a reader of a big ruleset (`nft list`, libnftables before it
        writes) starts again when it moves: renewals every quarter of the VIP lifetime
        kept `nft list` of 40,000 real servers from ever finishing.

        Written in its turn among our nftables writers (:data:`WRITERS`): if another holds
        the turn, a renewal the kernel's licence still covers for :data:`KEEP` seconds is
        skipped (:attr:`deferred`); any other is written at once all the same (the other
        writer reads again, once): a licence is never late. A licence shorter than ours in
        the kernel is always safe.
        """
        vips = frozenset(vips)
        low, high = self._licensed_until
        covered = vips == self._licensed and high <= until + MAX_DRIFT
        if covered and low - self.clock() > max(KEEP, (until - self.clock()) / 2):
            self.kept += 1
            return True
        turn = WRITERS.acquire(timeout=WAIT)
        try:
            if not turn and covered and low - self.clock() > KEEP:
                self.deferred += 1  # the kernel's licence ends before ours, not too soon
                return True
            gen = self._generation.get()  # (read before the clock: it adds nothing to drift)
            start = self.clock()
            if not self._licence(vips, until - start, "license", gen):
                return False
            now = self.clock()
            if now - start > MAX_DRIFT:  # we stalled between reading the clock and the kernel
                return self._licence(vips, until - now, "license (again)")
            return True
        finally:
            if turn:
                WRITERS.release()

    def revoke(self) -> bool:
        """License nothing: the kernel claims none of the guarded VIPs from now on (written
        at once, whatever else is writing)."""
        return self._licence(frozenset(), 0, "revoke")

    def _licence(self, vips: frozenset[Vip], seconds: float, what: str,
                 gen: int | None = None) -> bool:
        """:func:`license_script`'s transaction, as a raw netlink batch when we can (no
        libnftables cache: fence_netlink.py), else through libnftables. ``gen``: the ruleset
        generation read just before; if the write moved it by exactly one, that generation
        is recorded as ours, in another table than the data plane's (its reader then need
        not list its table again)."""
        if self._netlink is None:
            return self._run(license_script(vips, seconds), what)
        sets = [(name, sorted({v.ip for v in vips if v.version == version}))
                for name, version in (("licensed4", 4), ("licensed6", 6))]
        self._forget()  # until the write is known done
        before = self.clock()
        error = self._netlink.write(TABLE, sets, math.floor(seconds * 1000))
        if error is None and seconds > 0:  # the kernel's licence ends in this interval
            self._licensed = vips
            self._licensed_until = (before + seconds, self.clock() + seconds)
        if error is None:
            if self._netlink.generation is not None:  # exactly, whatever else committed
                elsewhere().mark(self._netlink.generation)
            elif gen is not None:
                elsewhere().add(gen, self._generation.get())
        return self._count(error, what)

    def remove(self) -> None:
        """Delete the table (clean shutdown, after the VIPs are gone)."""
        self._forget()
        self._run(f"delete table {FAMILY} {TABLE}\n", "remove")
        self.close()

    def close(self) -> None:
        self._generation.close()
        if self._lib is not None:
            self._lib.close()
            self._lib = None
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None

    def _run(self, script: str, what: str) -> bool:
        if self._lib is None:
            return False
        rc, _, err = self._lib.run(script)
        return self._count(err.strip() if rc != 0 else None, what)

    def _count(self, error: str | None, what: str) -> bool:
        if error is not None:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.error("VIP fence: %s failed (%d so far): %s", what, self.errors, error)
            return False
        self.writes += 1
        return True


def _has_link(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True
