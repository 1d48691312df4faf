"""lvs.cf errors: each kind, reported as FILE:LINE: message, all of them at once."""

from __future__ import annotations

import pytest

from cluster.lvscf import parse

V = "virtual v {{\n    address = 10.0.0.1 eth0:1\n{body}\n}}\n"  # body starts on line 3
S = ("virtual v {{\n    address = 10.0.0.1 eth0:1\n    server s {{\n        address = 10.0.1.1\n"
     "{body}\n    }}\n}}\n")  # body starts on line 5


def errors(text: str) -> list[str]:
    result = parse(text, "e.cf")
    if result.errors:
        assert result.config is None
    return [str(e) for e in result.errors]


def one(text: str) -> str:
    found = errors(text)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(("text", "expected"), [
    ("bogus = 1\n", "e.cf:1: unknown directive 'bogus'"),
    ("wieght = 1\n", "did you mean 'weight'?"),
    ("weight = 1\n", "e.cf:1: 'weight' is not allowed in global block; it belongs in server"),
    (V.format(body="    weight = 2"),
     "e.cf:3: 'weight' is not allowed in virtual block; it belongs in server"),
    (V.format(body="    start_cmd = x"), "it belongs in failover"),
    (V.format(body="    priority = 1"), "it belongs in router"),
    ("primary = 10.0.0.300\n", "e.cf:1: 'primary': bad address '10.0.0.300'"),
    ("primary = lvs1.example.com\n", "bad address 'lvs1.example.com'"),
    (V.format(body="    sorry_server = 1.2.3"), "e.cf:3: 'sorry_server': bad address"),
    ("nat_router = 10.0.0.1 eth0:1 extra\n", "expected 'IP device'"),
    ("nat_router = 10.0.0.1 e/th0\n", "bad device 'e/th0'"),
    (V.format(body="    vip_nmask = 255.0.255.0"), "e.cf:3: 'vip_nmask': bad netmask"),
    (V.format(body="    pmask = 255.255.255"), "bad netmask '255.255.255'"),
    (V.format(body="    port = htp"), "e.cf:3: 'port': bad port 'htp'"),
    (V.format(body="    port = 70000"), "e.cf:3: 'port' must be at most 65535, got 70000"),
    (V.format(body="    port = 0"), "'port' must be at least 1"),
    (V.format(body="    scheduler = fastest"),
     "e.cf:3: bad scheduler 'fastest' (valid: rr, wrr, lc, wlc, lblc, lblcr, dh, sh,"),
    (V.format(body="    protocol = sctp"), "bad protocol 'sctp' (valid: tcp or udp)"),
    (V.format(body="    scheduler = mh\n    scheduler_flags = mh-port,sh-port"),
     "e.cf:4: 'scheduler_flags': unknown scheduler flag 'sh-port' (valid: mh-fallback, mh-port"),
    ("network = bridge\n", "bad network 'bridge' (valid: nat, direct or tunnel)"),
    (S.format(body="        weight = 65536"), "e.cf:5: 'weight' must be at most 65535, got 65536"),
    (S.format(body="        weight = -1"), "'weight' must be at least 0"),
    (S.format(body="        weight = heavy"), "e.cf:5: 'weight': expected a whole number"),
    (S.format(body="        active = yes"), "e.cf:5: 'active': expected 0 or 1, got 'yes'"),
    ("heartbeat = 2\n", "expected 0 or 1, got '2'"),
    ("keepalive = fast\n", "'keepalive': expected a number of seconds"),
    ("keepalive = 0\n", "'keepalive' must be greater than 0"),
    ("keepalive = 1e999\n", "finite"),
    ("syncd_id = 256\n", "'syncd_id' must be at most 255"),
    ("serial_no = 1.5\n", "expected a whole number, got '1.5'"),
    ("active_cmd =\n", "e.cf:1: missing value for 'active_cmd'"),
    ("active_cmd = \"a\x01b\"\n", "control character"),
    (V.format(body='    send = "GET /'), 'e.cf:3: unterminated quote in value of \'send\''),
    (V.format(body="    expect = 'HTTP"), "unterminated quote"),
    (V.format(body='    send = "a" b'), "unexpected text after the closing quote"),
    ("this is not valid\n", "e.cf:1: cannot read 'this is not valid'"),
    ("weight 5\n", "e.cf:1: expected 'weight = 5' (missing '=')"),
    ("virtual {\n}\n", "e.cf:1: block 'virtual' needs a name"),
    ("virtual w/eb {\n address = 10.0.0.1\n}\n", "e.cf:1: bad virtual name 'w/eb'"),
    ("server s {\n address = 10.0.0.1\n}\n",
     "e.cf:1: 'server' block is not allowed in global block; it belongs in virtual"),
    ("frobnicate x {\n a = 1\n}\n", "e.cf:1: unknown block 'frobnicate'"),
    ("virtual = x\n", "e.cf:1: 'virtual' starts a block"),
    ("virtual v {\n}\n", "e.cf:1: virtual 'v' is missing required directive 'address'"),
    ("}\n", "e.cf:1: '}' without an open block"),
    ("{\n", "e.cf:1: unexpected '{'"),
    ("serial_no = 1\nvirtual v {\n address = 10.0.0.1\n",
     "e.cf:2: block 'virtual v' opened here is never closed (missing '}')"),
])
def test_error_kinds(text: str, expected: str) -> None:
    message = one(text)
    assert message.startswith(expected) or expected in message, message


def test_missing_required_directives_are_all_reported() -> None:
    assert errors("failover f {\n address = 10.0.0.1\n}\n") == [
        "e.cf:1: failover 'f' is missing required directive 'start_cmd'",
        "e.cf:1: failover 'f' is missing required directive 'stop_cmd'"]


