"""Pure parts of the nftables backend: shares, layout, comments, schedulers, plans."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.dataplane.nft import guard, traffic
from agent.dataplane.nft import plan as nft_plan
from agent.dataplane.nft import rules as nft_rules
from agent.dataplane.nft.layout import (
    COMMENT_MAX,
    MOD,
    SEED,
    NftInputError,
    chain_name,
    check_service,
    dispatch_map,
    layout,
    service_from_rule,
    spec_comment,
    spec_from_comment,
    split,
)
from agent.dataplane.nft.read import MISSING, KernelState
from agent.dataplane.nft.sched import fallbacks, selector
from agent.dataplane.table import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestKey,
    DestSpec,
    EditDest,
    Maglev,
    Service,
    ServiceKey,
    ServiceSpec,
)

V4 = ServiceKey("tcp", "10.0.0.1", 80)
V6 = ServiceKey("udp", "2001:db8::1", 53, family=6)
FWM = ServiceKey("fwmark", fwmark=7)


def svc(scheduler: str = "wrr", **weights: int) -> Service:
    dests = {DestKey(f"10.1.0.{i}", 8080): DestSpec(w) for i, w in enumerate(weights.values())}
    return Service(ServiceSpec(scheduler), dests)


# ---------------------------------------------------------------- shares


def test_split_is_proportional_and_complete():
    assert split([3, 1], 8) == [6, 2]
    assert split([0, 5, 0], 10) == [0, 10, 0]
    assert split([0, 0]) == [0, 0]
    shares = split([1, 10**6])  # a tiny weight still gets a unit
    assert shares[0] >= 1 and sum(shares) == MOD


@given(st.lists(st.integers(min_value=0, max_value=65535), min_size=1, max_size=40))
def test_split_within_one_unit_of_exact(weights):
    shares = split(weights)
    total = sum(weights)
    if total == 0:
        assert shares == [0] * len(weights)
        return
    assert sum(shares) == MOD
    tiny = sum(1 for w in weights if 0 < w * MOD < total)  # get 1 unit they did not earn
    for weight, share in zip(weights, shares, strict=True):
        assert (share == 0) == (weight == 0)
        assert abs(share - weight * MOD / total) < 1 + tiny


# ---------------------------------------------------------------- layout


def test_layout_ranges_follow_weights_and_park_weight_zero():
    rule = layout(V4, svc(a=3, b=1, c=0))
    live = [s for s in rule.slots if s.lo < MOD]
    parked = [s for s in rule.slots if s.lo >= MOD]
    assert [(s.address, s.hi - s.lo + 1) for s in live] == [
        ("10.1.0.0", 3 * MOD // 4),
        ("10.1.0.1", MOD // 4),
    ]
    assert live[0].lo == 0 and live[-1].hi == MOD - 1
    assert [(s.address, s.port) for s in parked] == [("10.1.0.2", 8080)]
    assert rule.hash == "random" and rule.l4proto == "tcp"


def test_layout_schedulers():
    assert layout(V4, svc("sh", a=1)).hash == "saddr"
    assert layout(V4, svc("dh", a=1)).hash == "daddr"
    rr = layout(V4, svc("rr", a=5, b=1))
    assert [s.hi - s.lo + 1 for s in rr.slots] == [MOD // 2, MOD // 2]  # rr ignores weights
    fo = layout(V4, svc("fo", a=2, b=7, c=7))
    assert [(s.address, s.hi - s.lo + 1) for s in fo.slots if s.lo < MOD] == [("10.1.0.1", MOD)]
    persistent = Service(ServiceSpec("wrr", persistent=60), svc(a=1).dests)
    assert layout(V4, persistent).hash == "saddr"
    assert layout(V4, Service(ServiceSpec("rr"), {})) is None


def test_fwmark_keeps_port_and_remembers_it_in_comment():
    dests = {DestKey("10.2.0.1", 0): DestSpec(1), DestKey("10.2.0.2", 80): DestSpec(1, "route")}
    service = Service(ServiceSpec("wrr"), dests)
    rule = layout(FWM, service)
    assert rule.l4proto is None and all(s.port is None for s in rule.slots)
    assert service_from_rule(service.spec, rule) == service


def test_port_zero_real_server_means_service_port():
    service = Service(ServiceSpec("wrr"), {DestKey("10.2.0.1", 0): DestSpec(1)})
    (slot,) = layout(V4, service).slots
    assert slot.port == 80
    assert service_from_rule(service.spec, layout(V4, service)) == service


addresses = st.integers(min_value=1, max_value=250).map(lambda n: f"10.9.0.{n}")
dest_maps = st.dictionaries(
    st.builds(DestKey, addresses, st.integers(min_value=0, max_value=65535)),
    st.builds(
        DestSpec,
        st.integers(min_value=0, max_value=1000),
        st.sampled_from(["masq", "route", "tunnel"]),
    ),
    max_size=12,
)
schedulers = st.sampled_from(["rr", "wrr", "wlc", "sh", "dh", "fo", "mh", "lblc", "nope"])
keys = st.sampled_from([V4, FWM, ServiceKey("tcp", "10.0.0.2", 0)])


@settings(max_examples=200)
@given(keys, schedulers, st.integers(min_value=0, max_value=3600), dest_maps)
def test_layout_round_trips(key, scheduler, persistent, dests):
    service = Service(ServiceSpec(scheduler, persistent), dests)
    rule = layout(key, service)
    assert service_from_rule(service.spec, rule) == service
    if rule is not None:  # ranges never overlap and cover 0..mod-1 iff someone is live
        assert rule.mod == (MOD if scheduler != "mh" else 32749)
        spans = sorted((s.lo, s.hi) for s in rule.slots)
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
        live = sum(s.hi - s.lo + 1 for s in rule.slots if s.lo < rule.mod)
        assert live in (0, rule.mod)


def test_spec_comment_round_trip_and_junk():
    spec = ServiceSpec("wlc", 300, "255.255.255.0")
    assert spec_from_comment(spec_comment(spec)) == spec
    assert len(spec_comment(ServiceSpec("lblcr", 86400, "ffff:ffff:ffff:ffff::"))) < 128
    mh = ServiceSpec("mh", 86400, "255.255.255.255", frozenset({"mh-port", "mh-fallback"}),
                     Maglev(1048573, 2**32 - 1))
    assert spec_from_comment(spec_comment(mh)) == mh
    assert len(spec_comment(mh)) <= COMMENT_MAX
    for junk in (None, "", "x", '{"v":2}', '{"v":1,"s":"rr","p":-1,"m":"x"}'):
        with pytest.raises(ValueError):
            spec_from_comment(junk)


def test_names_are_deterministic_and_distinct():
    names = {chain_name(k) for k in (V4, V6, FWM, ServiceKey("tcp", "10.0.0.1", 0))}
    assert len(names) == 4 and all(n.replace("_", "").isalnum() for n in names)
    assert chain_name(V6) == "svc6_udp_2001xdb8xx1_53"
    assert [dispatch_map(k) for k in (V4, V6, FWM)] == ["svc4", "svc6", "fwm4"]
    assert dispatch_map(ServiceKey("tcp", "10.0.0.1", 0)) == "any4"


@pytest.mark.parametrize(
    ("key", "dest", "message"),
    [
        (ServiceKey("tcp", "10.0.0.300", 80), None, "not an IP address"),
        (ServiceKey("tcp", "10.0.0.1", 80, family=6), None, "not an IPv6"),
        (ServiceKey("sctp", "10.0.0.1", 80), None, "protocol"),
        (ServiceKey("fwmark", fwmark=0), None, "fwmark"),
        (V6, DestKey("2001:DB8::2", 53), "write '2001:DB8::2' as '2001:db8::2'"),
        (V4, DestKey("10.1.0.1", 70000), "port"),
        (V4, DestKey("2001:db8::2", 80), "not an IPv4"),
    ],
)
def test_bad_input_is_a_clear_error(key, dest, message):
    dests = {dest: DestSpec(1)} if dest else {}
    with pytest.raises(NftInputError, match=message):
        check_service(key, Service(ServiceSpec(), dests))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ServiceSpec('w"lc'), "not a name"),
        (ServiceSpec("wlc", -1), "persistent"),
        (ServiceSpec("wlc", 1, "x" * 50), "not a mask"),
    ],
)
def test_bad_settings_are_a_clear_error(spec, message):
    with pytest.raises(NftInputError, match=message):
        check_service(V4, Service(spec))


# ---------------------------------------------------------------- Maglev (mh)

RS = [DestKey(f"10.1.0.{i}", 8080) for i in range(1, 6)]


def mh_service(live: dict[int, int], flags: frozenset[str] = frozenset()) -> Service:
    """Five configured real servers (weights 1..5); ``live``: index -> live weight."""
    base = tuple((RS[i], i + 1) for i in range(5))
    spec = ServiceSpec("mh", flags=flags, maglev=Maglev(32749, 12345, base))
    return Service(spec, {RS[i]: DestSpec(w) for i, w in live.items()})


def test_mh_is_one_element_per_slot_of_its_maglev_table():
    service = mh_service({0: 1, 1: 2, 2: 0})  # 2 drained, 3 and 4 down
    rule = layout(V4, service)
    assert (rule.hash, rule.mod, rule.seed, rule.sport, rule.l4proto) == (
        "saddr", 32749, 12345, False, "tcp")
    table = [s for s in rule.slots if s.lo < rule.mod]
    assert [s.lo for s in table] == list(range(32749)) and all(s.lo == s.hi for s in table)
    assert {s.address for s in table} == {"10.1.0.1", "10.1.0.2"}
    # a comment on the first slot of each real server; the rest parked, base weight kept
    commented = {s.address: s.comment for s in rule.slots if s.comment}
    assert commented == {"10.1.0.1": '{"b":1,"w":1}', "10.1.0.2": '{"b":2,"w":2}',
                         "10.1.0.3": '{"b":3,"w":0}', "10.1.0.4": '{"b":4}',
                         "10.1.0.5": '{"b":5}'}
    assert all(s.lo >= rule.mod for s in rule.slots if s.address in ("10.1.0.4", "10.1.0.5"))
    assert service_from_rule(service.spec, rule) == service


@pytest.mark.slow
@given(st.dictionaries(st.integers(0, 4), st.integers(0, 9)), st.booleans())
@settings(max_examples=30, deadline=None)
def test_mh_layout_round_trips(live, port):
    service = mh_service(live, frozenset({"mh-port"}) if port else frozenset())
    rule = layout(V4, service)
    assert rule.sport == port
    assert service_from_rule(spec_from_comment(spec_comment(service.spec)), rule) == service


def test_mh_without_maglev_inputs_sizes_its_table_by_its_real_servers():
    service = Service(ServiceSpec("mh"), {RS[0]: DestSpec(1)})
    rule = layout(V4, service)
    assert (rule.mod, rule.seed) == (32749, SEED)
    assert service_from_rule(service.spec, rule) == service


def test_mh_with_no_server_at_all_has_no_dnat_rule():
    assert layout(V4, Service(ServiceSpec("mh", maglev=Maglev(32749, 1)))) is None
    assert layout(V4, mh_service({})) is not None  # configured servers are kept, parked


def test_mh_persistence_ignores_mh_port_and_says_so():
    sel = selector(ServiceSpec("mh", 300, flags=frozenset({"mh-port", "mh-fallback"})))
    assert sel.maglev and not sel.sport
    assert any("mh-port ignored with persistence" in w for w in sel.warnings)
    assert selector(ServiceSpec("mh", flags=frozenset({"mh-fallback"}))).warnings == ()
    (warning,) = selector(ServiceSpec("sh", flags=frozenset({"sh-port"}))).warnings
    assert "'sh-port' not supported" in warning


@pytest.mark.parametrize(("maglev_in", "message"), [
    (Maglev(32748, 1), "size 32748 is not one of"),
    (Maglev(32749, -1), "seed"),
    (Maglev(32749, 1, ((DestKey("10.0.0.300", 80), 1),)), "not an IP address"),
])
def test_bad_maglev_inputs_are_a_clear_error(maglev_in, message):
    with pytest.raises(NftInputError, match=message):
        check_service(V4, Service(ServiceSpec("mh", maglev=maglev_in)))


# ---------------------------------------------------------------- schedulers


@pytest.mark.parametrize("scheduler", ["lc", "wlc", "sed", "nq", "ovf", "lblc", "lblcr"])
def test_fallback_schedulers_warn_by_name(scheduler):
    (warning,) = selector(ServiceSpec(scheduler)).warnings
    assert repr(scheduler) in warning


@pytest.mark.parametrize("scheduler", ["rr", "wrr", "sh", "dh", "fo"])
def test_native_schedulers_do_not_warn(scheduler):
    assert fallbacks(ServiceSpec(scheduler)) == []


def test_fallbacks_name_persistence_netmask_forwarding_and_ports():
    dests = {DestKey("10.1.0.1", 8080): DestSpec(1, "tunnel")}
    found = fallbacks(ServiceSpec("wrr", 300, "255.255.255.0"), dests, FWM)
    assert any("persistence 300s" in w for w in found)
    assert any("netmask 255.255.255.0" in w for w in found)
    assert any("'tunnel'" in w and "masq" in w for w in found)
    assert any("10.1.0.1:8080" in w and "destination port" in w for w in found)


# ---------------------------------------------------------------- plans


def test_plan_from_missing_table_builds_base_and_services():
    ops = [AddService(V4, ServiceSpec()), AddDest(V4, DestKey("10.1.0.1", 80), DestSpec())]
    plan = nft_plan.plan_apply(MISSING, ops, nft_rules.Config())
    verbs = [next(iter(c)) for c in plan.commands]
    assert plan.commands[0] == {"add": {"table": {"family": "inet", "name": "piranha"}}}
    assert "insert" not in verbs and "delete" not in verbs
    assert plan.after.base_ok and set(plan.after.services) == {V4}
    assert plan.after.chains == {chain_name(V4)}


def test_plan_for_a_dest_change_only_inserts_into_that_chain():
    chains = frozenset({chain_name(V4), chain_name(V6)})
    services = {V4: svc(a=1, b=1), V6: Service()}
    state = KernelState(services, chains=chains, guard=guard.endpoints(services),
                        traffic=traffic.counted(services), base_ok=True)
    ops = [EditDest(V4, DestKey("10.1.0.0", 8080), DestSpec(5))]
    plan = nft_plan.plan_apply(state, ops, nft_rules.Config())
    assert [next(iter(c)) for c in plan.commands] == ["insert", "insert"]
    assert {c["insert"]["rule"]["chain"] for c in plan.commands} == {chain_name(V4)}
    assert plan.after.stale == {chain_name(V4)}
    compaction = nft_plan.plan_compaction(plan.after, nft_rules.Config())
    assert [next(iter(c)) for c in compaction.commands] == ["flush", "add", "add"]
    assert not compaction.after.stale


def test_plan_rejects_unknown_service_and_skips_no_ops():
    services = {V4: svc(a=1)}
    state = KernelState(
        services, base_ok=True, chains=frozenset({chain_name(V4)}), guard=guard.endpoints(services),
        traffic=traffic.counted(services),
    )
    with pytest.raises(NftInputError, match="no such virtual service"):
        nft_plan.plan_apply(state, [DelDest(V6, DestKey("10.1.0.0", 1))], nft_rules.Config())
    same = [EditDest(V4, DestKey("10.1.0.0", 8080), DestSpec(1))]
    assert nft_plan.plan_apply(state, same, nft_rules.Config()).commands == []
    gone = nft_plan.plan_apply(state, [DelService(V4)], nft_rules.Config())
    assert not gone.after.services and not gone.after.chains


# ---------------------------------------------------------------- reply guard


def test_guard_holds_the_real_servers_with_a_port_of_tcp_and_fwmark_services():
    """Route (gate) servers too: this backend DNATs them (masq used), so their replies
    come back through the director like any NAT server's."""
    udp = ServiceKey("udp", "10.0.0.1", 53)
    services = {
        V4: Service(
            dests={
                DestKey("10.1.0.1", 80): DestSpec(),
                DestKey("10.1.0.2", 80): DestSpec(1, "gate"),
            }
        ),
        FWM: Service(
            dests={DestKey("10.1.0.3", 443): DestSpec(), DestKey("10.1.0.4", 0): DestSpec()}
        ),
        udp: Service(dests={DestKey("10.1.0.5", 53): DestSpec()}),
    }
    assert guard.endpoints(services) == {(4, "10.1.0.1", 80), (4, "10.1.0.2", 80),
                                         (4, "10.1.0.3", 443)}


