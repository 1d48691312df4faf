"""Gratuitous ARP frames (pure): the two forms send_arp and keepalived use.

Both are broadcast from the interface's MAC with sender and target IP = the VIP:

* ``request`` (RFC 5227 "ARP announcement", keepalived): opcode 1, target MAC ff:ff:ff:ff:ff:ff.
* ``reply`` (``arping -A``, Piranha's send_arp): opcode 2, target MAC = sender MAC. Linux only
  treats a reply as gratuitous (and overrides a fresh neighbour entry despite ``locktime``)
  when the target MAC equals the sender MAC.

Frames are built by hand with :mod:`struct` (no scapy at run time) and padded to the
60-byte Ethernet minimum.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Literal

ArpForm = Literal["request", "reply"]
ARP_FORMS: tuple[ArpForm, ...] = ("request", "reply")

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
BROADCAST = b"\xff" * 6
ETH_ZLEN = 60  # minimum Ethernet frame without FCS

_OPS: dict[str, int] = {"request": ARPOP_REQUEST, "reply": ARPOP_REPLY}


def mac_bytes(mac: str | bytes) -> bytes:
    """``"02:00:00:00:00:01"`` (or 6 raw bytes) -> 6 bytes."""
    if isinstance(mac, bytes):
        raw = mac
    else:
        parts = mac.split(":")
        if len(parts) != 6:
            raise ValueError(f"not a MAC address: {mac!r}")
        raw = bytes(int(p, 16) for p in parts)
    if len(raw) != 6:
        raise ValueError(f"not a 6-byte MAC address: {mac!r}")
    return raw


def mac_text(raw: bytes) -> str:
    """6 bytes -> ``"02:00:00:00:00:01"``."""
    return ":".join(f"{b:02x}" for b in raw)


def garp(mac: str | bytes, ip: str, form: ArpForm = "request") -> bytes:
    """One gratuitous ARP Ethernet frame announcing that ``ip`` is at ``mac``."""
    if form not in _OPS:
        raise ValueError(f"ARP form must be one of {ARP_FORMS}, got {form!r}")
    sha = mac_bytes(mac)
    spa = ipaddress.IPv4Address(ip).packed
    tha = sha if form == "reply" else BROADCAST
    eth = BROADCAST + sha + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", ARPHRD_ETHER, ETH_P_IP, 6, 4, _OPS[form]) + sha + spa + tha + spa
    return (eth + arp).ljust(ETH_ZLEN, b"\x00")


def garps(mac: str | bytes, ip: str, forms: tuple[ArpForm, ...] = ARP_FORMS) -> list[bytes]:
    """The frames of one announcement of ``ip``: one per form."""
    return [garp(mac, ip, form) for form in forms]
