"""VIPs: held, who holds each (this router's view), announcements, the ARP fence."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .families import counter, gauge, gauges

if TYPE_CHECKING:
    from ..pulse import Pulse


def collect(p: Pulse) -> Iterator[object]:
    if p.vips is not None:
        yield gauge("lvs_vips_held", "VIPs this router holds", len(p.vips.held()))
        yield counter("lvs_vip_unlicensed_acts", "VIP adds and announcements refused "
                      "because the licence had ended", p.vips.stats["unlicensed"])
        sent = p.vips.sender.stats
        yield counter("lvs_garp_sent", "gratuitous ARP frames sent (IPv4 VIPs)", sent.garp)
        yield counter("lvs_unsolicited_na_sent", "unsolicited neighbour advertisements "
                      "sent (IPv6 VIPs)", sent.na)
    if p.plan is not None:
        yield gauges("lvs_vip_info", "1 for each configured VIP, labelled with the router "
                     "holding it as this router sees it (itself, else the peer claiming "
                     "active in its heartbeats; \"\": none)", ["vip", "router"],
                     (([ip, holder], 1.0) for ip, holder in sorted(holders(p).items())))
    if p.fence is not None:
        yield gauge("lvs_vip_fence_enabled", "1 if the nftables VIP fence is in place",
                    1.0 if p.fence.enabled else 0.0)
        yield counter("lvs_vip_fence_errors", "failed writes of the VIP fence", p.fence.errors)
        yield counter("lvs_vip_fence_deferred", "licence renewals of the VIP fence skipped "
                      "while a data-plane change was being written (the kernel's licence, "
                      "shorter, stood)", p.fence.deferred)


def holders(p: Pulse) -> dict[str, str]:
    """Each configured VIP's holder as this router sees it."""
    assert p.plan is not None
    mine = {v.ip for v in p.vips.held()} if p.vips is not None else set()
    claims = p.heartbeat.active_claims() if p.heartbeat is not None else {}
    other = max(claims, key=lambda peer: claims[peer], default="")
    return {v.ip: p.opts.node if v.ip in mine else other for v in p.plan.vips}
