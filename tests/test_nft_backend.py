"""The nftables backend against real nftables, each test in a fresh network namespace."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
from support import netlab

from agent.dataplane.nft import NftBackend, NftError, NftInputError, available
from agent.dataplane.nft.layout import chain_name
from agent.dataplane.nft.netlink import Generation
from agent.dataplane.stats import Traffic
from agent.dataplane.table import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestKey,
    DestSpec,
    EditDest,
    EditService,
    Maglev,
    Service,
    ServiceKey,
    ServiceSpec,
    diff,
)

pytestmark = pytest.mark.netns

WEB = ServiceKey("tcp", "10.0.0.1", 80)
DNS6 = ServiceKey("udp", "2001:db8::1", 53, family=6)
MARK = ServiceKey("fwmark", fwmark=7)
ALL_PORTS = ServiceKey("tcp", "10.0.0.2", 0)
EMPTY = ServiceKey("tcp", "10.0.0.3", 443)
WANT = {
    WEB: Service(ServiceSpec("wrr"), {DestKey("10.1.0.1", 8080): DestSpec(3),
                                      DestKey("10.1.0.2", 8080): DestSpec(1),
                                      DestKey("10.1.0.3", 0): DestSpec(0)}),
    DNS6: Service(ServiceSpec("sh"), {DestKey("2001:db8::10", 53): DestSpec(2, "route"),
                                      DestKey("2001:db8::11", 5353): DestSpec(1)}),
    MARK: Service(ServiceSpec("wlc", 300, "255.255.255.0"), {DestKey("10.2.0.1", 0): DestSpec(1),
                                                             DestKey("10.2.0.2", 80): DestSpec(0)}),
    ALL_PORTS: Service(ServiceSpec("fo"), {DestKey("10.3.0.1", 0): DestSpec(1),
                                           DestKey("10.3.0.2", 0): DestSpec(5)}),
    EMPTY: Service(ServiceSpec("rr"), {}),
}  # fmt: skip


@pytest.fixture
def router() -> Iterator[str]:
    with netlab.Lab("nftb") as lab:
        yield lab.add_ns("r")


@pytest.fixture
async def backend(router: str) -> AsyncIterator[NftBackend]:
    b = NftBackend(netns=router, compact_delay=None)
    yield b
    b.close()


def nft(ns: str, *args: str) -> str:
    return netlab.sh("ip", "netns", "exec", ns, "nft", *args).stdout


def handles(ns: str) -> dict[str, list[int]]:
    """Rule handles of every chain of our table, in chain order."""
    chains: dict[str, list[int]] = {}
    for item in json.loads(nft(ns, "-j", "list", "table", "inet", "piranha"))["nftables"]:
        if "chain" in item:
            chains.setdefault(item["chain"]["name"], [])
        if "rule" in item:
            chains[item["rule"]["chain"]].append(item["rule"]["handle"])
    return chains


async def converge(backend: NftBackend, want: dict) -> None:
    await backend.apply(diff(await backend.read(), want))


async def read_fresh(ns: str) -> dict:
    """What a backend that never saw the table reads (no cache)."""
    other = NftBackend(netns=ns, compact_delay=None)
    try:
        return dict(await other.read())
    finally:
        other.close()


def test_available():
    assert available()
    assert not available("/nonexistent/nft")


async def test_apply_from_empty_and_read_back_equal(backend, router):
    assert await backend.read() == {}
    await converge(backend, WANT)
    assert diff(await backend.read(), WANT) == []
    assert diff(await read_fresh(router), WANT) == []
    assert backend.problems == ()


async def test_dest_changes_touch_only_their_service(backend, router):
    await converge(backend, WANT)
    web = chain_name(WEB)
    before = handles(router)
    want = dict(WANT)
    steps = [
        AddDest(WEB, DestKey("10.1.0.4", 8080), DestSpec(2)),
        EditDest(WEB, DestKey("10.1.0.1", 8080), DestSpec(7)),
        DelDest(WEB, DestKey("10.1.0.2", 8080)),
    ]
    for op in steps:
        dests = dict(want[WEB].dests)
        if isinstance(op, DelDest):
            del dests[op.key]
        else:
            dests[op.key] = op.spec
        want[WEB] = Service(want[WEB].spec, dests)
        assert diff(await backend.read(), want) == [op]
        await backend.apply([op])
        after = handles(router)
        assert {c: h for c, h in after.items() if c != web} == {
            c: h for c, h in before.items() if c != web
        }
        assert after[web][-len(before[web]) :] == before[web]  # new rules only at the head
        assert diff(await read_fresh(router), want) == []
    await backend.compact()
    compacted = handles(router)
    assert len(compacted[web]) == 2 and not set(compacted[web]) & set(before[web])
    assert {c: h for c, h in compacted.items() if c != web} == {
        c: h for c, h in before.items() if c != web
    }
    assert diff(await backend.read(), want) == []
    assert diff(await read_fresh(router), want) == []


@pytest.mark.parametrize(
    ("flush", "problem"),
    [(["flush", "ruleset"], "table missing"),
     (["flush", "table", "inet", "piranha"], "base rules of prerouting missing or wrong")],
)  # fmt: skip
async def test_repairs_after_a_flush(backend, router, flush, problem):
    await converge(backend, WANT)
    nft(router, *flush)
    assert await backend.read() == {}
    assert problem in backend.problems
    await converge(backend, WANT)
    assert diff(await backend.read(), WANT) == []
    assert backend.problems == ()
    assert diff(await read_fresh(router), WANT) == []


async def test_repairs_after_deleting_one_element(backend, router):
    await converge(backend, WANT)
    before = handles(router)
    nft(router, "delete", "element", "inet", "piranha", "svc4", "{ 10.0.0.1 . tcp . 80 }")
    have = await backend.read()
    assert have.keys() == WANT.keys() - {WEB}
    assert any(chain_name(WEB) in problem for problem in backend.problems)
    assert diff(have, WANT)[0] == AddService(WEB, WANT[WEB].spec)
    await converge(backend, WANT)
    assert diff(await read_fresh(router), WANT) == []
    after = handles(router)
    assert {c: h for c, h in after.items() if c != chain_name(WEB)} == {
        c: h for c, h in before.items() if c != chain_name(WEB)
    }


async def test_repairs_tampered_service_rules(backend, router):
    await converge(backend, WANT)
    dns, web = chain_name(DNS6), chain_name(WEB)
    dnat_rule = handles(router)[dns][0]
    nft(router, "delete", "rule", "inet", "piranha", dns, "handle", str(dnat_rule))
    have = await backend.read()
    assert have[DNS6] == Service(WANT[DNS6].spec, {})  # exactly its real servers are missing
    assert [type(op) for op in diff(have, WANT)] == [AddDest, AddDest]
    settings_rule = handles(router)[web][1]
    nft(router, "delete", "rule", "inet", "piranha", web, "handle", str(settings_rule))
    have = await backend.read()
    assert WEB not in have and DNS6 in have
    assert any(str(WEB) in problem for problem in backend.problems)
    await converge(backend, WANT)
    assert diff(await backend.read(), WANT) == []
    assert backend.problems == ()
    assert diff(await read_fresh(router), WANT) == []


async def test_compaction_removes_broken_services_nobody_wants(backend, router):
    await converge(backend, WANT)
    web = chain_name(WEB)
    nft(router, "delete", "rule", "inet", "piranha", web, "handle", str(handles(router)[web][1]))
    assert WEB not in await backend.read()
    await backend.compact()
    assert web not in handles(router)
    assert "10.0.0.1" not in nft(router, "list", "map", "inet", "piranha", "svc4")
    assert diff(await backend.read(), WANT) == [AddService(WEB, WANT[WEB].spec)] + [
        AddDest(WEB, d, s) for d, s in sorted(WANT[WEB].dests.items())
    ]
    assert backend.problems == ()
    await converge(backend, WANT)
    assert diff(await read_fresh(router), WANT) == []


async def test_scheduler_fallbacks_are_logged_by_name(backend, caplog):
    caplog.set_level(logging.WARNING, logger="agent.dataplane.nft")
    await converge(backend, {MARK: WANT[MARK], DNS6: WANT[DNS6]})
    text = caplog.text
    assert "scheduler 'wlc' not available" in text
    assert "persistence 300s" in text
    assert "forwarding 'route'" in text
    assert backend.fallbacks(WEB, WANT[WEB]) == []
    assert any("'lblc'" in w for w in backend.fallbacks(WEB, Service(ServiceSpec("lblc"))))


async def test_a_fallback_is_logged_once_and_again_after_the_service_came_back(backend,
                                                                             caplog):
    caplog.set_level(logging.WARNING, logger="agent.dataplane.nft")
    await converge(backend, {MARK: WANT[MARK]})
    assert caplog.text.count("scheduler 'wlc' not available") == 1
    caplog.clear()
    await converge(backend, {MARK: WANT[MARK], DNS6: WANT[DNS6]})  # MARK not written again
    assert str(MARK) not in caplog.text
    await converge(backend, {DNS6: WANT[DNS6]})  # MARK deleted: forgotten
    caplog.clear()
    await converge(backend, {MARK: WANT[MARK], DNS6: WANT[DNS6]})
    assert f"{MARK}: scheduler 'wlc' not available" in caplog.text


async def test_bad_ops_write_nothing(backend, router):
    await converge(backend, {WEB: WANT[WEB]})
    gen = Generation(router)
    before = gen.get()
    with pytest.raises(NftInputError, match="no such virtual service"):
        await backend.apply([AddDest(DNS6, DestKey("2001:db8::10", 53), DestSpec())])
    with pytest.raises(NftInputError, match="as '2001:db8::10'"):
        await backend.apply([AddService(DNS6, ServiceSpec()),
                             AddDest(DNS6, DestKey("2001:DB8::10", 53), DestSpec())])  # fmt: skip
    assert gen.get() == before
    gen.close()
    assert diff(await backend.read(), {WEB: WANT[WEB]}) == []


async def test_full_nat_switch_rewrites_the_base(backend, router):
    await converge(backend, WANT)
    masq = NftBackend(netns=router, full_nat=True, compact_delay=None)
    try:
        assert await masq.read() == {}  # base differs: every service gets rewritten
        assert any("postrouting" in p for p in masq.problems)
        await converge(masq, WANT)
        assert "masquerade" in nft(router, "list", "chain", "inet", "piranha", "postrouting")
        assert diff(await masq.read(), WANT) == []
    finally:
        masq.close()


async def test_background_compaction(router):
    backend = NftBackend(netns=router, compact_delay=0.05)
    try:
        await converge(backend, {WEB: WANT[WEB]})
        await backend.apply([EditDest(WEB, DestKey("10.1.0.1", 8080), DestSpec(9))])
        assert len(handles(router)[chain_name(WEB)]) == 4
        for _ in range(200):  # compaction runs 0.05 s after the change
            if len(handles(router)[chain_name(WEB)]) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(handles(router)[chain_name(WEB)]) == 2
    finally:
        backend.close()


async def test_flush_removes_our_table_only(backend, router):
    nft(router, "add", "table", "inet", "theirs")
    await converge(backend, WANT)
    await backend.flush()
    assert await backend.read() == {}
    assert "piranha" not in nft(router, "list", "tables")
    assert "theirs" in nft(router, "list", "tables")
    await backend.flush()  # nothing there: still fine
    await converge(backend, WANT)
    assert diff(await read_fresh(router), WANT) == []


async def test_nft_errors_are_reported(router):
    broken = NftBackend(netns=router, nft="/bin/false", compact_delay=None)
    with pytest.raises(NftError):
        await broken.read()
    broken.close()
    nowhere = NftBackend(netns=router + "-gone", compact_delay=None)
    with pytest.raises(NftError, match="cannot open"):
        await nowhere.read()  # a missing namespace is an error, not an empty table
    nowhere.close()


async def test_in_process_libnftables_matches_the_nft_binary():
    """Inside its own namespace the backend drives libnftables in-process (as the agent
    does); what it writes reads back the same through the `nft` binary, and vice versa."""
    with netlab.Lab("nftl") as lab:
        ns = lab.add_ns("r")
        async with await lab.worker("r") as worker:
            b = await worker.keep("agent.dataplane.nft:NftBackend", compact_delay=None)
            assert await worker.call_method(b, "uses_libnftables")
            ops = diff({}, WANT)
            await worker.call_method(b, "apply", ops)
            assert diff(await read_fresh(ns), WANT) == []
            assert diff(await worker.call_method(b, "read"), WANT) == []
            # Drift made by the binary is seen and repaired in-process.
            nft(ns, "flush", "ruleset")
            assert await worker.call_method(b, "read") == {}
            await worker.call_method(b, "apply", diff({}, WANT))
            assert diff(await read_fresh(ns), WANT) == []


async def test_guard_and_traffic_elements_go_as_raw_batches_the_kernel_lists_back():
    """In-process, the guard's and traffic sets' elements are written as raw netlink
    batches (elements.py), not through libnftables: what nft lists back is exactly what
    the services ask for (v4 and v6, tcp and udp), change after change."""
    with netlab.Lab("nfte") as lab:
        ns = lab.add_ns("r")
        async with await lab.worker("r") as worker:
            b = await worker.keep("agent.dataplane.nft:NftBackend", compact_delay=None)
            await worker.call_method(b, "apply", diff({}, WANT))

            async def clean() -> None:
                other = NftBackend(netns=ns, compact_delay=None)
                try:
                    assert diff(await other.read(), WANT) == []
                    assert other.problems == ()  # sets == what the services ask for
                finally:
                    other.close()

            await clean()
            assert guard_set(ns) == {"10.1.0.1 . 8080", "10.1.0.2 . 8080", "10.2.0.2 . 80"}
            tv6 = nft(ns, "list", "set", "inet", "piranha", "tv6")
            assert "2001:db8::1 . udp . 53 . reply . established" in tv6
            await worker.call_method(b, "apply", [DelDest(WEB, DestKey("10.1.0.2", 8080))])
            assert guard_set(ns) == {"10.1.0.1 . 8080", "10.2.0.2 . 80"}
            assert "10.1.0.2 . 8080" not in nft(ns, "list", "set", "inet", "piranha", "ti4")
            await worker.call_method(b, "apply", [AddDest(WEB, DestKey("10.1.0.2", 8080),
                                                          DestSpec(1))])
            await clean()
            # A service written anew: its dispatch element is added again (a no-op), and
            # a service deleted in the same change keeps every dispatch change in one
            # libnftables transaction (its element must go before its chain).
            await worker.call_method(b, "apply", [
                AddService(WEB, WANT[WEB].spec),
                *(AddDest(WEB, k, v) for k, v in WANT[WEB].dests.items()),
                DelService(EMPTY)])
            other = NftBackend(netns=ns, compact_delay=None)
            try:
                assert diff(await other.read(), {k: v for k, v in WANT.items()
                                                 if k != EMPTY}) == []
                assert other.problems == ()
            finally:
                other.close()


def guard_set(ns: str) -> set[str]:
    listing = json.loads(nft(ns, "-j", "list", "set", "inet", "piranha", "rs4"))["nftables"]
    (found,) = [item["set"] for item in listing if "set" in item]
    return {"{} . {}".format(*e["concat"]) for e in found.get("elem", [])}


async def test_reply_guard_set_follows_services_and_drift_is_repaired(backend, router):
    await converge(backend, WANT)
    want = {"10.1.0.1 . 8080", "10.1.0.2 . 8080", "10.2.0.2 . 80"}  # masq, tcp/fwmark, port
    assert guard_set(router) == want
    await backend.apply([DelDest(WEB, DestKey("10.1.0.2", 8080))])
    assert guard_set(router) == want - {"10.1.0.2 . 8080"}
    await backend.apply([AddDest(WEB, DestKey("10.1.0.2", 8080), DestSpec(1))])
    nft(router, "delete", "element", "inet", "piranha", "rs4", "{ 10.1.0.1 . 8080 }")
    nft(router, "add", "element", "inet", "piranha", "rs4", "{ 10.9.9.9 . 1 }")
    assert diff(await backend.read(), WANT) == []  # services are intact; only the guard
    assert "reply guard sets: 1 endpoints missing, 1 extra" in backend.problems
    await backend.compact()
    assert guard_set(router) == want
    await backend.read()
    assert backend.problems == ()


# ---------------------------------------------------------------- mh: Maglev tables

MH = ServiceKey("tcp", "10.0.0.5", 80)
MH6 = ServiceKey("udp", "2001:db8::5", 53, family=6)
MH_BASE = tuple((DestKey(f"10.5.0.{i}", 8080), i) for i in range(1, 5))
MH_WANT = {
    MH: Service(ServiceSpec("mh", flags=frozenset({"mh-port"}),
                            maglev=Maglev(32749, 4242, MH_BASE)),
                {DestKey("10.5.0.1", 8080): DestSpec(1), DestKey("10.5.0.2", 8080): DestSpec(2),
                 DestKey("10.5.0.3", 8080): DestSpec(0)}),  # 10.5.0.4: down, configured
    MH6: Service(ServiceSpec("mh", 0, "128", maglev=Maglev(32749, 7, ())),
                 {DestKey("2001:db8::50", 53): DestSpec(1)}),
}  # fmt: skip


async def test_mh_tables_are_programmed_and_read_back(backend, router):
    await converge(backend, MH_WANT | {WEB: WANT[WEB]})
    assert diff(await read_fresh(router), MH_WANT | {WEB: WANT[WEB]}) == []
    assert backend.problems == ()
    text = nft(router, "list", "chain", "inet", "piranha", chain_name(MH))
    assert "jhash ip saddr . tcp sport mod 32749 seed 0x1092 map" in text
    assert text.count(" : 10.5.0.") == 32749 + 2  # every slot, and two parked servers
    # a server going down rewrites that service only
    before = handles(router)
    want = MH_WANT | {WEB: WANT[WEB]}
    want[MH] = Service(MH_WANT[MH].spec, {DestKey("10.5.0.2", 8080): DestSpec(2)})
    await converge(backend, want)
    after = handles(router)
    assert {c: h for c, h in after.items() if c != chain_name(MH)} == {
        c: h for c, h in before.items() if c != chain_name(MH)}
    assert diff(await read_fresh(router), want) == []
    # a new seed (lvsctl seed --new) edits the services that use it
    reseeded = {k: Service(replace(s.spec, maglev=replace(s.spec.maglev, seed=99)), s.dests)
                if s.spec.maglev else s for k, s in want.items()}
    assert [type(op) for op in diff(await backend.read(), reseeded)] == [EditService] * 2
    await converge(backend, reseeded)
    assert diff(await read_fresh(router), reseeded) == []


async def test_a_tampered_mh_table_is_repaired(backend, router):
    await converge(backend, MH_WANT)
    chain = chain_name(MH)
    dnat, reject = handles(router)[chain]
    nft(router, "delete", "rule", "inet", "piranha", chain, "handle", str(dnat))
    nft(router, "insert", "rule", "inet", "piranha", chain, "position", str(reject),
        "meta", "l4proto", "tcp", "ct", "mark", "set", "ct", "mark", "|", "0x40000000",
        "dnat", "ip", "to", "jhash", "ip", "saddr", ".", "tcp", "sport", "mod", "32749", "seed",
        "0x1", "map", "{", "0", ":", "10.5.0.1", ".", "8080", "}")  # another seed, one slot
    have = await backend.read()
    assert MH not in have and MH6 in have
    assert any(str(MH) in p and "DNAT rule differs" in p for p in backend.problems)
    await converge(backend, MH_WANT)
    assert diff(await backend.read(), MH_WANT) == []
    assert backend.problems == ()
    assert diff(await read_fresh(router), MH_WANT) == []


async def test_mh_with_no_server_up_keeps_its_configured_servers_parked(backend, router):
    down = {MH: Service(MH_WANT[MH].spec, {})}
    await converge(backend, down)
    assert diff(await read_fresh(router), down) == []
    listing = nft(router, "list", "chain", "inet", "piranha", chain_name(MH))
    assert "32749" in listing and " 0 : " not in listing  # no slot: every lookup misses


def _big(services: int, dests: int, weight: int = 1) -> dict[ServiceKey, Service]:
    return {ServiceKey("tcp", f"10.4.{i // 250}.{i % 250 + 1}", 80):
            Service(ServiceSpec("wlc"), {DestKey(f"10.5.0.{d + 1}", 80): DestSpec(weight)
                                         for d in range(dests)})
            for i in range(services)}


async def test_a_big_change_goes_as_several_transactions_of_whole_services(backend, router):
    """More than TRANSACTION_OPS operations: several transactions, the kernel's table whole
    at the end; a bad service among them writes nothing at all."""
    from agent.dataplane.nft import plan as nft_plan

    want = _big(450, 10)  # 4,950 operations
    ops = diff({}, want)
    assert len(ops) > nft_plan.TRANSACTION_OPS
    gen = Generation(router)
    before = gen.get()
    await backend.apply(ops)
    assert gen.get() == before + len(
        nft_plan.split(ops, first=nft_plan.FIRST_TRANSACTION_OPS)) >= before + 3
    assert diff(await backend.read(), want) == []
    bad = [*diff(want, _big(450, 10, weight=2)),
           AddDest(DNS6, DestKey("2001:db8::10", 53), DestSpec())]  # no such virtual service
    before = gen.get()
    with pytest.raises(NftInputError, match="no such virtual service"):
        await backend.apply(bad)
    assert gen.get() == before  # checked first, all of it: nothing written
    gen.close()
    assert diff(await backend.read(), want) == []


def lib_state(backend: NftBackend) -> tuple[int, bool]:
    """(contexts renewed after big commands, one freed since the heap was given back)."""
    lib = backend._lib
    assert lib is not None
    return lib.renewed, lib.unreturned


async def test_a_big_change_in_process_lists_back_whole_with_its_raw_elements():
    """In-process, a big change's transactions are planned and encoded while the one
    before commits, raw element batches after each: the kernel lists back exactly the
    services and their sets, and a bad service in its last transaction writes nothing."""
    from agent.dataplane.nft import plan as nft_plan

    want = _big(450, 10)
    with netlab.Lab("nftp") as lab:
        ns = lab.add_ns("r")
        async with await lab.worker("r") as worker:
            b = await worker.keep("agent.dataplane.nft:NftBackend", compact_delay=None)
            ops = diff({}, want)
            assert len(nft_plan.split(ops, first=nft_plan.FIRST_TRANSACTION_OPS)) >= 3
            await worker.call_method(b, "apply", ops)
            renewed, unreturned = await worker.call("test_nft_backend:lib_state", b)
            assert renewed > 0 and not unreturned  # big contexts freed, the heap given back
            other = NftBackend(netns=ns, compact_delay=None)
            try:
                assert diff(await other.read(), want) == []
                assert other.problems == ()  # guard and traffic sets whole
            finally:
                other.close()
            assert guard_set(ns) == {f"10.5.0.{d + 1} . 80" for d in range(10)}
            gen = Generation(ns)
            before = gen.get()
            bad = [*diff(want, _big(450, 10, weight=2)),
                   AddDest(DNS6, DestKey("2001:db8::10", 53), DestSpec())]
            with pytest.raises(Exception, match="no such virtual service"):
                await worker.call_method(b, "apply", bad)
            assert gen.get() == before
            gen.close()


async def test_commits_of_ours_to_another_table_do_not_make_the_reader_list(backend, router):
    """The active's VIP fence renews its licence (in a table of its own) every few seconds:
    at 40,000 real servers each renewal made the drift check list the whole table again, a
    core's worth of CPU at steady state. A commit the fence recorded is skipped; any other
    still makes the reader list."""
    from agent.dataplane.nft.netlink import elsewhere

    await converge(backend, {WEB: WANT[WEB]})
    await backend.read()
    listed = 0
    real_list = backend._list

    async def counting_list():
        nonlocal listed
        listed += 1
        return await real_list()

    backend._list = counting_list
    gen = Generation(router)
    for n in range(3):  # renewals, as the fence records them
        before = gen.get()
        nft(router, "add", "table", "netdev", f"fence{n}")
        elsewhere(router).add(before, gen.get())
    assert diff(await backend.read(), {WEB: WANT[WEB]}) == [] and listed == 0
    nft(router, "add", "table", "netdev", "someone_else")  # not ours: list again
    await backend.read()
    assert listed == 1
    before = gen.get()
    nft(router, "flush", "table", "inet", "piranha")  # a change to our table...
    elsewhere(router).add(before - 5, gen.get())  # ...not recorded (not one commit after `before`)
    assert diff(await backend.read(), {WEB: WANT[WEB]}) != [] and listed == 2
    gen.close()


async def test_a_listing_the_fence_renewed_during_still_counts(backend, router):
    """Listing 40,000 servers takes seconds, and the fence renews meanwhile: the listing is
    still true (only another table moved), so the next read need not list again."""
    from agent.dataplane.nft.netlink import elsewhere

    await converge(backend, {WEB: WANT[WEB]})
    nft(router, "add", "table", "netdev", "someone_else")  # not ours: the next read lists
    gen = Generation(router)
    listed = 0
    real_list = backend._list

    async def renewing_list():
        nonlocal listed
        listed += 1
        out = await real_list()
        before = gen.get()
        nft(router, "add", "table", "netdev", f"fence{listed}")  # a renewal, recorded
        elsewhere(router).add(before, gen.get())
        return out

    backend._list = renewing_list
    await backend.read()
    await backend.read()
    assert listed == 1
    gen.close()


async def test_traffic_counters_with_and_without_the_real_servers(backend, router):
    """The counters are dumped from the kernel's sets (a child process, setdump.py): every
    counted service and real server, zero before any packet; without the real servers
    (past --metrics-max-servers) only the services' set is read, and the totals are the
    same."""
    await converge(backend, WANT)
    read = await asyncio.to_thread(backend.traffic)
    counted = {WEB, DNS6, EMPTY}  # tcp/udp on a port: not fwmark, not all ports
    assert set(read) == counted
    assert set(read[WEB].dests) == {DestKey("10.1.0.1", 8080), DestKey("10.1.0.2", 8080)}
    assert all(t == Traffic(0, 0, 0, 0, 0) for st in read.values()
               for t in (st.total, *st.dests.values()))
    totals = await asyncio.to_thread(backend.traffic, servers=False)
    assert {k: st.total for k, st in totals.items()} == {k: st.total for k, st in read.items()}
    assert all(st.dests == {} for st in totals.values())