def test_guard_follows_the_services_with_the_minimal_change():
    state = KernelState({V4: svc(a=1)}, base_ok=True, chains=frozenset({chain_name(V4)}))
    state = replace(state, guard=guard.endpoints(state.services),
                    traffic=traffic.counted(state.services))
    (old,) = state.guard
    plan = nft_plan.plan_apply(
        state, [AddDest(V4, DestKey("10.9.0.9", 80), DestSpec())], nft_rules.Config()
    )
    elements = [c for c in plan.commands if "element" in next(iter(c.values()))
                and next(iter(c.values()))["element"]["name"] in guard.SETS.values()]
    assert elements == [
        {
            "add": {
                "element": {
                    "family": "inet",
                    "table": "piranha",
                    "name": "rs4",
                    "elem": [{"concat": ["10.9.0.9", 80]}],
                }
            }
        }
    ]
    assert plan.after.guard == {old, (4, "10.9.0.9", 80)} == guard.endpoints(plan.after.services)
    gone = nft_plan.plan_apply(plan.after, [DelService(V4)], nft_rules.Config())
    assert [
        next(iter(c))
        for c in gone.commands
        if "element" in next(iter(c.values()))
        and next(iter(c.values()))["element"]["name"] == "rs4"
    ] == ["delete"]
    assert gone.after.guard == frozenset()


