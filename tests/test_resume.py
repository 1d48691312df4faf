"""The resume nudge's packets and plans (pure): agent/resume/packets.py and flows.py."""

from __future__ import annotations

import struct

import pytest

from agent.resume import Flow, from_conntrack, from_ip_vs_conn
from agent.resume.flows import nudges, probes
from agent.resume.packets import (
    ACK,
    SYN,
    checksum,
    host_unreachable,
    syn,
    tcp_ack_fields,
    tcp_segment,
)

CLIENT, VIP, SERVER = ("10.0.1.2", 40000), ("10.0.100.1", 80), ("10.0.2.11", 8080)
FLOW = Flow(CLIENT, VIP, SERVER, CLIENT)


def test_checksums_verify() -> None:
    pkt = syn(CLIENT, SERVER)
    assert checksum(pkt[:20]) == 0  # IP header
    pseudo = bytes([10, 0, 1, 2, 10, 0, 2, 11]) + struct.pack("!BBH", 0, 6, 20)
    assert checksum(pseudo + pkt[20:]) == 0  # TCP
    icmp = host_unreachable(VIP[0], CLIENT, VIP, 123)
    assert checksum(icmp[:20]) == 0 and checksum(icmp[20:]) == 0


def test_syn_is_a_bare_syn() -> None:
    pkt = syn(CLIENT, SERVER)
    assert len(pkt) == 40 and pkt[9] == 6
    sport, dport, _seq, _ack, off, flags = struct.unpack_from("!HHIIBB", pkt, 20)
    assert (sport, dport, flags, off >> 4) == (40000, 8080, SYN, 5)
    assert tcp_ack_fields(pkt) is None  # never mistaken for an answer


def test_host_unreachable_quotes_the_segment_the_receiver_sent() -> None:
    pkt = host_unreachable(VIP[0], CLIENT, VIP, 0xDEADBEEF)
    assert pkt[9] == 1 and pkt[12:16] == bytes([10, 0, 100, 1]) and pkt[16:20] == bytes(
        [10, 0, 1, 2])
    assert pkt[20:22] == bytes([3, 1])  # destination unreachable, host
    quoted = pkt[28:]
    assert len(quoted) == 28  # IP header + 8 bytes of TCP (RFC 792)
    assert quoted[12:16] == bytes([10, 0, 1, 2]) and quoted[16:20] == bytes([10, 0, 100, 1])
    assert struct.unpack("!HHI", quoted[20:28]) == (40000, 80, 0xDEADBEEF)


def test_tcp_ack_fields() -> None:
    ack = tcp_segment(SERVER, CLIENT, 5, 0xFFFFFFFE, ACK)
    assert tcp_ack_fields(ack) == (SERVER, CLIENT, 0xFFFFFFFE)
    assert tcp_ack_fields(tcp_segment(SERVER, CLIENT, 5, 7, ACK | 0x04)) is None  # RST
    assert tcp_ack_fields(tcp_segment(SERVER, CLIENT, 5, 7, 0x08)) is None  # no ACK
    assert tcp_ack_fields(ack[:30]) is None
    assert tcp_ack_fields(b"\x60" + ack[1:]) is None  # not IPv4
    assert tcp_ack_fields(b"") is None


def test_probes_ask_each_end_as_if_from_the_other() -> None:
    full_nat = Flow(CLIENT, VIP, SERVER, ("10.0.2.1", 61000))
    (dst1, p1), (dst2, p2) = probes([full_nat])
    assert dst1 == SERVER[0] and p1 == syn(("10.0.2.1", 61000), SERVER)
    assert dst2 == CLIENT[0] and p2 == syn(VIP, CLIENT)


def test_nudges_only_ends_that_answered() -> None:
    assert nudges([FLOW], {}, 8) == []
    out = nudges([FLOW], {(FLOW, "server"): 1000}, 3)
    assert out == [(CLIENT[0], host_unreachable(VIP[0], CLIENT, VIP, 1000))] * 3
    out = nudges([FLOW], {(FLOW, "client"): 77}, 2)
    assert out == [(SERVER[0], host_unreachable(VIP[0], SERVER, CLIENT, 77))] * 2


def test_flow_keys_see_both_sides_of_the_nat() -> None:
    keys = FLOW.keys()
    assert keys[(SERVER, CLIENT)] == keys[(VIP, CLIENT)] == "server"
    assert keys[(CLIENT, VIP)] == keys[(CLIENT, SERVER)] == "client"


