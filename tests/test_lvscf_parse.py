"""lvs.cf reading: every directive, the syntax quirks, service names, the examples."""

from __future__ import annotations

import re
from ipaddress import ip_address
from pathlib import Path

import pytest

from cluster.lvscf import ConfigError, load, parse, parse_file, write
from cluster.lvscf.directives import all_blocks
from cluster.lvscf.services import lookup_service
from cluster.model import AddrDev, LvsConfig

EXAMPLES = sorted((Path(__file__).parent.parent / "deploy" / "examples").glob("*.cf"))

FULL = r"""
# every directive once
serial_no = 42
service = lvs
primary = 10.0.0.2
primary_private = 192.168.0.2
primary_shared = /dev/sdb1
backup = 10.0.0.3
backup_private = 192.168.0.3
backup_shared = /dev/sdc1
backup_active = 1
heartbeat = 1
heartbeat_port = 1539
keepalive = 0.25
deadtime = 2.5
network = tunnel
nat_router = 192.168.1.254 eth1:1
nat_nmask = 255.255.255.0
reservation_conflict_action = preempt
debug_level = 3
rsh_command = ssh
ipvsadm = /usr/sbin/ipvsadm
monitor_links = 1
active_cmd = /usr/local/bin/became-active --now
inactive_cmd = "/usr/local/bin/became-inactive 'x'"
hard_shutdown = 0
syncdaemon = 1
syncd_iface = eth2
syncd_id = 7
tcp_timeout = 900
tcpfin_timeout = 120
udp_timeout = 300
lease_ttl = 3
ack_window = 2.5
safety_margin = 0.2
hold_down = 7.5
sync_warmup = 12
fast_eviction = 1
garp_count = 3
garp_interval = 0.1
garp_delay = 4
garp_refresh = 30
health_policy = majority
full_nat = 1
resume_connections = 0

virtual web {
    address = 10.0.0.100 eth0:1
    vip_nmask = 255.255.255.0
    active = 0
    sorry_server = 10.0.0.50
    fwmark = 80
    protocol = udp
    port = https
    scheduler = mh
    scheduler_flags = mh-port
    persistent = 600
    pmask = 255.255.255.0
    send = "GET / HTTP/1.0\r\n\r\n"
    expect = 'HTTP/1.\d 200'
    use_regex = 1
    send_program = /usr/local/bin/probe %h %p
    timeout = 2.5
    reentry = 0.75
    load_monitor = ruptime
    quiesce_server = 1
    client_monitor = /usr/sbin/nanny
    check = https
    check_port = 8443
    check_path = /healthz
    check_host = www.example.com
    check_status = 200-299,301
    check_body = "ok|fine"
    check_program = /usr/local/bin/check %h %p
    dns_name = example.com
    dns_type = A
    interval = 4
    failures = 3
    server one {
        address = 10.0.1.1
        active = 0
        weight = 65535
        port = 8443
    }
}

failover ftp {
    address = 10.0.0.101 eth0:2
    vip_nmask = 255.255.255.255
    active = 1
    port = ftp
    send = "QUIT\n"
    expect = "220"
    timeout = 3
    reentry = 30
    start_cmd = /etc/init.d/vsftpd start
    stop_cmd = /etc/init.d/vsftpd stop
}
"""

ROUTERS = """
router r1 {
    address = 10.0.0.2
    private = 192.168.0.2
    priority = 250
    active = 0
}
"""


def ok(text: str) -> LvsConfig:
    result = parse(text, "t.cf")
    assert result.errors == [], [str(e) for e in result.errors]
    assert result.config is not None
    return result.config


def test_full_file_covers_every_directive_of_the_model() -> None:
    text = FULL + ROUTERS
    for keyword, spec in all_blocks().items():
        for name in spec.directives:
            assert re.search(rf"^\s*{name}\s*=", text, re.M), f"{keyword}.{name} not in FULL"
    assert parse(text).config is None  # router blocks may not be mixed with primary/backup


