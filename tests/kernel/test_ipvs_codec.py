"""The IPVS message codec and input checks: pure, so these run everywhere (no IPVS needed)."""

from __future__ import annotations

import errno
import socket

import pytest

from agent.dataplane import ipvs
from agent.dataplane.ipvs import codec as c
from agent.dataplane.table import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestKey,
    DestSpec,
    EditDest,
    EditService,
    ServiceKey,
    ServiceSpec,
)

WEB = ServiceKey("tcp", "10.0.0.1", 80)
WEB6 = ServiceKey("udp", "2001:db8::1", 53, family=6)
MARK6 = ServiceKey("fwmark", fwmark=42, family=6)


def service_of(op: AddService | EditService | DelService) -> dict[int, bytes]:
    _cmd, payload = c.op_request(op)
    return c.parse_attrs(c.parse_attrs(payload)[c.ATTR_SERVICE])


@pytest.mark.parametrize(
    ("key", "spec"),
    [
        (WEB, ServiceSpec("rr", 300, "255.255.255.0")),
        (WEB6, ServiceSpec("wlc", 0, "128")),
        (MARK6, ServiceSpec("mh", 60, "48")),
        (ServiceKey("fwmark", fwmark=7), ServiceSpec("sh")),
        (WEB, ServiceSpec("mh", flags=frozenset({"mh-fallback", "mh-port"}))),
        (WEB, ServiceSpec("mh", 300, flags=frozenset({"mh-port"}))),
        (WEB6, ServiceSpec("sh", 0, "128", frozenset({"sh-fallback"}))),
        (WEB, ServiceSpec("rr", flags=frozenset({"flag-3"}))),
    ],
)
def test_service_round_trip(key: ServiceKey, spec: ServiceSpec) -> None:
    assert c.decode_service(service_of(AddService(key, spec))) == (key, spec)
    assert c.op_request(EditService(key, spec))[0] == c.CMD_SET_SERVICE


@pytest.mark.parametrize(("flags", "bits"), [
    ({"mh-fallback"}, 0x08), ({"mh-port"}, 0x10), ({"mh-fallback", "mh-port"}, 0x18),
])
def test_mh_flags_are_the_kernels_sched1_and_sched2_bits(flags: set, bits: int) -> None:
    attrs = service_of(AddService(WEB, ServiceSpec("mh", 60, flags=frozenset(flags))))
    value, mask = c._FLAGS.unpack(attrs[c.SVC_FLAGS])
    assert (value, mask) == (bits | c.SVC_F_PERSISTENT, 0xFFFFFFFF)


def test_a_flag_the_scheduler_has_not_is_refused() -> None:
    with pytest.raises(ValueError, match="scheduler wrr has no flag 'mh-port'"):
        c.op_request(AddService(WEB, ServiceSpec("wrr", flags=frozenset({"mh-port"}))))


@pytest.mark.parametrize("forward", ["masq", "route", "tunnel"])
@pytest.mark.parametrize("address", ["10.1.0.1", "2001:db8::10"])
def test_dest_round_trip(forward: str, address: str) -> None:
    key, spec = DestKey(address, 8080), DestSpec(65535, forward)  # type: ignore[arg-type]
    for op, cmd in ((AddDest(WEB, key, spec), c.CMD_NEW_DEST),
                    (EditDest(WEB, key, spec), c.CMD_SET_DEST)):
        got_cmd, payload = c.op_request(op)
        outer = c.parse_attrs(payload)
        assert got_cmd == cmd
        assert c.decode_service(c.parse_attrs(outer[c.ATTR_SERVICE]))[0] == WEB
        assert c.decode_dest(c.parse_attrs(outer[c.ATTR_DEST]), socket.AF_INET) == (key, spec)


def test_delete_requests_carry_only_identities() -> None:
    cmd, payload = c.op_request(DelService(WEB6))
    assert cmd == c.CMD_DEL_SERVICE
    assert set(c.parse_attrs(c.parse_attrs(payload)[c.ATTR_SERVICE])) == {
        c.SVC_AF, c.SVC_PROTOCOL, c.SVC_ADDR, c.SVC_PORT
    }
    cmd, payload = c.op_request(DelDest(WEB, DestKey("10.1.0.1", 80)))
    assert cmd == c.CMD_DEL_DEST
    assert set(c.parse_attrs(c.parse_attrs(payload)[c.ATTR_DEST])) == {
        c.DEST_ADDR, c.DEST_PORT, c.DEST_ADDR_FAMILY
    }


