"""IPv4 packets of the resume nudge, built and parsed by hand (pure, no I/O).

Three kinds, each a whole IPv4 datagram for a raw socket with IP_HDRINCL:

- :func:`syn`: a bare SYN on an established connection. RFC 5961 4.2 makes a TCP that
  receives one answer with a *challenge ACK* and drop it, whatever its sequence number:
  the answer tells us the receiver's ``rcv_nxt`` (its ACK field), and nothing reaches the
  application, so the probe can never inject data.
- :func:`host_unreachable`: ICMP destination unreachable, code 1 (host), quoting the
  header of a segment the receiver sent. RFC 6069 (TCP-LD, Linux since 2.6.36, IPv4):
  when the quoted sequence number is the receiver's oldest unacknowledged byte and its
  retransmission timer is backed off, it undoes one doubling of the timer and retransmits
  at once if the undone timer has already run out. For a connection that is not backed
  off it is a soft error, kept only to be reported if the connection later times out.
- :func:`tcp_ack_fields`: the addresses, ports and ACK number of a captured TCP segment.
"""

from __future__ import annotations

import ipaddress
import struct

from agent.vip.ndp import checksum  # RFC 1071, one home for it

TCP = 6
ICMP = 1
SYN = 0x02
RST = 0x04
ACK = 0x10
ICMP_UNREACH = 3
ICMP_HOST_UNREACH = 1

Address = tuple[str, int]  # (IPv4 address, port)

__all__ = ["checksum", "host_unreachable", "ipv4", "syn", "tcp_ack_fields", "tcp_segment"]


def _a(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    """An IPv4 datagram (no options, DF set) around ``payload``."""
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, ttl,
                         proto, 0, _a(src), _a(dst))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def tcp_segment(src: Address, dst: Address, seq: int, ack: int, flags: int,
                window: int = 0) -> bytes:
    """A TCP segment without options or data, in its IPv4 datagram."""
    head = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                       5 << 4, flags, window, 0, 0)
    pseudo = _a(src[0]) + _a(dst[0]) + struct.pack("!BBH", 0, TCP, len(head))
    head = head[:16] + struct.pack("!H", checksum(pseudo + head)) + head[18:]
    return ipv4(src[0], dst[0], TCP, head)


def syn(src: Address, dst: Address) -> bytes:
    """The challenge-ACK probe: a SYN from ``src`` to ``dst`` of an established connection."""
    return tcp_segment(src, dst, 0, 0, SYN)


def host_unreachable(src: str, sent_from: Address, sent_to: Address, seq: int) -> bytes:
    """ICMP host unreachable from ``src`` to ``sent_from[0]``, quoting a segment it sent
    from ``sent_from`` to ``sent_to`` with sequence number ``seq`` (the IP header and the
    first 8 bytes of TCP, as RFC 792 asks)."""
    quoted = ipv4(sent_from[0], sent_to[0], TCP,
                  struct.pack("!HHI", sent_from[1], sent_to[1], seq & 0xFFFFFFFF))
    body = struct.pack("!BBHI", ICMP_UNREACH, ICMP_HOST_UNREACH, 0, 0) + quoted
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    return ipv4(src, sent_from[0], ICMP, body)


def tcp_ack_fields(packet: bytes) -> tuple[Address, Address, int] | None:
    """(source, destination, ACK number) of an IPv4 TCP segment with ACK set and neither
    SYN nor RST; None for anything else (or a truncated packet)."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != TCP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 14:
        return None
    sport, dport, _seq, ack, _off, flags = struct.unpack_from("!HHIIBB", packet, ihl)
    if not flags & ACK or flags & (SYN | RST):
        return None
    src = str(ipaddress.IPv4Address(packet[12:16]))
    dst = str(ipaddress.IPv4Address(packet[16:20]))
    return (src, sport), (dst, dport), ack
