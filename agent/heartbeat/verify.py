"""Stateful acceptance of heartbeats: cluster, sender, freshness and anti-replay. No I/O.

A packet is accepted at most once: per sender we keep the newest incarnation and a
sliding window of the last :data:`WINDOW` sequence numbers (as IPsec does), so packets
reordered between links are accepted while duplicates and replays are not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.heartbeat.packet import Heartbeat, Incarnation, Rejected, decode

WINDOW = 64  # sequence numbers remembered below the newest one


@dataclass
class _Seen:
    incarnation: Incarnation
    top: int  # newest seq accepted
    bitmap: int  # bit i set: seq top-i was accepted
    last_accept: float  # monotonic


class ReplayGuard:
    """Remembers which (incarnation, seq) each sender already used."""

    def __init__(self, silence: float) -> None:
        """``silence``: after this long without a valid packet from a sender (monotonic
        seconds), an *older* incarnation of it is accepted again. This lets a peer whose
        clock stepped back come back; it is safe when ``silence`` is at least twice the
        freshness window, because every packet of a superseded run is stale by then."""
        self._silence = silence
        self._seen: dict[str, _Seen] = {}

    def check(self, hb: Heartbeat, now: float) -> None:
        """Record ``hb`` as seen, or raise ``Rejected("replay")`` if it must not count."""
        seen = self._seen.get(hb.node)
        if seen is None or hb.incarnation > seen.incarnation:
            self._seen[hb.node] = _Seen(hb.incarnation, hb.seq, 1, now)
            return
        if hb.incarnation < seen.incarnation:
            if now - seen.last_accept <= self._silence:
                raise Rejected("replay", f"{hb.node}: older incarnation {hb.incarnation}")
            self._seen[hb.node] = _Seen(hb.incarnation, hb.seq, 1, now)
            return
        if hb.seq > seen.top:
            shift = hb.seq - seen.top
            seen.bitmap = ((seen.bitmap << shift) | 1) & ((1 << WINDOW) - 1)
            seen.top = hb.seq
        else:
            age = seen.top - hb.seq
            if age >= WINDOW or seen.bitmap >> age & 1:
                raise Rejected("replay", f"{hb.node}: seq {hb.seq} already seen or too old")
            seen.bitmap |= 1 << age
        seen.last_accept = now

    def forget(self, node: str) -> None:
        """Drop what is known about ``node``."""
        self._seen.pop(node, None)


class Verifier:
    """Turns datagrams into accepted heartbeats for one node of one cluster.

    Checks, in order: size/format/version (malformed), MAC (bad_mac), body (malformed),
    cluster (wrong_cluster), sender is a configured peer (unknown_sender), timestamp within
    +-``freshness`` of our wall clock (stale), not seen before (replay).
    """

    def __init__(
        self, cluster: str, node: str, peers: Iterable[str], key: bytes, freshness: float
    ) -> None:
        self._cluster = cluster
        self._node = node
        self._peers = frozenset(peers) - {node}
        self._key = key
        self._freshness = freshness
        self.replay = ReplayGuard(silence=2 * freshness)

    def verify(self, data: bytes, now: float, wall: float) -> Heartbeat:
        """Return the heartbeat in ``data`` or raise :class:`Rejected`.

        ``now`` is monotonic seconds, ``wall`` our wall clock in seconds since the epoch.
        """
        hb = decode(data, self._key)
        if hb.cluster != self._cluster:
            raise Rejected("wrong_cluster", f"cluster {hb.cluster!r} from {hb.node!r}")
        if hb.node not in self._peers:
            what = "our own name" if hb.node == self._node else "not a configured peer"
            raise Rejected("unknown_sender", f"sender {hb.node!r} is {what}")
        skew = hb.timestamp - wall
        if abs(skew) > self._freshness:
            raise Rejected("stale", f"{hb.node}: timestamp off by {skew:+.3f}s")
        self.replay.check(hb, now)
        return hb
