"""The connections to nudge and the packets for each (pure, no I/O).

A :class:`Flow` is one TCP connection the new active forwards with NAT, as each end sees
it: the client talks to ``vip``; the real server talks to ``peer`` (the client itself, or
the director's address under full NAT). The plan for each flow (docs/conntrack-sync.md,
"Resuming at once"):

1. :func:`probes`: a SYN to each end, as if from the other: each answers with a
   challenge ACK carrying its ``rcv_nxt``.
2. :func:`nudges`: the server's ``rcv_nxt`` is the client's oldest unacknowledged byte
   (and the other way round); ICMP host unreachable quoting it, ``count`` times (each
   undoes one doubling of the retransmission timer), makes a backed-off end retransmit
   now instead of at its next timeout.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import packets
from .packets import Address

Packet = tuple[str, bytes]  # (destination address, IPv4 datagram)


@dataclass(frozen=True, order=True)
class Flow:
    client: Address  # the client, as it sends
    vip: Address  # what it sends to
    server: Address  # the real server, as it sends
    peer: Address  # what the server sends to (the client, or our address with full NAT)

    def keys(self) -> dict[tuple[Address, Address], str]:
        """Direction of the packets of this flow we may capture, by (source, destination):
        before and after the director's NAT."""
        return {(self.server, self.peer): "server", (self.vip, self.client): "server",
                (self.client, self.vip): "client", (self.peer, self.server): "client"}


def probes(flows: Iterable[Flow]) -> list[Packet]:
    """Two challenge-ACK probes per flow: to the server from its peer, to the client from
    the VIP."""
    out = []
    for f in flows:
        out.append((f.server[0], packets.syn(f.peer, f.server)))
        out.append((f.client[0], packets.syn(f.vip, f.client)))
    return out


def nudges(flows: Iterable[Flow], acks: Mapping[tuple[Flow, str], int],
           count: int) -> list[Packet]:
    """ICMP host unreachable to each end whose peer's ACK we saw, ``count`` times:
    ``acks[(flow, "server")]`` is the server's rcv_nxt, the seq the client must resend."""
    out = []
    for f in flows:
        seq = acks.get((f, "server"))
        if seq is not None:
            pkt = packets.host_unreachable(f.vip[0], f.client, f.vip, seq)
            out += [(f.client[0], pkt)] * count
        seq = acks.get((f, "client"))
        if seq is not None:
            pkt = packets.host_unreachable(f.vip[0], f.server, f.peer, seq)
            out += [(f.server[0], pkt)] * count
    return out


def _v4(address: object) -> str | None:
    try:
        return str(ipaddress.IPv4Address(str(address)))
    except ValueError:
        return None


def from_conntrack(text: str, vips: Iterable[str]) -> list[Flow]:
    """Flows of ``conntrack -L -p tcp --state ESTABLISHED`` output: IPv4, addressed to one
    of ``vips`` and translated to another destination (NAT). A line names the original
    tuple, then the reply tuple: ``tcp 6 431999 ESTABLISHED src= dst= sport= dport= ...
    src= dst= sport= dport= [ASSURED] ...``."""
    wanted = {a for a in map(_v4, vips) if a}
    out = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 4 or cols[0] != "tcp" or cols[3] != "ESTABLISHED":
            continue
        tuples: dict[str, list[str]] = {}
        for col in cols[4:]:
            key, eq, value = col.partition("=")
            if eq and key in ("src", "dst", "sport", "dport"):
                tuples.setdefault(key, []).append(value)
        try:
            (client, server), (vip, peer) = tuples["src"][:2], tuples["dst"][:2]
            (cport, sport), (vport, pport) = (tuple(map(int, tuples["sport"][:2])),
                                              tuple(map(int, tuples["dport"][:2])))
        except (KeyError, ValueError):
            continue
        addrs = [_v4(a) for a in (client, vip, server, peer)]
        if None in addrs or addrs[1] not in wanted or (addrs[2], sport) == (addrs[1], vport):
            continue  # not ours, IPv6, or not translated
        out.append(Flow((addrs[0], cport), (addrs[1], vport),  # type: ignore[arg-type]
                        (addrs[2], sport), (addrs[3], pport)))  # type: ignore[arg-type]
    return out


def from_ip_vs_conn(text: str, vips: Iterable[str]) -> list[Flow]:
    """Flows of ``/proc/net/ip_vs_conn`` (IPVS with NAT): TCP, ESTABLISHED, IPv4, to one
    of ``vips``. Columns: Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires ..., in hex."""
    wanted = {a for a in map(_v4, vips) if a}
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8 or cols[0] != "TCP" or cols[7] != "ESTABLISHED":
            continue
        try:
            (client, cport, vip, vport, server, sport) = (
                _hex_ip(cols[1]), int(cols[2], 16), _hex_ip(cols[3]), int(cols[4], 16),
                _hex_ip(cols[5]), int(cols[6], 16))
        except ValueError:
            continue
        if vip in wanted:
            out.append(Flow((client, cport), (vip, vport), (server, sport), (client, cport)))
    return out


def _hex_ip(text: str) -> str:
    if len(text) != 8:
        raise ValueError(text)
    return str(ipaddress.IPv4Address(int(text, 16)))