def test_full_file_values() -> None:
    cfg = ok(FULL)
    assert (cfg.serial_no, cfg.service, cfg.network) == (42, "lvs", "tunnel")
    assert cfg.primary == ip_address("10.0.0.2") and cfg.backup_private == ip_address("192.168.0.3")
    assert (cfg.primary_shared, cfg.backup_shared) == ("/dev/sdb1", "/dev/sdc1")
    assert cfg.backup_active and cfg.heartbeat and cfg.monitor_links and cfg.syncdaemon
    assert not cfg.hard_shutdown
    assert (cfg.heartbeat_port, cfg.keepalive, cfg.deadtime) == (1539, 0.25, 2.5)
    assert cfg.nat_router == AddrDev(ip="192.168.1.254", device="eth1:1")
    assert str(cfg.nat_nmask) == "255.255.255.0"
    assert cfg.reservation_conflict_action == "preempt" and cfg.rsh_command == "ssh"
    assert (cfg.debug_level, cfg.ipvsadm) == ("3", "/usr/sbin/ipvsadm")
    assert cfg.active_cmd == "/usr/local/bin/became-active --now"
    assert cfg.inactive_cmd == "/usr/local/bin/became-inactive 'x'"
    assert (cfg.syncd_iface, cfg.syncd_id) == ("eth2", 7)
    assert (cfg.tcp_timeout, cfg.tcpfin_timeout, cfg.udp_timeout) == (900, 120, 300)
    assert (cfg.lease_ttl, cfg.ack_window, cfg.hold_down, cfg.fast_eviction) == (3, 2.5, 7.5, True)
    assert cfg.safety_margin == 0.2
    assert cfg.sync_warmup == 12
    assert (cfg.garp_count, cfg.garp_interval, cfg.garp_delay, cfg.garp_refresh) == (3, 0.1, 4, 30)

    v = cfg.virtual("web")
    assert v.address.interface == "eth0" and v.address.label == "eth0:1"
    assert (v.active, v.fwmark, v.protocol, v.port, v.scheduler) == (False, 80, "udp", 443, "mh")
    assert v.scheduler_flags == "mh-port"
    assert (str(v.vip_nmask), str(v.pmask), v.persistent) == ("255.255.255.0",) * 2 + (600,)
    assert v.sorry_server == ip_address("10.0.0.50")
    assert v.send == "GET / HTTP/1.0\r\n\r\n"
    assert v.expect == "HTTP/1.\\d 200"  # unknown escapes are kept as written
    assert v.use_regex and v.quiesce_server
    assert v.send_program == "/usr/local/bin/probe %h %p"
    assert (v.timeout, v.reentry, v.load_monitor) == (2.5, 0.75, "ruptime")
    assert v.client_monitor == "/usr/sbin/nanny"
    assert (v.check, v.check_port, v.check_path, v.check_host) == (
        "https", 8443, "/healthz", "www.example.com")
    assert (v.check_status, v.check_body, v.check_program) == (
        "200-299,301", "ok|fine", "/usr/local/bin/check %h %p")
    assert (v.dns_name, v.dns_type, v.interval, v.failures) == ("example.com", "A", 4, 3)
    assert cfg.health_policy == "majority" and cfg.full_nat and not cfg.resume_connections
    (s,) = v.servers
    assert (s.name, s.active, s.weight, s.port) == ("one", False, 65535, 8443)
    assert v.effective_port(s) == 8443

    (f,) = cfg.failovers
    assert (f.name, f.port, f.send, f.expect, f.timeout, f.reentry) == (
        "ftp", 21, "QUIT\n", "220", 3.0, 30.0)
    assert (f.start_cmd, f.stop_cmd) == ("/etc/init.d/vsftpd start", "/etc/init.d/vsftpd stop")
    assert ok(write(cfg)) == cfg


def test_router_blocks() -> None:
    cfg = ok(ROUTERS)
    (r,) = cfg.routers
    assert (r.name, str(r.address), str(r.private), r.priority, r.active) == (
        "r1", "10.0.0.2", "192.168.0.2", 250, False)
    assert cfg.effective_routers() == cfg.routers


def test_defaults_when_not_given() -> None:
    cfg = ok("virtual v {\n address = 10.0.0.1\n server s {\n address = 10.0.0.2\n }\n}\n")
    v = cfg.virtuals[0]
    assert (cfg.service, cfg.network, cfg.heartbeat_port, cfg.keepalive, cfg.deadtime) == (
        "lvs", "nat", 539, None, None)
    assert (v.protocol, v.port, v.scheduler, v.timeout, v.reentry, v.active) == (
        "tcp", 80, "wlc", 10, 180, True)
    assert v.address.device is None and v.address.interface is None
    s = v.servers[0]
    assert (s.weight, s.port, s.active) == (1, None, True)
    assert v.effective_port(s) == 80


def test_crlf_tabs_comments_and_brace_on_next_line() -> None:
    text = ("serial_no\t=\t5   # trailing comment\r\n"
            "\t# whole-line comment\r\n"
            "virtual  web\r\n"
            "{\r\n"
            "\t  address = 10.0.0.1   eth0:3 # the VIP\r\n"
            " \tport=8080#no spaces\r\n"
            "\tsend = \"a # not a comment\" # a comment\r\n"
            "}\r\n")
    cfg = ok(text)
    v = cfg.virtuals[0]
    assert cfg.serial_no == 5
    assert (v.address.device, v.port, v.send) == ("eth0:3", 8080, "a # not a comment")


def test_old_mac_line_ends_count_lines() -> None:
    result = parse("serial_no = 1\rbogus = 2\r", "m.cf")
    assert [str(e) for e in result.errors] == ["m.cf:2: unknown directive 'bogus'"]


@pytest.mark.parametrize(("written", "value"), [
    (r'"GET /\r\n"', "GET /\r\n"),
    (r"'it\'s'", "it's"),
    (r'"say \"hi\""', 'say "hi"'),
    (r'"tab\there"', "tab\there"),
    (r'"back\\slash"', "back\\slash"),
    (r'"single \' in double"', "single ' in double"),
    (r"GET /\r\n", "GET /\r\n"),  # send/expect unescape also when unquoted
    ('""', ""),
])
def test_send_quoting_and_escapes(written: str, value: str) -> None:
    cfg = ok(f"virtual v {{\n address = 10.0.0.1\n send = {written}\n}}\n")
    assert cfg.virtuals[0].send == value


