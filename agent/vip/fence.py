"""The kernel's half of the licence: ARP and NDP claims of a VIP only while licensed.

Our own announcements check the licence before every frame; the kernel, though, answers
ARP requests and neighbour solicitations for every address it holds, and a VIP can outlive
the licence by up to its lifetime plus the kernel's one-second expiry slack when the agent
and its guardian are frozen together. So the agent programs this fence into nftables:

    table arp piranha_fence / table ip6 piranha_fence
      set guarded   every configured VIP
      set licensed  the VIPs we may claim, each with a timeout = what is left of the licence
      chain out     (hook output) a claim from a guarded address that is not licensed: drop

The kernel expires set elements on lookup with millisecond precision, whatever our
process does: once the licence ends, no ARP reply, ARP request or NA/NS from that address
leaves the router, even if every process on it is frozen. Frames sent on packet sockets
(our gratuitous ARP) bypass netfilter: they check the licence themselves.

Best effort: without nftables (no libnftables, no CAP_NET_ADMIN) the fence is off, logged
once and counted; the VIP lifetimes and the takeover wait still hold (docs/protocol.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

from agent.dataplane.nft.libnft import LibNft

from .model import Vip

log = logging.getLogger(__name__)

TABLE = "piranha_fence"
MAX_DRIFT = 0.01  # a write that took longer than this is redone with the time left then


def setup_script(vips: Iterable[Vip]) -> str:
    """nft commands that (re)create both tables, guard ``vips`` and license none (pure)."""
    v4 = sorted(v.ip for v in vips if v.version == 4)
    v6 = sorted(v.ip for v in vips if v.version == 6)
    lines = []
    for family, kind, addrs, rule in (
        ("arp", "ipv4_addr", v4, "arp saddr ip @guarded arp saddr ip != @licensed drop"),
        ("ip6", "ipv6_addr", v6, "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } "
                                 "ip6 saddr @guarded ip6 saddr != @licensed drop"),
    ):
        lines += [
            f"add table {family} {TABLE}",
            f"add set {family} {TABLE} guarded {{ type {kind}; }}",
            f"add set {family} {TABLE} licensed {{ type {kind}; flags timeout; }}",
            f"add chain {family} {TABLE} out {{ type filter hook output priority 0; "
            "policy accept; }",
            f"flush chain {family} {TABLE} out",
            f"flush set {family} {TABLE} guarded",
            f"flush set {family} {TABLE} licensed",
            f"add rule {family} {TABLE} out {rule}",
        ]
        if addrs:
            lines.append(f"add element {family} {TABLE} guarded {{ {', '.join(addrs)} }}")
    return "\n".join(lines) + "\n"


def license_script(vips: Iterable[Vip], seconds: float) -> str:
    """nft commands that license exactly ``vips`` for ``seconds`` (pure; 0: license none)."""
    ms = math.floor(seconds * 1000)
    lines = [f"flush set {f} {TABLE} licensed" for f in ("arp", "ip6")]
    for family, version in (("arp", 4), ("ip6", 6)):
        addrs = sorted(v.ip for v in vips if v.version == version)
        if addrs and ms > 0:
            items = ", ".join(f"{a} timeout {ms}ms" for a in addrs)
            lines.append(f"add element {family} {TABLE} licensed {{ {items} }}")
    return "\n".join(lines) + "\n"


class ArpFence:
    """The fence in this network namespace, written in-process through libnftables."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 lib: LibNft | None = None) -> None:
        self.clock = clock
        self._lib = lib if lib is not None else LibNft.load()
        self.enabled = self._lib is not None
        self.errors = 0
        self.writes = 0
        self._guarded: frozenset[Vip] = frozenset()
        if not self.enabled:
            log.warning("VIP fence off: libnftables not found (the kernel may answer ARP for "
                        "a VIP up to its lifetime after the licence ends)")

    def guard(self, vips: Iterable[Vip]) -> bool:
        """Guard exactly ``vips`` and license none of them (start-up, new configuration)."""
        self._guarded = frozenset(vips)
        return self._run(setup_script(self._guarded), "set up")

    def license(self, vips: Iterable[Vip], until: float) -> bool:
        """Let the kernel claim ``vips`` until ``until`` (monotonic) and no longer."""
        vips = frozenset(vips)
        start = self.clock()
        if not self._run(license_script(vips, until - start), "license"):
            return False
        now = self.clock()
        if now - start > MAX_DRIFT:  # we stalled between reading the clock and the kernel
            return self._run(license_script(vips, until - now), "license (again)")
        return True

    def revoke(self) -> bool:
        """License nothing: the kernel claims none of the guarded VIPs from now on."""
        return self._run(license_script((), 0), "revoke")

    def remove(self) -> None:
        """Delete both tables (clean shutdown, after the VIPs are gone)."""
        self._run("".join(f"delete table {f} {TABLE}\n" for f in ("arp", "ip6")), "remove")
        self.close()

    def close(self) -> None:
        if self._lib is not None:
            self._lib.close()
            self._lib = None

    def _run(self, script: str, what: str) -> bool:
        if self._lib is None:
            return False
        rc, _, err = self._lib.run(script)
        if rc != 0:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.error("VIP fence: %s failed (%d so far): %s", what, self.errors, err.strip())
            return False
        self.writes += 1
        return True