def test_netmask_encoding_matches_the_kernel() -> None:
    # IPv4: the mask's bytes in network order; IPv6: the prefix length as a host integer
    assert c.netmask_to_kernel(4, "255.255.255.0").to_bytes(4, "little") == b"\xff\xff\xff\x00"
    assert c.netmask_to_kernel(6, "/64") == c.netmask_to_kernel(6, "64") == 64
    assert c.netmask_from_kernel(4, b"\xff\xff\x00\x00") == "255.255.0.0"
    assert c.netmask_from_kernel(6, (96).to_bytes(4, "little")) == "96"


def test_kernel_only_values_are_reported_not_hidden() -> None:
    attrs = c.parse_attrs(c.op_request(AddDest(WEB, DestKey("10.1.0.1", 1), DestSpec()))[1])
    dest = dict(c.parse_attrs(attrs[c.ATTR_DEST]))
    dest[c.DEST_FWD_METHOD] = (1).to_bytes(4, "little")  # LOCALNODE, which we never set
    assert c.decode_dest(dest, socket.AF_INET)[1].forward == "local"


@pytest.mark.parametrize(
    ("op", "words"),
    [
        (AddService(ServiceKey("tcp", "10.0.0.256", 80), ServiceSpec()), "not an IPv4 or IPv6"),
        (AddService(ServiceKey("tcp", "2001:db8::1", 80), ServiceSpec()), "is not IPv4"),
        (AddService(ServiceKey("icmp", "10.0.0.1", 80), ServiceSpec()), "protocol"),  # type: ignore[arg-type]
        (AddService(ServiceKey("tcp", "10.0.0.1", 70000), ServiceSpec()), "port"),
        (AddService(ServiceKey("fwmark"), ServiceSpec()), "fwmark"),
        (AddService(WEB, ServiceSpec("Round Robin")), "scheduler"),
        (AddService(WEB, ServiceSpec("rr", -1)), "persistence"),
        (AddService(WEB, ServiceSpec("rr", 0, "24")), "dotted"),
        (AddService(WEB6, ServiceSpec()), "prefix length"),  # IPv6 needs e.g. "128"
        (AddDest(WEB, DestKey("10.1.0.1", 80), DestSpec(70000)), "weight"),
        (AddDest(WEB, DestKey("10.1.0.1", 80), DestSpec(1, "nat")), "forward"),  # type: ignore[arg-type]
        (DelDest(WEB, DestKey("rs1.example", 80)), "not an IPv4 or IPv6"),
    ],
)
def test_bad_values_are_refused_with_a_reason(op: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        c.op_request(op)  # type: ignore[arg-type]


def test_framing_round_trip() -> None:
    body = c.u32(c.ATTR_TIMEOUT_TCP, 900) + c.nest(c.ATTR_SERVICE, c.u16(c.SVC_AF, 2))
    data = c.message(30, c.NLM_F_REQUEST, 7, c.CMD_SET_CONFIG, body) * 2
    messages = list(c.iter_messages(data))
    assert [(kind, seq) for kind, _f, seq, _p in messages] == [(30, 7), (30, 7)]
    attrs = c.genl_attrs(messages[0][3])
    assert c.get_u32(attrs, c.ATTR_TIMEOUT_TCP) == 900
    assert c.get_u16(c.parse_attrs(attrs[c.ATTR_SERVICE]), c.SVC_AF) == 2
    with pytest.raises(ValueError, match="truncated"):
        list(c.iter_messages(data[:-3]))


async def test_invalid_ops_fail_without_touching_the_kernel() -> None:
    backend = ipvs.IpvsBackend()
    try:
        bad = [AddService(ServiceKey("tcp", "nope", 1), ServiceSpec()),
               AddDest(WEB, DestKey("10.0.0.2", 1), DestSpec(-1))]
        with pytest.raises(ipvs.ApplyError) as caught:
            await backend.apply(bad)
        assert [e.op for e in caught.value.errors] == bad
        assert {e.errno for e in caught.value.errors} == {errno.EINVAL}
        assert "add service tcp:nope:1" in caught.value.errors[0].message
        assert "2 of 2" in str(caught.value)
        await backend.apply([])  # nothing to do is not an error
    finally:
        backend.close()


@pytest.mark.skipif(ipvs.available(), reason="this kernel has IPVS")
async def test_missing_ipvs_is_a_clear_error() -> None:
    backend = ipvs.IpvsBackend()
    try:
        with pytest.raises(ipvs.IpvsUnavailable, match="not available"):
            await backend.read()
    finally:
        backend.close()
