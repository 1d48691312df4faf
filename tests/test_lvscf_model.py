"""The config model: JSON round trip, effective routers, check(), config_from_json()."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, ip_address

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from cluster.config_checks import check
from cluster.model import (
    PIRANHA_DEFAULTS,
    AddrDev,
    ConfigError,
    LvsConfig,
    Problem,
    Router,
    Server,
    Virtual,
    config_from_json,
)


def web(name: str = "web", ip: str = "10.0.0.100", **kw: object) -> Virtual:
    servers = (Server(name="a", address="10.0.1.1"), Server(name="b", address="10.0.1.2", port=81))
    return Virtual(name=name, address=AddrDev(ip=ip, device="eth0:1"), servers=servers, **kw)


def test_json_dump_is_readable_and_round_trips() -> None:
    cfg = LvsConfig(primary="10.0.0.2", backup="10.0.0.3", keepalive=0.5,
                    nat_router="192.168.1.254 eth1:1", virtuals=(web(),))
    data = cfg.model_dump(mode="json")
    text = json.dumps(data)  # plain JSON types only
    assert data["primary"] == "10.0.0.2"
    assert data["nat_router"] == {"ip": "192.168.1.254", "device": "eth1:1"}
    assert data["virtuals"][0]["servers"][1] == {
        "name": "b", "address": "10.0.1.2", "active": True, "weight": 1, "port": 81}
    assert LvsConfig.model_validate(json.loads(text)) == cfg
    assert config_from_json(text) == cfg
    assert config_from_json(json.loads(text)) == cfg


def test_addrdev_parts_and_text_form() -> None:
    a = AddrDev.model_validate("10.0.0.1 eth0:1")
    assert (a.ip, a.device, a.interface, a.label, str(a)) == (
        IPv4Address("10.0.0.1"), "eth0:1", "eth0", "eth0:1", "10.0.0.1 eth0:1")
    bare = AddrDev.model_validate("fd00::1")
    assert (bare.interface, bare.label, str(bare)) == (None, None, "fd00::1")
    with pytest.raises(ValidationError):
        AddrDev.model_validate("10.0.0.1 eth0:1 x")
    with pytest.raises(ValidationError):
        AddrDev(ip="10.0.0.1", device="averyveryverylongname:1")


def test_models_are_frozen_and_strict() -> None:
    cfg = LvsConfig()
    with pytest.raises(ValidationError):
        cfg.serial_no = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        LvsConfig.model_validate({"bogus": 1})
    with pytest.raises(ValidationError):
        LvsConfig.model_validate({"heartbeat": "yes"})
    with pytest.raises(ValidationError):
        LvsConfig.model_validate({"serial_no": "3"})


def test_effective_routers_from_two_router_globals() -> None:
    assert LvsConfig().effective_routers() == ()
    solo = LvsConfig(primary="10.0.0.2", primary_private="192.168.0.2")
    assert solo.effective_routers() == (
        Router(name="primary", address="10.0.0.2", private="192.168.0.2", priority=200),)
    pair = LvsConfig(primary="10.0.0.2", backup="10.0.0.3", backup_private="192.168.0.3")
    primary, backup = pair.effective_routers()
    assert (primary.priority, backup.priority) == (200, 100)
    assert (backup.name, backup.address, backup.private, backup.active) == (
        "backup", ip_address("10.0.0.3"), ip_address("192.168.0.3"), False)
    assert LvsConfig(primary="10.0.0.2", backup="10.0.0.3",
                     backup_active=True).effective_routers()[1].active


def test_effective_routers_prefers_router_blocks() -> None:
    routers = (Router(name="x", address="10.0.0.5", priority=7),
               Router(name="y", address="10.0.0.6"))
    assert LvsConfig(routers=routers).effective_routers() == routers
    assert routers[1].priority == 100 and routers[1].active


def test_virtual_lookup_and_effective_port() -> None:
    cfg = LvsConfig(virtuals=(web(), web("other", "10.0.0.101")))
    v = cfg.virtual("other")
    assert v.name == "other"
    assert [v.effective_port(s) for s in v.servers] == [80, 81]
    with pytest.raises(KeyError):
        cfg.virtual("missing")


def test_piranha_defaults_documented() -> None:
    assert PIRANHA_DEFAULTS == {"keepalive": 2.0, "deadtime": 5.0}
    assert (LvsConfig().keepalive, LvsConfig().deadtime) == (None, None)


def test_check_paths_for_duplicates() -> None:
    cfg = LvsConfig(virtuals=(web(), web(ip="10.0.0.101"), web("x")))
    problems = check(cfg)
    assert Problem(("virtuals", 1, "name"), "duplicate virtual name 'web'",
                   ("virtuals", 0, "name")) in problems
    (svc,) = [p for p in problems if p.path == ("virtuals", 2, "address")]
    assert svc.other == ("virtuals", 0, "address") and "tcp 10.0.0.100:80" in svc.message


def test_check_tcp_and_udp_on_same_address_port_are_distinct() -> None:
    cfg = LvsConfig(virtuals=(web(), web("dns", protocol="udp")))
    assert check(cfg) == []


def test_check_server_duplicates_inside_one_virtual_only() -> None:
    dup = Virtual(name="v", address="10.0.0.1", servers=(
        Server(name="s", address="10.0.1.1"), Server(name="s", address="10.0.1.2")))
    assert [p.path for p in check(LvsConfig(virtuals=(dup,)))] == [
        ("virtuals", 0, "servers", 1, "name")]
    assert check(LvsConfig(virtuals=(web(), web("w2", "10.0.0.9")))) == []


def test_config_from_json_lists_every_problem() -> None:
    data = {
        "keepalive": 3, "deadtime": 1, "bogus": True,
        "virtuals": [{"name": "v", "address": "10.0.0.1",
                      "servers": [{"name": "s", "address": "10.0.1.1", "weight": -1}]}],
    }
    with pytest.raises(ConfigError) as info:
        config_from_json(data)
    lines = str(info.value).splitlines()
    assert "config: virtuals.0.servers.0.weight: 'weight' must be at least 0, got -1" in lines
    assert "config: bogus: unknown directive 'bogus'" in lines
    data.pop("bogus")
    data["virtuals"][0]["servers"][0]["weight"] = 1  # type: ignore[index]
    with pytest.raises(ConfigError) as info:
        config_from_json(data)
    assert str(info.value) == ("config: deadtime: timing: deadtime (1s) must be at least "
                               "twice keepalive (3s)")
    assert isinstance(info.value.problems[0], Problem)


def test_config_from_json_rejects_bad_json_text() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_json("{not json")
    assert str(info.value).startswith("config: ")


def test_directive_tables_are_derived_from_model_fields() -> None:
    from cluster.lvscf.directives import all_blocks, blocks_allowing, build_spec
    from cluster.model import Flag, Seconds

    class Extended(Server):
        fast_eviction: Flag = False
        lease_ttl: Seconds | None = None

    spec = build_spec("server", Extended)
    assert spec.directives["fast_eviction"].kind == "bool"
    assert spec.directives["lease_ttl"].kind == "float"
    assert spec.directives["lease_ttl"].default is None
    assert set(all_blocks()) == {"global", "router", "virtual", "server", "failover"}
    assert set(all_blocks()["global"].directives) == set(LvsConfig.model_fields) - {
        "routers", "virtuals", "failovers"}
    assert sorted(blocks_allowing("port")) == ["failover", "server", "virtual"]


@given(st.one_of(st.ip_addresses().map(str),
                 st.text(alphabet="0123456789.:abcdefABCDEFx% -", max_size=24)))
@example("01.2.3.4")
@example("1.2.3.04")
@example("1.2.3")
@example("256.1.1.1")
@example(" 1.2.3.4")
@example("::ffff:1.2.3.4")
@example("\u0661.2.3.4")
def test_the_fast_ipv4_parse_agrees_with_ipaddress(text):
    """parse_ip takes dotted IPv4 through inet_pton: the same addresses as ipaddress, and
    the same refusals (with ipaddress's own message)."""
    import ipaddress

    from cluster.model import parse_ip

    try:
        want = ipaddress.ip_address(text)
    except ValueError as exc:
        with pytest.raises(ValueError) as got:
            parse_ip(text)
        assert str(got.value) == str(exc)
    else:
        assert parse_ip(text) == want and type(parse_ip(text)) is type(want)
