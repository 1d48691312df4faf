"""Properties: parse(write(m)) == m for generated valid models; parse never raises."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cluster.config_checks import check
from cluster.lvscf import parse, write
from cluster.model import (
    SCHEDULERS,
    AddrDev,
    Failover,
    LvsConfig,
    Router,
    Server,
    Virtual,
    config_from_json,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXAMPLES = sorted((Path(__file__).parent.parent / "deploy" / "examples").glob("*.cf"))


def _usable(a: Any) -> bool:
    return not (a.is_unspecified or a.is_multicast)


ipv4 = st.ip_addresses(v=4).filter(_usable)
ipv6 = st.ip_addresses(v=6).filter(_usable).filter(lambda a: a.ipv4_mapped is None)
names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True)
devices = st.none() | st.from_regex(r"(eth|bond|ens)[0-9]{1,2}(:[0-9]{1,3})?", fullmatch=True)
texts = st.text(st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from(
    "\t\n\r\\\"'#{}= "), max_size=25)
words = st.from_regex(r"[A-Za-z0-9_.:/+@-]{1,12}", fullmatch=True)
seconds = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
delays = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
netmasks = st.integers(0, 32).map(lambda n: IPv4Address((0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF))
ports = st.integers(1, 65535)
opt = st.none


def servers(family: st.SearchStrategy[Any], vip: Any) -> st.SearchStrategy[Server]:
    return st.builds(Server, name=names, address=family.filter(lambda a: a != vip),
                     active=st.booleans(), weight=st.integers(0, 65535), port=opt() | ports)


@st.composite
def virtuals(draw: Any) -> Virtual:
    family = draw(st.sampled_from([ipv4, ipv6]))
    vip = draw(family)
    v4 = vip.version == 4
    persistent = draw(st.sampled_from([0, 0, 300]) | st.integers(0, 10**6))
    scheduler = draw(st.sampled_from(SCHEDULERS))
    flags = st.sampled_from(["mh-fallback", "mh-port", "mh-fallback,mh-port"])
    return Virtual(
        name=draw(names), address=AddrDev(ip=vip, device=draw(devices)),
        vip_nmask=draw(opt() | netmasks) if v4 else None, active=draw(st.booleans()),
        sorry_server=draw(opt() | family.filter(lambda a: a != vip)),
        fwmark=draw(opt() | st.integers(1, 2**32 - 1)),
        protocol=draw(st.sampled_from(["tcp", "udp"])),
        port=draw(ports), scheduler=scheduler, persistent=persistent,
        scheduler_flags=draw(opt() | flags) if scheduler == "mh" else None,
        pmask=draw(opt() | netmasks) if v4 and persistent else None,
        send=draw(opt() | texts), expect=draw(opt() | texts), use_regex=draw(st.booleans()),
        send_program=draw(opt() | texts), timeout=draw(seconds), reentry=draw(delays),
        load_monitor=draw(opt() | st.sampled_from(["uptime", "rup", "ruptime", "none"])),
        quiesce_server=draw(st.booleans()), client_monitor=draw(opt() | texts),
        servers=tuple(draw(st.lists(servers(family, vip), max_size=3, unique_by=lambda s: s.name))),
    )


failovers = st.builds(
    Failover, name=names, address=st.builds(AddrDev, ip=ipv4, device=devices),
    vip_nmask=opt() | netmasks, active=st.booleans(), port=ports, send=opt() | texts,
    expect=opt() | texts, timeout=seconds, reentry=delays, start_cmd=texts, stop_cmd=texts)
routers = st.builds(Router, name=names, address=ipv4 | ipv6, private=opt() | ipv4,
                    priority=st.integers(0, 65535), active=st.booleans())


@st.composite
def configs(draw: Any) -> LvsConfig:
    mode = draw(st.sampled_from(["none", "legacy", "routers"]))
    legacy: dict[str, Any] = {}
    if mode == "legacy":
        legacy = {"primary": draw(ipv4), "primary_private": draw(opt() | ipv4),
                  "backup": draw(opt() | ipv4), "backup_private": draw(opt() | ipv4)}
        legacy["backup_active"] = legacy["backup"] is not None and draw(st.booleans())
    nat_router = draw(opt() | st.builds(AddrDev, ip=ipv4, device=devices))
    keepalive = draw(opt() | seconds)
    deadtime = draw(opt() | seconds.map(lambda d: d + (keepalive or 0)))
    cfg = LvsConfig(
        **legacy, serial_no=draw(st.integers(0, 2**40)),
        service=draw(st.sampled_from(["lvs", "fos"])),
        primary_shared=draw(opt() | texts), backup_shared=draw(opt() | texts),
        heartbeat=draw(st.booleans()), heartbeat_port=draw(ports),
        keepalive=keepalive, deadtime=deadtime,
        network=draw(st.sampled_from(["nat", "direct", "tunnel"])), nat_router=nat_router,
        nat_nmask=draw(opt() | netmasks) if nat_router and nat_router.ip.version == 4 else None,
        reservation_conflict_action=draw(opt() | st.sampled_from(["nothing", "preempt"])),
        debug_level=draw(words), rsh_command=draw(st.sampled_from(["rsh", "ssh"])),
        ipvsadm=draw(texts), monitor_links=draw(st.booleans()),
        active_cmd=draw(opt() | texts), inactive_cmd=draw(opt() | texts),
        hard_shutdown=draw(st.booleans()), syncdaemon=draw(st.booleans()),
        syncd_iface=draw(st.from_regex(r"eth[0-9]{1,2}", fullmatch=True)),
        syncd_id=draw(st.integers(0, 255)), tcp_timeout=draw(st.integers(0, 10**6)),
        tcpfin_timeout=draw(st.integers(0, 10**6)), udp_timeout=draw(st.integers(0, 10**6)),
        routers=tuple(draw(st.lists(routers, max_size=3, unique_by=(
            lambda r: r.name, lambda r: r.address)))) if mode == "routers" else (),
        virtuals=tuple(draw(st.lists(virtuals(), max_size=3, unique_by=lambda v: v.name))),
        failovers=tuple(draw(st.lists(failovers, max_size=2, unique_by=lambda f: f.name))),
    )
    assume(check(cfg) == [])
    return cfg


@FAST
@given(configs())
def test_write_then_parse_gives_the_same_model(cfg: LvsConfig) -> None:
    text = write(cfg)
    result = parse(text, "gen.cf")
    assert result.errors == [] and result.warnings == [], (text, [str(e) for e in result.errors])
    assert result.config == cfg
    assert write(result.config) == text


@settings(max_examples=60, deadline=None)
@given(configs())
def test_json_round_trip(cfg: LvsConfig) -> None:
    data = json.loads(json.dumps(cfg.model_dump(mode="json")))
    assert LvsConfig.model_validate(data) == cfg
    assert config_from_json(data) == cfg


def _assert_sane(text: str) -> None:
    result = parse(text, "fuzz.cf")
    assert result.config is None or isinstance(result.config, LvsConfig)
    assert (result.config is None) == bool(result.errors)
    for problem in result.errors + result.warnings:
        assert "internal parser error" not in problem.message
        assert str(problem).startswith(f"fuzz.cf:{problem.line}: ")
        assert 1 <= problem.line <= text.count("\n") + text.count("\r") + 1


PIECES = ["virtual v {", "server s {", "router r {", "failover f {", "}", "{", "#",
          "address = 10.0.0.1 eth0:1", "address = 10.0.1.2", "port = http", "weight = 7",
          "send = \"a\\r\\n\"", "expect = 'x", "scheduler = rr", "active = 1", "keepalive = .5",
          "= 3", "pmask = 255.255.0.0", "primary = ::1", "fwmark = 4", "virtual", "\"", "\\"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_never_raises_on_arbitrary_text(text: str) -> None:
    _assert_sane(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=8), max_size=25),
       st.sampled_from(["\n", "\r\n", "\r", " ", "\t"]))
def test_parse_never_raises_on_config_like_text(pieces: list[str], sep: str) -> None:
    _assert_sane(sep.join(pieces))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXAMPLES), st.lists(st.tuples(
    st.sampled_from(["delete", "insert", "dup_line", "drop_line"]),
    st.floats(0, 1, exclude_max=True), st.sampled_from([*"{}#=\"'\\ \n\t0x.:", "\x00"])),
    min_size=1, max_size=4))
def test_parse_never_raises_on_mutated_examples(path: Path, edits: list[Any]) -> None:
    text = path.read_text()
    for op, where, ch in edits:
        i = int(where * len(text))
        if op == "delete":
            text = text[:i] + text[i + 1:]
        elif op == "insert":
            text = text[:i] + ch + text[i:]
        else:
            lines = text.split("\n")
            j = int(where * len(lines))
            lines[j:j + 1] = [lines[j]] * 2 if op == "dup_line" else []
            text = "\n".join(lines)
    _assert_sane(text)
