"""Heartbeats: sent, accepted, dropped (by reason, and by peer), each peer's age and the
age of each of its links (addresses)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .families import counter, counters, gauges

if TYPE_CHECKING:
    from ..pulse import Pulse


def collect(p: Pulse) -> Iterator[object]:
    hb = p.heartbeat
    if hb is None:
        return
    c = hb.counters()
    yield counter("lvs_heartbeat_sent", "heartbeat packets sent", c.sent)
    yield counter("lvs_heartbeat_accepted", "valid heartbeats received", c.accepted)
    yield counters("lvs_heartbeat_dropped", "heartbeats dropped, by reason", ["reason"],
                   (([reason], n) for reason, n in sorted(c.dropped.items())))
    yield counters("lvs_heartbeat_send_errors", "send failures", ["error"],
                   (([err], n) for err, n in sorted(c.send_errors.items())))
    peers = list(hb.config.peers)
    yield gauges("lvs_peer_alive", "1 if the peer's heartbeat is fresh", ["peer"],
                 (([peer], 1.0 if hb.alive(peer) else 0.0) for peer in peers))
    now = hb.now()
    ages = []
    for peer in peers:
        heard = hb.table.last_heard(peer)
        ages.append(([peer], -1.0 if heard is None else max(0.0, now - heard)))
    yield gauges("lvs_heartbeat_peer_age_seconds", "since the newest valid heartbeat from "
                 "the peer (-1: never heard)", ["peer"], ages)
    links = []  # per link: a dead private (or public) path shows here before it matters
    for peer, addresses in hb.config.peers.items():
        view = hb.table.view(peer)
        for address in addresses:
            heard = view.links.get(str(address)) if view is not None else None
            links.append(([peer, str(address)],
                          -1.0 if heard is None else max(0.0, now - heard)))
    yield gauges("lvs_heartbeat_link_age_seconds", "since the newest valid heartbeat from "
                 "the peer over this address of its (-1: never heard there)",
                 ["peer", "address"], links)
    yield counters("lvs_heartbeat_peer_dropped", "heartbeats dropped, by the peer their "
                   "source address belongs to (\"unknown\": none) and reason",
                   ["peer", "reason"],
                   (([peer, reason], n)
                    for (peer, reason), n in sorted(c.dropped_by_peer.items())))