def test_guard_drift_and_junk_are_repaired_by_compaction():
    services = {V4: svc(a=1)}
    drifted = KernelState(
        services, base_ok=True, chains=frozenset({chain_name(V4)}), guard=frozenset(),
        traffic=traffic.counted(services),
    )
    assert drifted.untidy
    fix = nft_plan.plan_compaction(drifted, nft_rules.Config())
    assert [next(iter(c)) for c in fix.commands] == ["add"] and not fix.after.untidy
    junk = replace(drifted, guard=None)  # read found junk: flush and write again
    fix = nft_plan.plan_compaction(junk, nft_rules.Config())
    assert [next(iter(c)) for c in fix.commands] == ["flush", "add", "flush"]
    assert fix.after.guard == guard.endpoints(services)


# ---------------------------------------------------------------- transactions


def _ops(services: int, dests: int) -> list:
    out: list = []
    for i in range(services):
        key = ServiceKey("tcp", f"10.0.{i // 250}.{i % 250 + 1}", 80)
        out.append(AddService(key, ServiceSpec("wlc")))
        out += [AddDest(key, DestKey(f"10.1.0.{d}", 80), DestSpec(1)) for d in range(dests)]
    return out


def _service_of(op) -> ServiceKey:
    return op.service if isinstance(op, AddDest | EditDest | DelDest) else op.key


