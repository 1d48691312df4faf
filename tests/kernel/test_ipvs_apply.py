"""Add, change and delete IPVS services and real servers; read every attribute back."""

from __future__ import annotations

import errno

import pytest

from agent.dataplane.ipvs import ApplyError, IpvsBackend
from agent.dataplane.table import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestKey,
    DestSpec,
    EditDest,
    Service,
    ServiceKey,
    ServiceSpec,
    diff,
)

pytestmark = pytest.mark.ipvs

WEB = ServiceKey("tcp", "10.0.0.1", 80)
DNS = ServiceKey("udp", "10.0.0.2", 53)
MARK = ServiceKey("fwmark", fwmark=7)
WEB6 = ServiceKey("tcp", "2001:db8::1", 443, family=6)
MARK6 = ServiceKey("fwmark", fwmark=8, family=6)
ALL_PORTS = ServiceKey("tcp", "10.0.0.3", 0)  # persistent "all ports" service


def mixed_table() -> dict[ServiceKey, Service]:
    return {
        WEB: Service(ServiceSpec("wlc"), {
            DestKey("10.1.0.1", 80): DestSpec(1, "masq"),
            DestKey("10.1.0.2", 8080): DestSpec(5, "route"),
            DestKey("10.1.0.3", 80): DestSpec(0, "tunnel"),
        }),
        DNS: Service(ServiceSpec("rr"), {DestKey("10.1.0.1", 53): DestSpec(2, "route")}),
        MARK: Service(ServiceSpec("sh", 300, "255.255.255.0"), {
            DestKey("10.1.0.4", 0): DestSpec(3, "route"),
        }),
        WEB6: Service(ServiceSpec("wrr", 60, "64"), {
            DestKey("2001:db8::10", 443): DestSpec(10, "masq"),
            DestKey("2001:db8::11", 8443): DestSpec(20, "tunnel"),
        }),
        MARK6: Service(ServiceSpec("lc", 0, "128"), {  # IPv6 netmask: a prefix length
            DestKey("2001:db8::12", 0): DestSpec(1, "route"),
        }),
        ALL_PORTS: Service(ServiceSpec("wlc", 1800, "255.255.0.0"), {
            DestKey("10.1.0.5", 0): DestSpec(1, "route"),
        }),
    }


async def converge(backend: IpvsBackend, want: dict[ServiceKey, Service]) -> None:
    await backend.apply(diff(await backend.read(), want))


async def test_add_reads_back_every_attribute(backend: IpvsBackend, witness) -> None:
    want = mixed_table()
    await backend.apply(diff({}, want))
    have = await backend.read()
    assert have == want
    assert diff(have, want) == []
    assert witness.table() == want  # the witness agrees, attribute by attribute


async def test_modify_scheduler_persistence_weight_and_forward(
    backend: IpvsBackend, witness
) -> None:
    await backend.apply(diff({}, mixed_table()))
    want = mixed_table()
    want[WEB] = Service(ServiceSpec("rr", 600, "255.255.255.0"), {
        DestKey("10.1.0.1", 80): DestSpec(7, "route"),  # weight and forward
        DestKey("10.1.0.2", 8080): DestSpec(5, "tunnel"),  # forward only
        DestKey("10.1.0.3", 80): DestSpec(4, "tunnel"),  # weight only
    })
    want[MARK] = Service(ServiceSpec("dh"), want[MARK].dests)  # persistence off
    want[WEB6] = Service(ServiceSpec("wrr", 120, "48"), {  # timeout and IPv6 prefix
        DestKey("2001:db8::10", 443): DestSpec(0, "masq"),
        DestKey("2001:db8::11", 8443): DestSpec(20, "tunnel"),
    })
    ops = diff(await backend.read(), want)
    assert {type(op).__name__ for op in ops} == {"EditService", "EditDest"}
    await backend.apply(ops)
    assert await backend.read() == want
    assert witness.table() == want


async def test_delete_services_and_real_servers(backend: IpvsBackend, witness) -> None:
    await backend.apply(diff({}, mixed_table()))
    want = mixed_table()
    del want[DNS], want[MARK6]
    want[WEB] = Service(want[WEB].spec, {DestKey("10.1.0.1", 80): DestSpec(1, "masq")})
    await converge(backend, want)
    assert await backend.read() == want
    assert witness.table() == want
    await converge(backend, {})
    assert await backend.read() == {}
    assert witness.run("ipvsadm -S -n") == ""


SCHEDULERS = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf"]


async def test_every_scheduler(backend: IpvsBackend, witness) -> None:
    want = {
        ServiceKey("tcp", "10.0.1.1", 1000 + i): Service(
            ServiceSpec(name), {DestKey("10.1.1.1", 80): DestSpec(1, "masq")}
        )
        for i, name in enumerate(SCHEDULERS)
    }
    await backend.apply(diff({}, want))
    assert await backend.read() == want
    assert witness.table() == want


async def test_each_failed_change_is_reported_and_the_rest_applied(
    backend: IpvsBackend,
) -> None:
    await backend.apply(diff({}, {WEB: Service(ServiceSpec(), {})}))
    missing = ServiceKey("tcp", "10.9.9.9", 99)
    ops = [
        AddService(WEB, ServiceSpec()),  # exists
        AddDest(missing, DestKey("10.1.0.1", 80), DestSpec()),  # no such service
        AddDest(WEB, DestKey("10.1.0.1", 80), DestSpec(3, "route")),  # fine
        AddService(ServiceKey("tcp", "not-an-ip", 1), ServiceSpec()),  # refused before sending
        AddService(ServiceKey("tcp", "10.0.0.9", 1), ServiceSpec("nosuch")),  # no module
        DelDest(WEB, DestKey("10.1.0.99", 80)),  # no such real server
        EditDest(WEB, DestKey("10.1.0.1", 80), DestSpec(4, "route")),  # fine, after the add
        DelService(missing),  # no such service
    ]
    with pytest.raises(ApplyError) as caught:
        await backend.apply(ops)
    failures = caught.value.errors
    assert [f.op for f in failures] == [ops[0], ops[1], ops[3], ops[4], ops[5], ops[7]]
    assert [f.errno for f in failures] == [
        errno.EEXIST, errno.ESRCH, errno.EINVAL, errno.ENOENT, errno.ENOENT, errno.ESRCH
    ]
    assert "not-an-ip" in failures[2].message and "already exists" in failures[0].message
    assert caught.value.total == len(ops)
    have = await backend.read()
    assert have == {WEB: Service(ServiceSpec(), {DestKey("10.1.0.1", 80): DestSpec(4, "route")})}