def test_header_without_brace_is_reported_and_read_as_opened() -> None:
    found = errors("virtual v\nserial_no = 1\n}\n")
    assert "e.cf:1: expected '{' after 'virtual v'" in found
    assert "e.cf:2: 'serial_no' is not allowed in virtual block; it belongs in global" in found


def test_duplicate_virtual_names_cite_both_lines() -> None:
    text = V.format(body="") + "virtual v {\n    address = 10.0.0.2 eth0:2\n}\n"
    assert one(text) == "e.cf:5: duplicate virtual name 'v' (first defined at line 1)"


def test_duplicate_server_names_cite_both_lines_even_in_a_broken_virtual() -> None:
    body = ("    port = nonsense\n    server a {\n        address = 10.0.1.1\n    }\n"
            "    server a {\n        address = 10.0.1.2\n    }")
    found = errors(V.format(body=body))
    assert "e.cf:7: duplicate server name 'a' (first defined at line 4)" in found
    assert any(e.startswith("e.cf:3: 'port'") for e in found)


def test_duplicate_router_and_failover_names() -> None:
    routers = "router r {\n address = 10.0.0.2\n}\nrouter r {\n address = 10.0.0.3\n}\n"
    assert one(routers) == "e.cf:4: duplicate router name 'r' (first defined at line 1)"
    fo = "failover f {\n address = 10.0.0.9\n start_cmd = a\n stop_cmd = b\n}\n"
    assert one(fo + fo) == "e.cf:6: duplicate failover name 'f' (first defined at line 1)"


def test_same_address_and_port_is_an_error_but_other_protocol_is_not() -> None:
    a = "virtual a {\n address = 10.0.0.1 eth0:1\n port = 80\n}\n"
    b = "virtual b {\n address = 10.0.0.1 eth0:1\n port = http\n}\n"
    assert one(a + b) == ("e.cf:6: virtual 'b' uses the same service (tcp 10.0.0.1:80) as an "
                          "earlier one (first defined at line 2)")
    udp = "virtual c {\n address = 10.0.0.1 eth0:1\n protocol = udp\n}\n"
    assert errors(a + udp) == []


def test_same_fwmark_is_an_error() -> None:
    a = "virtual a {\n address = 10.0.0.1\n fwmark = 7\n}\n"
    b = "virtual b {\n address = 10.0.0.2\n fwmark = 7\n}\n"
    assert one(a + b).startswith("e.cf:7: virtual 'b' uses the same service (fwmark 7)")


@pytest.mark.parametrize(("text", "expected"), [
    (V.format(body="    pmask = 255.255.255.0"), "e.cf:3: pmask needs persistent > 0"),
    (V.format(body="    sorry_server = 10.0.0.1"), "e.cf:3: sorry_server is the virtual address"),
    (V.format(body="    scheduler = sh\n    scheduler_flags = mh-port"),
     "e.cf:4: scheduler flag mh-port needs scheduler = mh"),
    (S.format(body="").replace("10.0.1.1", "10.0.0.1"),
     "e.cf:4: real server address is the virtual address"),
    (S.format(body="").replace("10.0.1.1", "fd00::1"), "only network = tunnel can mix"),
    ("keepalive = 2\ndeadtime = 1\n",
     "e.cf:2: timing: deadtime (1s) must be at least twice keepalive (2s)"),
    ("backup_active = 1\n", "e.cf:1: backup_active = 1 but no backup address is set"),
    ("primary = 10.0.0.2\nbackup = 10.0.0.2\n", "e.cf:2: backup has the same address as primary"),
    ("nat_nmask = 255.255.255.0\n", "nat_nmask is set but nat_router is not"),
    ("primary = 10.0.0.2\nrouter r {\n address = 10.0.0.3\n}\n",
     "e.cf:2: router blocks replace the two-router globals; remove primary"),
    ("router a {\n address = 10.0.0.2\n}\nrouter b {\n address = 10.0.0.2\n}\n",
     "e.cf:5: router 'b' has the same address address 10.0.0.2"),
    (V.replace("10.0.0.1 eth0:1", "0.0.0.0").format(body=""), "0.0.0.0 is not a usable host"),
    (V.replace("10.0.0.1 eth0:1", "fd00::1").format(body="    vip_nmask = 255.255.255.0"),
     "vip_nmask is an IPv4 netmask; address is IPv6"),
])
def test_semantic_errors_at_their_lines(text: str, expected: str) -> None:
    message = one(text)
    assert message.startswith(expected) or expected in message, message


def test_all_problems_reported_at_once_in_line_order() -> None:
    text = ("serial_no = x\n"                      # 1
            "weight = 3\n"                         # 2
            "virtual web {\n"                      # 3
            "    address = 10.0.0.300 eth0:1\n"    # 4
            "    scheduler = xx\n"                 # 5
            "    server a {\n"                     # 6
            "        weight = 70000\n"             # 7
            "    }\n"                              # 8
            "}\n"                                  # 9
            "virtual w2 {\n"                       # 10
            "    send = \"abc\n"                   # 11
            "}\n"                                  # 12
            "virtual w3 {\n")                      # 13
    lines = [int(e.split(":")[1]) for e in errors(text)]
    assert lines == sorted(lines)
    assert set(lines) >= {1, 2, 4, 5, 6, 7, 10, 11, 13}


def test_warnings_alone_keep_the_config() -> None:
    result = parse("serial_no = 1\nserial_no = 2\n")
    assert result.config is not None and result.config.serial_no == 2
    assert len(result.warnings) == 1 and result.errors == []