@pytest.mark.parametrize(("services", "dests", "limit", "first"),
                         [(0, 0, 5, None), (1, 3, 1, None), (10, 3, 8, None), (10, 3, 4, None),
                          (7, 9, 100, None), (3, 40, 16, None), (10, 3, 16, 4),
                          (30, 5, 50, 12), (7, 9, 8, 100)])
def test_a_big_change_splits_between_services_in_order(services, dests, limit, first):
    ops = _ops(services, dests)
    runs = nft_plan.split(ops, limit, first)
    assert [op for run in runs for op in run] == ops  # all of it, in order
    caps = [limit if first is None or n else first for n in range(len(runs))]
    for run, cap in zip(runs, caps, strict=True):
        assert run
        # never a service cut in two; a run over the limit is one service alone
        assert len(run) <= cap or len({_service_of(op) for op in run}) == 1
    for (a, b), cap in zip(itertools.pairwise(runs), caps, strict=False):
        assert _service_of(a[-1]) != _service_of(b[0])
        assert len(a) + 1 + dests > cap  # a run ends only when the next service won't fit


def test_a_change_is_checked_whole_before_any_transaction_is_planned():
    """The backend plans each transaction while the one before commits: the check of the
    whole change finds a bad operation in its last transaction first."""
    ops = _ops(30, 5)
    bad = [*ops, AddDest(ServiceKey("tcp", "10.9.9.9", 80), DestKey("10.1.0.1", 80),
                         DestSpec(1))]
    nft_plan.check(MISSING, ops)  # a good change passes
    with pytest.raises(NftInputError, match="no such virtual service"):
        nft_plan.check(MISSING, bad)
    wrong = [*ops[:-1], AddDest(ops[-1].service, DestKey("10.1.0.300", 80), DestSpec(1))]
    with pytest.raises(NftInputError):
        nft_plan.check(MISSING, wrong)


