"""Gratuitous ARP and unsolicited NA frames: checked field by field with scapy's decoder,
and read back by the arpwatch parser."""

import pytest
from support import arpwatch

from agent.vip.arp import garp, garps, mac_bytes, mac_text
from agent.vip.ndp import checksum, unsolicited_na

MAC = "02:00:00:00:00:11"


@pytest.fixture(scope="module")
def scapy():
    from scapy import all as scapy_all  # slow import: only here

    return scapy_all


@pytest.mark.parametrize(("form", "op"), [("request", 1), ("reply", 2)])
def test_garp_fields(scapy, form, op):
    frame = garp(MAC, "192.168.1.100", form)
    assert len(frame) == 60  # padded to the Ethernet minimum
    pkt = scapy.Ether(frame)
    assert pkt.dst == "ff:ff:ff:ff:ff:ff"
    assert pkt.src == MAC
    arp = pkt[scapy.ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen, arp.op) == (1, 0x800, 6, 4, op)
    assert arp.hwsrc == MAC
    assert arp.psrc == arp.pdst == "192.168.1.100"
    # a reply counts as gratuitous for Linux only if target MAC == sender MAC
    assert arp.hwdst == (MAC if form == "reply" else "ff:ff:ff:ff:ff:ff")


def test_garps_one_frame_per_form():
    assert garps(MAC, "10.0.0.1") == [
        garp(MAC, "10.0.0.1", "request"),
        garp(MAC, "10.0.0.1", "reply"),
    ]
    assert garps(MAC, "10.0.0.1", ("reply",)) == [garp(MAC, "10.0.0.1", "reply")]
    with pytest.raises(ValueError, match="ARP form"):
        garp(MAC, "10.0.0.1", "announce")
    with pytest.raises(ValueError):
        garp(MAC, "fd00::1")


@pytest.mark.parametrize("router", [False, True])
def test_unsolicited_na_fields(scapy, router):
    frame = unsolicited_na(MAC, "fd00::100", router=router)
    pkt = scapy.Ether(frame)
    assert pkt.dst == "33:33:00:00:00:01"
    assert pkt.src == MAC
    ip6 = pkt[scapy.IPv6]
    assert (ip6.src, ip6.dst, ip6.hlim, ip6.nh, ip6.plen) == ("fd00::100", "ff02::1", 255, 58, 32)
    na = pkt[scapy.ICMPv6ND_NA]
    assert (na.type, na.code, na.tgt) == (136, 0, "fd00::100")
    assert (int(router), 0, 1) == (na.R, na.S, na.O)
    assert pkt[scapy.ICMPv6NDOptDstLLAddr].lladdr == MAC
    # scapy recomputes the checksum when the field is cleared: ours must match
    rebuilt = scapy.Ether(frame)
    del rebuilt[scapy.ICMPv6ND_NA].cksum
    assert scapy.Ether(bytes(rebuilt))[scapy.ICMPv6ND_NA].cksum == na.cksum


def test_checksum_known_values():
    assert checksum(b"") == 0xFFFF
    assert checksum(b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7") == 0x220D  # RFC 1071 example, inverted
    assert checksum(b"\xff") == checksum(b"\xff\x00")


def test_mac_helpers():
    assert mac_text(mac_bytes(MAC)) == MAC
    assert mac_bytes(b"\x01" * 6) == b"\x01" * 6
    for bad in ("02:00:00:00:00", "zz:00:00:00:00:00", b"\x01" * 5):
        with pytest.raises(ValueError):
            mac_bytes(bad)


def test_arpwatch_reads_our_frames():
    req = arpwatch.parse_frame(garp(MAC, "10.0.0.100", "request"), 1.0)
    rep = arpwatch.parse_frame(garp(MAC, "10.0.0.100", "reply"), 2.0, out=True)
    na = arpwatch.parse_frame(unsolicited_na(MAC, "fd00::100"), 3.0)
    assert req == arpwatch.Event(1.0, "arp-request", "10.0.0.100", MAC, "10.0.0.100", False)
    assert rep == arpwatch.Event(2.0, "arp-reply", "10.0.0.100", MAC, "10.0.0.100", True)
    assert na == arpwatch.Event(3.0, "na", "fd00::100", MAC, None, False)


def test_arpwatch_ignores_junk_and_probes(scapy):
    assert arpwatch.parse_frame(b"", 0) is None
    assert arpwatch.parse_frame(b"\x00" * 13, 0) is None
    assert arpwatch.parse_frame(garp(MAC, "10.0.0.1")[:30], 0) is None
    probe = scapy.Ether(src=MAC) / scapy.ARP(op=1, hwsrc=MAC, psrc="0.0.0.0", pdst="10.0.0.1")
    assert arpwatch.parse_frame(bytes(probe), 0) is None


def test_arpwatch_ip_traffic_only_from_watched_vips(scapy):
    ping4 = bytes(scapy.Ether(src=MAC) / scapy.IP(src="10.0.0.100", dst="10.0.0.1") / scapy.ICMP())
    ping6 = bytes(
        scapy.Ether(src=MAC) / scapy.IPv6(src="fd00::100", dst="fd00::1") / scapy.ICMPv6EchoReply()
    )
    assert arpwatch.parse_frame(ping4, 0) is None
    assert arpwatch.parse_frame(ping4, 0, frozenset({"10.0.0.100"})).kind == "ip4"
    assert arpwatch.parse_frame(ping6, 0, frozenset({"fd00::100"})).mac == MAC
    # an NA without the target link-layer option: the Ethernet source counts
    bare = scapy.Ether(src=MAC) / scapy.IPv6(src="fd00::100") / scapy.ICMPv6ND_NA(tgt="fd00::100")
    assert arpwatch.parse_frame(bytes(bare), 0).mac == MAC
    arp_payload = scapy.Raw(garp(MAC, "10.0.0.7")[14:])
    vlan = bytes(scapy.Ether(src=MAC) / scapy.Dot1Q(vlan=5, type=0x0806) / arp_payload)
    assert arpwatch.parse_frame(vlan, 0).ip == "10.0.0.7"
