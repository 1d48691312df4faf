"""The reconciler against the real nftables backend, each test in a fresh network namespace.

Only the error-path test at the end uses an in-memory backend (apply raising on demand).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
from support import netlab

from agent.dataplane import ipvs
from agent.dataplane.desired import Health, desired_table
from agent.dataplane.nft import NftBackend
from agent.dataplane.nft.netlink import Generation
from agent.dataplane.reconcile import Reconciler, describe_ops
from agent.dataplane.select import BackendUnavailable, choose_backend
from agent.dataplane.table import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestKey,
    DestSpec,
    EditDest,
    EditService,
    Op,
    Service,
    ServiceKey,
    ServiceSpec,
    Table,
    diff,
)
from cluster.model import LvsConfig

WEB = ServiceKey("tcp", "10.0.0.100", 80)
DNS6 = ServiceKey("udp", "2001:db8::1", 53, family=6)
MARK = ServiceKey("fwmark", fwmark=7)
CFG = LvsConfig(virtuals=[
    {"name": "web", "address": "10.0.0.100", "scheduler": "wrr", "servers": [
        {"name": "a", "address": "10.0.1.1", "weight": 3},
        {"name": "b", "address": "10.0.1.2", "port": 8080}]},
    {"name": "dns", "address": "2001:db8::1", "protocol": "udp", "port": 53,
     "quiesce_server": True, "servers": [{"name": "a", "address": "2001:db8::10"},
                                         {"name": "b", "address": "2001:db8::11"}]},
    {"name": "mark", "address": "10.0.0.101", "fwmark": 7, "sorry_server": "10.0.9.9",
     "servers": [{"name": "a", "address": "10.0.2.1"}]},
])  # fmt: skip
UP = {(v.name, s.name): Health("up") for v in CFG.virtuals for s in v.servers}
UP[("dns", "b")] = Health("down")  # quiesced: weight 0
UP[("mark", "a")] = Health("down")  # the sorry server takes over
WANT = desired_table(CFG, UP, {})


class Counting:
    """The real backend, delegated to; counts apply calls and keeps their ops."""

    def __init__(self, backend: NftBackend) -> None:
        self.backend = backend
        self.applied: list[list[Op]] = []
        self.reads = 0

    async def read(self) -> Table:
        self.reads += 1
        return await self.backend.read()

    async def apply(self, ops: Sequence[Op]) -> None:
        self.applied.append(list(ops))
        await self.backend.apply(ops)


@pytest.fixture
def router() -> Iterator[str]:
    with netlab.Lab("rcl") as lab:
        yield lab.add_ns("r")


@pytest.fixture
async def backend(router: str) -> AsyncIterator[Counting]:
    b = NftBackend(netns=router, compact_delay=None)
    yield Counting(b)
    b.close()


def nft(ns: str, *args: str) -> None:
    netlab.sh("ip", "netns", "exec", ns, "nft", *args)


async def kernel(ns: str) -> dict:
    """What a backend that never saw the table reads (no cache)."""
    other = NftBackend(netns=ns, compact_delay=None)
    try:
        return dict(await other.read())
    finally:
        other.close()


def test_the_config_gives_the_expected_table():
    assert WANT[WEB].dests == {DestKey("10.0.1.1", 80): DestSpec(3), DestKey("10.0.1.2", 8080):
                               DestSpec(1)}
    assert WANT[DNS6].dests == {DestKey("2001:db8::10", 53): DestSpec(1),
                                DestKey("2001:db8::11", 53): DestSpec(0)}
    assert WANT[MARK].dests == {DestKey("10.0.9.9", 0): DestSpec(1)}


@pytest.mark.netns
async def test_first_set_desired_programs_an_empty_kernel(backend, router):
    rec = Reconciler(backend)
    result = await rec.set_desired(WANT)
    assert result.ok and result.applied and result.read_kernel
    n_dests = sum(len(s.dests) for s in WANT.values())
    assert len(result.ops) == len(WANT) + n_dests
    assert len(backend.applied) == 1
    assert diff(await kernel(router), WANT) == []
    stats = rec.stats
    assert (stats.applies, stats.ops_applied, stats.errors) == (1, len(result.ops), 0)
    assert (stats.desired_services, stats.desired_dests) == (len(WANT), n_dests)


@pytest.mark.netns
async def test_restarted_agent_adopts_the_kernel_without_changes(backend, router):
    await Reconciler(backend).set_desired(WANT)
    gen = Generation(router)
    before = gen.get()
    fresh = Counting(NftBackend(netns=router, compact_delay=None))
    try:
        result = await Reconciler(fresh).set_desired(WANT)
        assert result.read_kernel and result.ok
        assert result.ops == () and not result.applied
        assert fresh.applied == []
        assert gen.get() == before  # not one transaction
    finally:
        fresh.backend.close()
        gen.close()


@pytest.mark.netns
async def test_one_server_change_is_one_op_without_reading(backend, router):
    rec = Reconciler(backend)
    await rec.set_desired(WANT)
    reads = backend.reads
    health = UP | {("web", "a"): Health("up", weight=7)}
    result = await rec.set_desired(desired_table(CFG, health, {}))
    assert result.ops == (EditDest(WEB, DestKey("10.0.1.1", 80), DestSpec(7)),)
    assert backend.applied[-1] == list(result.ops)
    health[("web", "b")] = Health("down")
    want = desired_table(CFG, health, {})
    result = await rec.set_desired(want)
    assert result.ops == (DelDest(WEB, DestKey("10.0.1.2", 8080)),)
    assert backend.reads == reads and not result.read_kernel  # fast path: no listing
    assert diff(await kernel(router), want) == []
    assert rec.stats.applies == 3


@pytest.mark.netns
async def test_noop_drift_check_changes_nothing(backend, router):
    rec = Reconciler(backend)
    assert (await rec.check_drift()).ops == ()  # nothing desired yet: kernel left alone
    await rec.set_desired(WANT)
    result = await rec.check_drift()
    assert result.ok and result.ops == () and result.repaired == ()
    assert len(backend.applied) == 1  # only the set_desired
    assert (rec.stats.drift_checks, rec.stats.drift_repairs) == (2, 0)


@pytest.mark.netns
async def test_drift_after_flush_ruleset_is_repaired_and_named(backend, router, caplog):
    lines: list[str] = []
    rec = Reconciler(backend, on_log=lines.append)
    await rec.set_desired(WANT)
    nft(router, "flush", "ruleset")
    with caplog.at_level(logging.WARNING, logger="agent.dataplane.reconcile"):
        result = await rec.check_drift()
    assert result.ok and result.applied
    assert set(result.repaired) == {
        "re-added service tcp:10.0.0.100:80 (2 dests)",
        "re-added service udp:[2001:db8::1]:53 (2 dests)",
        "re-added service fwmark:7/ipv4 (1 dest)",
    }
    assert "drift: re-added service" in caplog.text
    assert "re-added service tcp:10.0.0.100:80 (2 dests)" in caplog.text
    assert lines == ["drift: " + "; ".join(result.repaired)]
    assert (rec.stats.drift_repairs, rec.stats.drift_ops) == (1, len(result.ops))
    assert diff(await kernel(router), WANT) == []
    assert (await rec.check_drift()).ops == ()


@pytest.mark.netns
async def test_drift_of_one_deleted_element_repairs_that_service(backend, router):
    rec = Reconciler(backend)
    await rec.set_desired(WANT)
    nft(router, "delete", "element", "inet", "piranha", "svc4", "{ 10.0.0.100 . tcp . 80 }")
    result = await rec.check_drift()
    assert result.ops == (AddService(WEB, WANT[WEB].spec),
                          *(AddDest(WEB, d, s) for d, s in sorted(WANT[WEB].dests.items())))
    assert result.repaired == ("re-added service tcp:10.0.0.100:80 (2 dests)",)
    assert rec.stats.drift_repairs == 1
    assert diff(await kernel(router), WANT) == []


@pytest.mark.netns
async def test_drift_of_a_weight_changed_behind_our_back(backend, router):
    rec = Reconciler(backend)
    await rec.set_desired(WANT)
    intruder = NftBackend(netns=router, compact_delay=None)  # e.g. an operator by hand
    try:
        await intruder.read()
        await intruder.apply([EditDest(WEB, DestKey("10.0.1.1", 80), DestSpec(0))])
    finally:
        intruder.close()
    result = await rec.check_drift()
    assert result.repaired == ("weight of 10.0.1.1:80 in tcp:10.0.0.100:80 0 -> 3",)
    assert result.ops == (EditDest(WEB, DestKey("10.0.1.1", 80), DestSpec(3)),)
    assert diff(await kernel(router), WANT) == []


@pytest.mark.netns
async def test_periodic_driver_checks_on_request(backend, router):
    rec = Reconciler(backend)
    await rec.set_desired(WANT)
    task = asyncio.create_task(rec.run_drift_checks(3600))
    try:
        nft(router, "flush", "ruleset")
        rec.request_check()
        await netlab.wait_for(lambda: rec.stats.drift_repairs == 1, within=20,
                              what="drift repaired")
        assert diff(await kernel(router), WANT) == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.netns
async def test_concurrent_callers_serialize(backend, router):
    rec = Reconciler(backend)
    other = desired_table(CFG, {}, {})  # nothing up: only the sorry server
    first, second = await asyncio.gather(rec.set_desired(WANT), rec.set_desired(other))
    assert first.ok and second.ok
    assert diff(WANT, other) == list(second.ops)  # the second saw the first's result
    assert diff(await kernel(router), other) == []


@pytest.mark.netns
async def test_kernel_read_errors_are_counted_not_raised(router):
    broken = NftBackend(netns=router, nft="/bin/false", compact_delay=None)
    lines: list[str] = []
    rec = Reconciler(broken, on_log=lines.append)
    try:
        result = await rec.set_desired(WANT)
        assert not result.ok and "NftError" in result.error
        assert not (await rec.check_drift()).ok
        assert rec.stats.errors == 2 and rec.stats.applies == 0
        assert all("reading the kernel's table" in line for line in lines) and len(lines) == 2
    finally:
        broken.close()


@pytest.mark.netns
def test_choose_backend():
    kind = "ipvs" if ipvs.available() else "nftables"
    chosen = choose_backend("auto")
    try:
        assert chosen.name == kind
    finally:
        chosen.close()
    nat = choose_backend("auto", full_nat=True)  # only nftables masquerades
    assert isinstance(nat, NftBackend) and nat.cfg.full_nat
    nat.close()
    with pytest.raises(BackendUnavailable, match="full_nat needs the nftables"):
        choose_backend("ipvs", full_nat=True)
    if kind == "nftables":
        with pytest.raises(BackendUnavailable, match="this kernel has no IPVS"):
            choose_backend("ipvs")
    with pytest.raises(ValueError, match="auto, ipvs, nftables, not 'lvs'"):
        choose_backend("lvs")


def test_describe_ops_names_what_changes():
    have = {WEB: Service(ServiceSpec("wlc"), {DestKey("10.0.1.2", 80): DestSpec(0),
                                              DestKey("10.0.1.3", 80): DestSpec(1)}),
            DNS6: Service()}
    ops = [DelService(DNS6), DelDest(WEB, DestKey("10.0.1.3", 80)),
           EditService(WEB, ServiceSpec("rr")),
           EditDest(WEB, DestKey("10.0.1.2", 80), DestSpec(3, "route")),
           AddDest(WEB, DestKey("10.0.1.4", 80), DestSpec(2))]
    assert describe_ops(have, ops) == [
        "removed unwanted service udp:[2001:db8::1]:53",
        "removed unwanted 10.0.1.3:80 in tcp:10.0.0.100:80",
        "settings of tcp:10.0.0.100:80: scheduler wlc -> rr",
        "weight of 10.0.1.2:80 in tcp:10.0.0.100:80 0 -> 3",
        "forwarding of 10.0.1.2:80 in tcp:10.0.0.100:80 masq -> route",
        "re-added 10.0.1.4:80 in tcp:10.0.0.100:80 (weight 2)",
    ]


# ---------------------------------------------------------------- error path: FAKE backend


class FlakyMemoryBackend:
    """FAKE, in memory (error path only): applies ops to a dict; ``fail`` makes apply raise."""

    def __init__(self) -> None:
        self.table: dict[ServiceKey, Service] = {}
        self.fail: Exception | None = None
        self.reads = 0

    async def read(self) -> Table:
        self.reads += 1
        return {k: Service(s.spec, dict(s.dests)) for k, s in self.table.items()}

    async def apply(self, ops: Sequence[Op]) -> None:
        if self.fail is not None:
            raise self.fail
        for op in ops:
            if isinstance(op, AddService | EditService):
                old = self.table.get(op.key, Service())
                self.table[op.key] = Service(op.spec, dict(old.dests))
            elif isinstance(op, DelService):
                del self.table[op.key]
            elif isinstance(op, DelDest):
                del self.table[op.service].dests[op.key]  # type: ignore[attr-defined]
            else:
                self.table[op.service].dests[op.key] = op.spec  # type: ignore[index]


async def test_apply_errors_are_counted_then_reread_and_retried():
    fake = FlakyMemoryBackend()
    rec = Reconciler(fake)
    await rec.set_desired(WANT)
    fake.fail = RuntimeError("kernel said no")
    changed = desired_table(CFG, UP | {("web", "a"): Health("up", weight=9)}, {})
    result = await rec.set_desired(changed)
    assert not result.ok and "kernel said no" in result.error and not result.applied
    assert rec.stats.errors == 1 and rec.stats.applies == 1
    fake.fail = None
    reads = fake.reads
    result = await rec.set_desired(changed)
    assert result.ok and result.read_kernel and fake.reads == reads + 1  # state was unknown
    assert result.ops == (EditDest(WEB, DestKey("10.0.1.1", 80), DestSpec(9)),)
    assert diff(fake.table, changed) == []
    fake.fail = OSError("netlink socket closed")
    fake.table.clear()
    assert not (await rec.check_drift()).ok and rec.stats.errors == 2
    fake.fail = None
    assert (await rec.check_drift()).ok and diff(fake.table, changed) == []


async def test_programming_errors_are_raised():
    fake = FlakyMemoryBackend()
    rec = Reconciler(fake)
    fake.fail = ValueError("bad op")
    with pytest.raises(ValueError, match="bad op"):
        await rec.set_desired(WANT)
    assert rec.stats.errors == 0
    fake.fail = None
    assert (await rec.set_desired(WANT)).read_kernel  # state unknown after the failure