def test_plans_of_a_split_change_end_where_one_plan_would():
    """Planned run after run on the state the one before leaves, the transactions of a
    split change leave the kernel state one transaction would."""
    ops, cfg = _ops(30, 5), nft_rules.Config()
    whole = nft_plan.plan_apply(MISSING, ops, cfg)  # one transaction
    state = MISSING
    runs = nft_plan.split(ops, 20)
    assert len(runs) == 10
    for run in runs:
        state = nft_plan.plan_apply(state, run, cfg).after
    assert state.services == whole.after.services
    assert state.traffic == whole.after.traffic and state.guard == whole.after.guard


# ------------------------------------------- guard and traffic sets, change by change

_KEYS = [ServiceKey("tcp", "10.0.0.1", 80), ServiceKey("tcp", "10.0.0.2", 80),
         ServiceKey("udp", "10.0.0.1", 53), FWM, ServiceKey("tcp", "2001:db8::1", 80, family=6)]
_DESTS = [DestKey("10.1.0.1", 80), DestKey("10.1.0.2", 80), DestKey("10.1.0.3", 0),
          DestKey("2001:db8::9", 80)]


def _op(choice: tuple[int, int, int, int]):
    kind, k, d, w = choice
    key, dest = _KEYS[k], _DESTS[d]
    if kind == 0:
        return AddService(key, ServiceSpec())
    if kind == 1:
        return DelService(key)
    if kind == 2:
        return AddDest(key, dest, DestSpec(w))
    return DelDest(key, dest)


