"""Changes made behind the backend's back (with ipvsadm) are seen by read() and repaired."""

from __future__ import annotations

import pytest

from agent.dataplane.ipvs import IpvsBackend
from agent.dataplane.table import (
    AddDest,
    AddService,
    DelService,
    DestKey,
    DestSpec,
    EditDest,
    EditService,
    Service,
    ServiceKey,
    ServiceSpec,
    diff,
)

pytestmark = pytest.mark.ipvs

WEB = ServiceKey("tcp", "10.0.0.1", 80)
WEB6 = ServiceKey("udp", "2001:db8::1", 53, family=6)
RS1, RS2 = DestKey("10.1.0.1", 80), DestKey("10.1.0.2", 80)
WANT = {
    WEB: Service(ServiceSpec("wlc", 300, "255.255.255.0"), {
        RS1: DestSpec(1, "masq"), RS2: DestSpec(2, "route"),
    }),
    WEB6: Service(ServiceSpec("sh", 0, "128"), {DestKey("2001:db8::2", 53): DestSpec(1, "tunnel")}),
}


async def repair(backend: IpvsBackend) -> list:
    ops = diff(await backend.read(), WANT)
    await backend.apply(ops)
    return ops


@pytest.fixture
async def loaded(backend: IpvsBackend) -> IpvsBackend:
    await backend.apply(diff({}, WANT))
    assert await backend.read() == WANT
    return backend


async def test_flushed_table_is_restored(loaded: IpvsBackend, witness) -> None:
    witness.run("ipvsadm -C")
    assert await loaded.read() == {}
    ops = await repair(loaded)
    assert sum(isinstance(op, AddService) for op in ops) == 2
    assert sum(isinstance(op, AddDest) for op in ops) == 3
    assert await loaded.read() == WANT
    assert witness.table() == WANT


async def test_weight_forward_and_scheduler_drift_is_undone(
    loaded: IpvsBackend, witness
) -> None:
    witness.run("ipvsadm -e -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 9")
    witness.run("ipvsadm -e -t 10.0.0.1:80 -r 10.1.0.2:80 -i -w 2")
    witness.run("ipvsadm -E -u [2001:db8::1]:53 -s rr")
    have = await loaded.read()
    assert have[WEB].dests[RS1] == DestSpec(9, "masq")
    assert have[WEB].dests[RS2] == DestSpec(2, "tunnel")
    assert have[WEB6].spec.scheduler == "rr"
    ops = await repair(loaded)
    assert sorted(type(op).__name__ for op in ops) == ["EditDest", "EditDest", "EditService"]
    assert EditDest(WEB, RS1, DestSpec(1, "masq")) in ops
    assert EditService(WEB6, WANT[WEB6].spec) in ops
    assert witness.table() == WANT


async def test_foreign_and_missing_entries_are_reconciled(
    loaded: IpvsBackend, witness
) -> None:
    witness.run("ipvsadm -A -t 10.0.0.99:25 -s rr && ipvsadm -a -t 10.0.0.99:25 -r 10.1.0.9 -g")
    witness.run("ipvsadm -d -t 10.0.0.1:80 -r 10.1.0.2:80")
    witness.run("ipvsadm -E -t 10.0.0.1:80 -s wlc")  # persistence dropped by hand
    ops = await repair(loaded)
    assert DelService(ServiceKey("tcp", "10.0.0.99", 25)) in ops
    assert AddDest(WEB, RS2, DestSpec(2, "route")) in ops
    assert EditService(WEB, WANT[WEB].spec) in ops
    assert await loaded.read() == WANT
    assert witness.table() == WANT
    assert diff(await loaded.read(), WANT) == []
