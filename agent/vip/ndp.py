"""IPv6 unsolicited neighbour advertisement frames (pure), RFC 4861 section 7.2.6.

Sent from the VIP itself to all-nodes ``ff02::1`` (Ethernet 33:33:00:00:00:01), hop limit 255,
with the Override flag (replace cached link-layer addresses), Solicited clear, and a target
link-layer address option carrying the interface's MAC. The Router flag should be set when
the VIP is a router's address (keepalived sets it when the interface forwards): a neighbour
that sees R=0 for a router drops it from its default-router list.
"""

from __future__ import annotations

import ipaddress
import struct

from .arp import mac_bytes

ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
ND_OPT_TARGET_LL_ADDR = 2
NA_FLAG_ROUTER = 0x80000000
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmpv6_checksum(src: bytes, dst: bytes, message: bytes) -> int:
    """ICMPv6 checksum over the IPv6 pseudo-header and ``message`` (checksum field zero)."""
    pseudo = src + dst + struct.pack("!I3xB", len(message), IPPROTO_ICMPV6)
    return checksum(pseudo + message)


def unsolicited_na(mac: str | bytes, ip: str, router: bool = False) -> bytes:
    """One unsolicited NA Ethernet frame announcing that ``ip`` is at ``mac``."""
    lladdr = mac_bytes(mac)
    target = ipaddress.IPv6Address(ip).packed
    flags = NA_FLAG_OVERRIDE | (NA_FLAG_ROUTER if router else 0)
    option = struct.pack("!BB", ND_OPT_TARGET_LL_ADDR, 1) + lladdr
    body = struct.pack("!I", flags) + target + option
    src, dst = target, ALL_NODES.packed
    csum = icmpv6_checksum(src, dst, struct.pack("!BBH", ND_NEIGHBOR_ADVERT, 0, 0) + body)
    icmp = struct.pack("!BBH", ND_NEIGHBOR_ADVERT, 0, csum) + body
    ipv6 = struct.pack("!IHBB", 6 << 28, len(icmp), IPPROTO_ICMPV6, 255) + src + dst
    eth = ALL_NODES_MAC + lladdr + struct.pack("!H", ETH_P_IPV6)
    return eth + ipv6 + icmp