def _held(state_sets: set, cmds: list, names: set[str]) -> set:
    """Apply the element commands on sets ``names`` to ``state_sets`` ((set, elem) pairs)."""
    held = set(state_sets)
    for cmd in cmds:
        verb, body = next(iter(cmd.items()))
        what = body.get("set") or body.get("element")
        if what is None or what["name"] not in names:
            continue
        if verb == "flush":
            held = {h for h in held if h[0] != what["name"]}
        for elem in body.get("element", {}).get("elem", []):
            item = (what["name"], repr(elem))
            (held.add if verb == "add" else held.discard)(item)
    return held


def _as_elements(state: KernelState) -> set:
    return set() if not state.base_ok else _held(set(), [
        *guard.commands("piranha", None, state.guard or frozenset()),
        *traffic.commands("piranha", None, state.traffic or frozenset())],
        {*guard.SETS.values(), *traffic.SETS})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 3), st.integers(0, len(_KEYS) - 1),
                                   st.integers(0, len(_DESTS) - 1), st.integers(0, 3)),
                         min_size=1, max_size=6), min_size=1, max_size=8))
# Always tried: two services share a real server; one drops it (it stays), then the other.
@example([[(0, 0, 0, 1), (0, 1, 0, 1), (2, 0, 0, 1), (2, 1, 0, 1)], [(3, 0, 0, 0)],
          [(1, 1, 0, 0)]])
def test_sets_follow_each_change_exactly_from_the_touched_services(batches):
    """The guard and traffic sets are computed from the touched services only; after
    every transaction they equal what all services ask for (endpoints shared between
    services stay while one still holds them, whether looked up one by one or found in
    one pass over the other services), and the commands written turn the kernel's sets
    from the old into the new."""
    saved = nft_plan.HELD_LOOKUPS
    try:
        for lookups in (saved, 0):
            nft_plan.HELD_LOOKUPS = lookups
            _follow(MISSING, {*guard.SETS.values(), *traffic.SETS}, batches)
    finally:
        nft_plan.HELD_LOOKUPS = saved


def _follow(state, names, batches) -> None:
    for batch in batches:
        services = dict(state.services)
        ops = []
        for op in map(_op, batch):
            target = op.key if isinstance(op, AddService | DelService) else op.service
            if isinstance(op, AddService):
                services[target] = Service()
            elif isinstance(op, DelService):
                services.pop(target, None)
            elif target not in services:
                continue  # not a valid op here
            ops.append(op)
        if not ops:
            continue
        try:
            plan = nft_plan.plan_apply(state, ops, nft_rules.Config())
        except NftInputError:
            continue  # e.g. a v6 server in a v4 service: refused, nothing written
        after = plan.after
        assert after.sets_tidy
        assert after.untidy == bool(after.stale or after.stray or after.broken)
        assert after.guard == guard.endpoints(after.services)
        assert after.traffic == traffic.counted(after.services)
        assert _held(_as_elements(state), plan.commands, names) == _as_elements(after)
        state = after


def test_a_read_state_with_drifted_sets_is_planned_from_every_service():
    services = {V4: svc(a=1)}
    drifted = KernelState(services, base_ok=True, chains=frozenset({chain_name(V4)}),
                          guard=frozenset(), traffic=traffic.counted(services))
    plan = nft_plan.plan_apply(drifted, [AddDest(V4, DestKey("10.9.0.9", 80), DestSpec())],
                               nft_rules.Config())
    assert plan.after.guard == guard.endpoints(plan.after.services)
    assert len(plan.after.guard) == 2 and plan.after.sets_tidy