def test_unquoted_command_keeps_backslashes_and_quotes_inside() -> None:
    cfg = ok("active_cmd = /bin/x \\n 'a b'\n")
    assert cfg.active_cmd == "/bin/x \\n 'a b'"


def test_repeated_key_warns_naming_both_lines_and_last_wins() -> None:
    result = parse("serial_no = 1\nvirtual v {\n address = 10.0.0.1\n port = 80\n port = 81\n}\n",
                   "r.cf")
    assert result.errors == []
    assert result.config is not None and result.config.virtuals[0].port == 81
    (w,) = result.warnings
    assert w.line == 5 and "line 4" in w.message and "'port'" in w.message
    assert str(w).startswith("r.cf:5: warning:")


@pytest.mark.parametrize(("name", "port"), [
    ("http", 80), ("https", 443), ("ftp", 21), ("ssh", 22), ("smtp", 25), ("domain", 53),
    ("dns", 53), ("pop3", 110), ("imap", 143), ("ldap", 389), ("mysql", 3306),
    ("postgresql", 5432), ("HTTP", 80), ("8080", 8080),
])
def test_port_service_names(name: str, port: int) -> None:
    cfg = ok(f"virtual v {{\n address = 10.0.0.1\n port = {name}\n}}\n")
    assert cfg.virtuals[0].port == port
    assert f"port = {port}" in write(cfg) or port == 80


def test_service_lookup_unknown_and_odd_names() -> None:
    assert lookup_service("no-such-service-xyz") is None
    assert lookup_service("a\x00b") is None
    assert lookup_service("") is None


def test_backup_all_zeros_means_no_backup() -> None:
    cfg = ok("primary = 10.0.0.2\nbackup = 0.0.0.0\n")
    assert cfg.backup is None
    assert [r.name for r in cfg.effective_routers()] == ["primary"]


def test_bom_and_empty_input() -> None:
    assert ok("\ufeffserial_no = 3\n").serial_no == 3
    assert ok("") == LvsConfig()
    assert ok("# only a comment\n\n") == LvsConfig()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_parse_cleanly(path: Path) -> None:
    result = parse_file(path)
    assert result.errors == [] and result.warnings == [], [str(p) for p in result.errors]
    assert result.config is not None and result.config.virtuals
    assert len(result.config.effective_routers()) >= 2
    assert parse(write(result.config)).config == result.config


def test_examples_present() -> None:
    assert {p.name for p in EXAMPLES} >= {"lvs.cf", "direct-routing.cf", "three-routers.cf"}


def test_parse_file_and_load_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope.cf"
    result = parse_file(missing)
    assert result.config is None and len(result.errors) == 1
    assert str(result.errors[0]).startswith(f"{missing}:0: cannot read")

    binary = tmp_path / "bin.cf"
    binary.write_bytes(b"serial_no = 1\n\xff\xfe\n")
    (err,) = parse_file(binary).errors
    assert err.line == 2 and "UTF-8" in err.message

    bad = tmp_path / "bad.cf"
    bad.write_text("serial_no = x\nweight = 1\n")
    with pytest.raises(ConfigError) as info:
        load(bad)
    assert [p.line for p in info.value.problems] == [1, 2]
    assert str(info.value).splitlines()[1] == (
        f"{bad}:2: 'weight' is not allowed in global block; it belongs in server")

    good = tmp_path / "good.cf"
    good.write_text("serial_no = 9\nprimary = 10.0.0.2\n")
    assert load(good).serial_no == 9
    # load() gives a config to run: one that reads well but cannot run is refused too
    idle = tmp_path / "idle.cf"
    idle.write_text("serial_no = 9\n")
    assert parse_file(idle).config is not None
    with pytest.raises(ConfigError, match=r"idle.cf:1: no router can run this config"):
        load(idle)


def test_every_directive_is_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "lvs-cf.md").read_text()
    for keyword, spec in all_blocks().items():
        for name in spec.directives:
            assert f"`{name}`" in doc, f"{keyword}.{name} missing from docs/lvs-cf.md"


def test_scheduler_flags_are_read_as_ipvsadm_writes_them_and_written_canonically() -> None:
    text = ("virtual v {\n    address = 10.0.0.1 eth0:1\n    scheduler = mh\n"
            "    scheduler_flags = mh-port, mh-fallback,mh-port\n}\n")
    result = parse(text, "f.cf")
    assert result.errors == []
    (v,) = result.config.virtuals
    assert v.scheduler_flags == "mh-fallback,mh-port"
    assert v.sched_flags == {"mh-fallback", "mh-port"}
    assert "    scheduler_flags = mh-fallback,mh-port\n" in write(result.config)
    assert parse(write(result.config), "g.cf").config == result.config
