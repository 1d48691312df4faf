"""desired_table and its helpers: Piranha's lvs + nanny rules as a pure function."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.dataplane.desired import (
    SYNC_FLUSH,
    Health,
    desired_table,
    midstream_protocols,
    sync_daemon,
    sync_refresh,
    timeouts,
)
from agent.dataplane.table import DestKey, DestSpec, Maglev, ServiceKey, ServiceSpec
from cluster.model import LvsConfig

WEB = ServiceKey("tcp", "10.0.0.100", 80)
UP = Health("up")
DOWN = Health("down")


def config(*virtuals: dict[str, Any], **globals_: Any) -> LvsConfig:
    return LvsConfig(virtuals=virtuals, **globals_)


def web(*servers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    base = {"name": "web", "address": "10.0.0.100 eth0:1", "servers": servers}
    return base | fields


def server(name: str, address: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "address": address} | fields


TWO = web(server("a", "10.0.1.1", weight=3), server("b", "10.0.1.2", weight=2))


def dests(cfg: LvsConfig, health: dict | None = None, admin: dict | None = None,
          key: ServiceKey = WEB) -> dict[DestKey, int]:
    table = desired_table(cfg, health or {}, admin or {})
    return {d: s.weight for d, s in table[key].dests.items()}


def both_up() -> dict:
    return {("web", "a"): UP, ("web", "b"): UP}


# ---------------------------------------------------------------- mh (Maglev)


def test_mh_spec_carries_flags_and_a_base_of_the_configured_servers():
    cfg = config(web(server("a", "10.0.1.1", weight=3), server("b", "10.0.1.2", port=8080),
                     server("c", "10.0.1.1", weight=2), server("off", "10.0.1.9", active=False),
                     server("zero", "10.0.1.8", weight=0),
                     scheduler="mh", scheduler_flags="mh-port,mh-fallback"))
    spec = desired_table(cfg, {("web", "b"): UP}, {("web", "a"): "disable"}, seed=77)[WEB].spec
    assert spec.flags == {"mh-fallback", "mh-port"}
    # health and admin flags change the live weights, never the base: a and c (one
    # address:port) summed, the weight-0 server counted in the size but holding no slots.
    assert spec.maglev == Maglev(32749, 77, ((DestKey("10.0.1.1", 80), 5),
                                             (DestKey("10.0.1.2", 8080), 1)))


def test_mh_table_size_follows_the_configured_servers_not_their_health():
    many = web(*(server(f"s{i}", f"10.0.{i // 200}.{i % 200 + 1}") for i in range(90)),
               scheduler="mh")
    assert desired_table(config(many), {}, {})[WEB].spec.maglev.size == 65521


def test_mh_with_nothing_serving_keeps_its_base_and_takes_the_sorry_server():
    from agent.dataplane.nft.layout import layout

    mh = web(*TWO["servers"], scheduler="mh")
    for health, admin in (({}, {}), (both_up(), {("web", "a"): "drain", ("web", "b"): "drain"})):
        service = desired_table(config(mh), health, admin, seed=3)[WEB]
        assert not any(d.weight for d in service.dests.values())
        assert service.spec.maglev.base == ((DestKey("10.0.1.1", 80), 3),
                                            (DestKey("10.0.1.2", 80), 2))
        rule = layout(WEB, service)  # every configured server parked: every lookup misses
        assert rule is not None and all(slot.lo >= rule.mod for slot in rule.slots)
    sorry = desired_table(config(web(*TWO["servers"], scheduler="mh",
                                     sorry_server="10.9.9.9")), {}, {}, seed=3)[WEB]
    assert sorry.dests == {DestKey("10.9.9.9", 80): DestSpec(1)}
    rule = layout(WEB, sorry)
    assert {s.address for s in rule.slots if s.lo < rule.mod} == {"10.9.9.9"}
    assert sum(s.lo < rule.mod for s in rule.slots) == rule.mod == 32749


def test_other_schedulers_have_no_maglev_inputs():
    assert desired_table(config(TWO), both_up(), {}, seed=5)[WEB].spec == ServiceSpec("wlc")


def test_a_bad_seed_is_refused():
    with pytest.raises(ValueError, match="seed"):
        desired_table(config(web(scheduler="mh")), {}, {}, seed=-1)


# ---------------------------------------------------------------- services


def test_service_key_spec_and_configured_weights():
    cfg = config(web(server("a", "10.0.1.1", weight=3), server("b", "10.0.1.2", port=8080),
                     scheduler="wrr", persistent=300, pmask="255.255.255.0"))
    table = desired_table(cfg, both_up(), {})
    assert list(table) == [WEB]
    assert table[WEB].spec == ServiceSpec("wrr", 300, "255.255.255.0")
    assert table[WEB].dests == {DestKey("10.0.1.1", 80): DestSpec(3, "masq"),
                                DestKey("10.0.1.2", 8080): DestSpec(1, "masq")}


def test_service_lvs_only_and_active_virtuals_only():
    assert desired_table(config(TWO, service="fos"), both_up(), {}) == {}
    off = web(server("a", "10.0.1.1"), name="off", address="10.0.0.101", active=False)
    table = desired_table(config(TWO, off), both_up(), {})
    assert list(table) == [WEB]


def test_udp_and_host_mask_default():
    table = desired_table(config(web(protocol="udp", port=53)), {}, {})
    key = ServiceKey("udp", "10.0.0.100", 53)
    assert list(table) == [key]
    assert table[key].spec == ServiceSpec("wlc", 0, "255.255.255.255")
    assert table[key].dests == {}


def test_ipv6_service_canonical_addresses_and_prefix_mask():
    cfg = config(web(server("a", "2001:DB8:0::10"), address="2001:db8:0:0::1", port=443,
                     persistent=60))
    table = desired_table(cfg, {("web", "a"): UP}, {})
    key = ServiceKey("tcp", "2001:db8::1", 443, family=6)
    assert table[key].spec == ServiceSpec("wlc", 60, "128")
    assert table[key].dests == {DestKey("2001:db8::10", 443): DestSpec(1, "masq")}


@pytest.mark.parametrize(("vip", "family"), [("10.0.0.100", 4), ("2001:db8::1", 6)])
def test_fwmark_service_and_its_dests_keep_the_packet_port(vip, family):
    cfg = config(web(server("a", "10.0.1.1" if family == 4 else "2001:db8::10", port=8080),
                     address=vip, fwmark=7, sorry_server="10.9.9.9" if family == 4
                     else "2001:db8::99"))
    key = ServiceKey("fwmark", fwmark=7, family=family)
    table = desired_table(cfg, {("web", "a"): UP}, {})
    assert list(table) == [key]
    assert [d.port for d in table[key].dests] == [0]
    down = desired_table(cfg, {("web", "a"): DOWN}, {})
    assert [(d.port, s.weight) for d, s in down[key].dests.items()] == [(0, 1)]  # sorry server


@pytest.mark.parametrize(("network", "forward", "port"),
                         [("nat", "masq", 8080), ("direct", "route", 80), ("tunnel", "tunnel", 80)])
def test_forwarding_per_network(network, forward, port):
    cfg = config(web(server("a", "10.0.1.1", port=8080)), network=network)
    table = desired_table(cfg, {("web", "a"): UP}, {})
    assert table[WEB].dests == {DestKey("10.0.1.1", port): DestSpec(1, forward)}


# ---------------------------------------------------------------- health and admin


def test_unknown_and_down_are_not_serving():
    cfg = config(TWO)
    assert dests(cfg) == {}  # nothing checked yet
    assert dests(cfg, {("web", "a"): UP, ("web", "b"): Health("unknown")}) == {
        DestKey("10.0.1.1", 80): 3}
    assert dests(cfg, {("web", "a"): DOWN, ("web", "b"): UP}) == {DestKey("10.0.1.2", 80): 2}


def test_quiesce_keeps_down_and_unknown_servers_at_weight_zero():
    cfg = config(web(*TWO["servers"], quiesce_server=True))
    assert dests(cfg, {("web", "a"): DOWN}) == {DestKey("10.0.1.1", 80): 0,
                                                 DestKey("10.0.1.2", 80): 0}
    assert dests(cfg, {("web", "a"): UP}) == {DestKey("10.0.1.1", 80): 3,
                                               DestKey("10.0.1.2", 80): 0}


def test_dynamic_weight_overrides_configured_and_is_clamped():
    cfg = config(TWO)
    health = {("web", "a"): Health("up", weight=17), ("web", "b"): Health("up", weight=10**6)}
    assert dests(cfg, health) == {DestKey("10.0.1.1", 80): 17, DestKey("10.0.1.2", 80): 65535}


def test_inactive_servers_are_never_programmed():
    cfg = config(web(server("a", "10.0.1.1"), server("b", "10.0.1.2", active=False),
                     quiesce_server=True))
    assert dests(cfg, both_up(), {("web", "b"): "drain"}) == {DestKey("10.0.1.1", 80): 1}


def test_drain_is_weight_zero_whatever_the_health():
    cfg = config(TWO)
    admin = {("web", "a"): "drain", ("web", "b"): "drain"}
    assert dests(cfg, {("web", "a"): UP, ("web", "b"): DOWN}, admin) == {
        DestKey("10.0.1.1", 80): 0, DestKey("10.0.1.2", 80): 0}


def test_disable_removes_even_when_up_or_quiesced():
    cfg = config(web(*TWO["servers"], quiesce_server=True))
    assert dests(cfg, both_up(), {("web", "a"): "disable"}) == {DestKey("10.0.1.2", 80): 2}
    assert dests(cfg, {}, {("web", "a"): "disable"}) == {DestKey("10.0.1.2", 80): 0}


def test_bad_admin_state_and_health_are_clear_errors():
    with pytest.raises(ValueError, match="web/a must be drain or disable, not 'off'"):
        desired_table(config(TWO), both_up(), {("web", "a"): "off"})
    with pytest.raises(ValueError, match="up, down or unknown"):
        Health("sick")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer or None"):
        Health("up", weight=1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- sorry server and merging


def test_sorry_server_only_when_nothing_serves():
    cfg = config(web(*TWO["servers"], sorry_server="10.9.9.9", port=8000))
    key = ServiceKey("tcp", "10.0.0.100", 8000)
    assert dests(cfg, both_up(), key=key) == {DestKey("10.0.1.1", 8000): 3,
                                              DestKey("10.0.1.2", 8000): 2}
    assert dests(cfg, {}, key=key) == {DestKey("10.9.9.9", 8000): 1}
    assert dests(cfg, {("web", "a"): Health("up", weight=0)}, key=key) == {
        DestKey("10.0.1.1", 8000): 0, DestKey("10.9.9.9", 8000): 1}  # weight 0 serves nobody
    assert dests(cfg, {("web", "b"): UP}, key=key) == {DestKey("10.0.1.2", 8000): 2}


def test_sorry_server_beside_quiesced_and_drained_servers():
    cfg = config(web(*TWO["servers"], sorry_server="10.9.9.9", quiesce_server=True))
    table = desired_table(cfg, {("web", "a"): DOWN}, {("web", "b"): "drain"})
    assert table[WEB].dests == {DestKey("10.0.1.1", 80): DestSpec(0), DestKey("10.0.1.2", 80):
                                DestSpec(0), DestKey("10.9.9.9", 80): DestSpec(1)}


def test_sorry_server_when_every_server_is_inactive():
    cfg = config(web(server("a", "10.0.1.1", active=False), sorry_server="10.9.9.9"))
    assert dests(cfg, {("web", "a"): UP}) == {DestKey("10.9.9.9", 80): 1}


def test_servers_at_the_same_address_port_merge_by_summing_weights():
    same = web(server("a", "10.0.1.1", weight=3), server("b", "10.0.1.1", weight=2, port=81))
    cfg = config(same, network="direct")  # direct routing: both on the virtual's port
    assert dests(cfg, both_up()) == {DestKey("10.0.1.1", 80): 5}
    assert dests(cfg, {("web", "a"): UP, ("web", "b"): DOWN}) == {DestKey("10.0.1.1", 80): 3}
    assert dests(cfg, {("web", "b"): UP}, {("web", "b"): "drain"}) == {DestKey("10.0.1.1", 80): 0}
    assert dests(cfg, {("web", "a"): Health("up", weight=65535), ("web", "b"): UP}) == {
        DestKey("10.0.1.1", 80): 65535}
    swapped = config(web(*reversed(same["servers"])), network="direct")
    assert desired_table(swapped, both_up(), {}) == desired_table(cfg, both_up(), {})


# ---------------------------------------------------------------- globals


def test_timeouts():
    assert timeouts(config()) == (None, None, None)
    assert timeouts(config(tcp_timeout=900, udp_timeout=30)) == (900, None, 30)
    assert timeouts(config(tcp_timeout=900, service="fos")) == (None, None, None)


def test_sync_daemon_master_on_active_backup_elsewhere():
    cfg = config(syncdaemon=True, syncd_iface="eth1:3", syncd_id=9)
    assert sync_daemon(cfg, True) == ("master", "eth1", 9)
    assert sync_daemon(cfg, False) == ("backup", "eth1", 9)
    assert sync_daemon(config(), True) == (None, "eth0", 0)


def test_midstream_protocols_of_active_stateless_virtuals_only():
    udp = web(name="dns", address="10.0.0.53 eth0:2", protocol="udp", scheduler="mh")
    assert midstream_protocols(config(TWO)) == frozenset()  # wlc: nothing to take up
    assert midstream_protocols(config(web(scheduler="mh"))) == {"tcp"}
    assert midstream_protocols(config(web(scheduler="sh"), udp)) == {"tcp", "udp"}
    assert midstream_protocols(config(web(scheduler="mh", active=False))) == frozenset()
    assert midstream_protocols(config(web(scheduler="mh"), service="fos")) == frozenset()


def test_backends_name_the_sysctls_a_new_active_needs():
    from agent.dataplane.ipvs.backend import IpvsBackend
    from agent.dataplane.nft.backend import NftBackend

    ipvs = IpvsBackend()
    try:
        assert ipvs.midstream_sysctls({"tcp", "udp"}) == {"net.ipv4.vs.sloppy_tcp": "1"}
        assert ipvs.midstream_sysctls({"sctp"}) == {"net.ipv4.vs.sloppy_sctp": "1"}
        assert ipvs.midstream_sysctls({"udp"}) == {}  # IPVS schedules any UDP packet
    finally:
        ipvs.close()
    nft = NftBackend(compact_delay=None)
    try:
        assert nft.midstream_sysctls({"tcp"}) == {"net.netfilter.nf_conntrack_tcp_loose": "1"}
        assert nft.midstream_sysctls({"udp"}) == {}
    finally:
        nft.close()


def test_sync_refresh_is_a_quarter_of_the_warmup():
    """The refresh period bounds how long a returning router waits for each connection."""
    assert sync_refresh(config()) is None  # no sync daemon
    assert sync_refresh(config(syncdaemon=True)) == 3  # sync_warmup 10
    assert sync_refresh(config(syncdaemon=True, sync_warmup=6)) == 2
    assert sync_refresh(config(syncdaemon=True, sync_warmup=1)) == 1  # at least a second
    assert sync_refresh(config(syncdaemon=True, service="fos")) is None
    # What it promises: a connection with a packet at least every 4 s is on a new backup
    # within the default warm-up, flush delay included.
    assert sync_refresh(config(syncdaemon=True)) + 4 + SYNC_FLUSH <= 10


# ---------------------------------------------------------------- property

SERVERS = st.lists(
    st.tuples(st.integers(1, 6), st.booleans(), st.integers(0, 65535),
              st.none() | st.integers(1, 3)),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(
    servers=SERVERS,
    states=st.lists(st.sampled_from(["up", "down", "unknown", None]), min_size=8, max_size=8),
    dyn=st.lists(st.none() | st.integers(-10, 10**6), min_size=8, max_size=8),
    admins=st.lists(st.sampled_from([None, "drain", "disable"]), min_size=8, max_size=8),
    quiesce=st.booleans(),
    sorry=st.booleans(),
    network=st.sampled_from(["nat", "direct", "tunnel"]),
)
def test_never_inactive_or_disabled_and_weights_in_range(
    servers, states, dyn, admins, quiesce, sorry, network
):
    blocks = [server(f"s{i}", f"10.0.1.{host}", active=active, weight=weight,
                     **({"port": 8000 + port} if port else {}))
              for i, (host, active, weight, port) in enumerate(servers)]
    cfg = config(web(*blocks, quiesce_server=quiesce,
                     **({"sorry_server": "10.9.9.9"} if sorry else {})), network=network)
    health = {("web", f"s{i}"): Health(s, weight=dyn[i]) for i, s in enumerate(states) if s}
    admin = {("web", f"s{i}"): a for i, a in enumerate(admins) if a}
    got = desired_table(cfg, health, admin)[WEB].dests
    allowed = {str(s.address) for s in cfg.virtuals[0].servers
               if s.active and admin.get(("web", s.name)) != "disable"}
    allowed |= {"10.9.9.9"} if sorry else set()
    assert {d.address for d in got} <= allowed
    assert all(0 <= spec.weight <= 65535 for spec in got.values())
    if sorry:
        assert any(spec.weight > 0 for spec in got.values())