def _ct(state: str, orig: str, reply: str, proto: str = "tcp      6 431999") -> str:
    return f"{proto} {state} {orig} {reply} [ASSURED] mark=0 use=1"


CONNTRACK_L = "\n".join([
    _ct("ESTABLISHED", "src=10.0.1.2 dst=10.0.100.1 sport=40000 dport=80",
        "src=10.0.2.11 dst=10.0.1.2 sport=8080 dport=40000"),
    _ct("SYN_SENT", "src=10.0.1.2 dst=10.0.100.1 sport=40001 dport=80 [UNREPLIED]",
        "src=10.0.2.11 dst=10.0.1.2 sport=8080 dport=40001"),
    _ct("ESTABLISHED", "src=10.0.1.2 dst=10.0.100.9 sport=40002 dport=80",  # not our VIP
        "src=10.0.2.11 dst=10.0.1.2 sport=8080 dport=40002"),
    _ct("ESTABLISHED", "src=10.0.1.2 dst=10.0.100.1 sport=40003 dport=80",  # no NAT
        "src=10.0.100.1 dst=10.0.1.2 sport=80 dport=40003"),
    _ct("", "src=10.0.1.2 dst=10.0.100.1 sport=40004 dport=53",
        "src=10.0.2.11 dst=10.0.1.2 sport=53 dport=40004", proto="udp      17 29"),
    _ct("ESTABLISHED", "src=fd00::2 dst=fd00::1 sport=40005 dport=80",
        "src=fd01::11 dst=fd00::2 sport=80 dport=40005"),
    "tcp      6 431999 ESTABLISHED src=10.0.1.2 dst=10.0.100.1 sport=x dport=80",
    "junk",
    "conntrack v1.4.7 (conntrack-tools): 8 flow entries have been shown.",
])


def test_from_conntrack_keeps_established_nat_flows_to_our_vips() -> None:
    assert from_conntrack(CONNTRACK_L, {"10.0.100.1", "fd00::1"}) == [FLOW]
    full_nat = CONNTRACK_L.splitlines()[0].replace("dst=10.0.1.2 sport=8080 dport=40000",
                                                   "dst=10.0.2.1 sport=8080 dport=61000")
    assert from_conntrack(full_nat, ["10.0.100.1"]) == [
        Flow(CLIENT, VIP, SERVER, ("10.0.2.1", 61000))]


IP_VS_CONN = """Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A000102 9C40 0A006401 0050 0A00020B 1F90 ESTABLISHED     899
TCP 0A000102 9C41 0A006401 0050 0A00020B 1F90 FIN_WAIT         99
UDP 0A000102 9C42 0A006401 0035 0A00020B 0035 UDP             299
TCP 0A000102 9C43 0A006409 0050 0A00020B 1F90 ESTABLISHED     899
TCP zz 9C44 0A006401 0050 0A00020B 1F90 ESTABLISHED     899
TCP 0A000102 9C45
"""


def test_from_ip_vs_conn() -> None:
    assert from_ip_vs_conn(IP_VS_CONN, ["10.0.100.1"]) == [FLOW]
    assert from_ip_vs_conn("", ["10.0.100.1"]) == []


@pytest.mark.parametrize("bad", ["no header only", "Pro\nTCP 0A000102"])
def test_from_ip_vs_conn_junk(bad: str) -> None:
    assert from_ip_vs_conn(bad, ["10.0.100.1"]) == []


def test_every_resume_metric_is_documented_and_only_those() -> None:
    import re
    from pathlib import Path
    from types import SimpleNamespace

    from agent.metrics import _resume
    from agent.resume import ResumeStats

    stats = ResumeStats(runs=2, flows=400, answered=799, nudged=799, skipped=0, seconds=0.05)
    stats.error("nftables")
    metrics = {m.name: m for m in _resume(SimpleNamespace(  # type: ignore[arg-type]
        resumer=SimpleNamespace(stats=stats)))}
    samples = {s.name for m in metrics.values() for s in m.samples
               if not s.name.endswith("_created")}
    doc = (Path(__file__).resolve().parent.parent / "docs" / "conntrack-sync.md").read_text()
    section = doc.split("\n## Resuming at once\n", 1)[1].split("\n## ")[0]
    assert samples == set(re.findall(r"`(lvs_resume_\w+?)(?:\{\w+\})?`", section))
    assert metrics["lvs_resume_answered"].samples[0].value == 799
    assert [(s.labels, s.value) for s in metrics["lvs_resume_errors"].samples
            if s.name.endswith("_total")] == [({"kind": "nftables"}, 1.0)]
