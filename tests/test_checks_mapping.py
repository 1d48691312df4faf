"""From lvs.cf to nanny's checks: Piranha's rules and the check kinds we add (pure)."""

from __future__ import annotations

from agent.checks import targets
from cluster import lvscf

BASE = """serial_no = 1
primary = 10.0.0.2
rsh_command = ssh
virtual web {{
    address = 10.0.0.100 eth0:1
    port = {port}
{extra}
    server a {{
        address = 10.0.1.1
        weight = 3
    }}
    server off {{
        address = 10.0.1.2
        active = 0
    }}
}}
virtual idle {{
    address = 10.0.0.101 eth0:2
    active = 0
    server b {{
        address = 10.0.1.3
    }}
}}
"""


def spec(port: int = 80, extra: str = ""):
    cfg = lvscf.parse(BASE.format(port=port, extra=extra), "t.cf").config
    assert cfg is not None
    found = targets(cfg)
    assert set(found) == {("web", "a")}  # inactive servers and virtuals are never checked
    return found[("web", "a")]


def test_piranha_rules() -> None:
    check, state = spec(443)
    assert (check.kind, check.host, check.port, check.weight) == ("tcp", "10.0.1.1", 443, 3)
    assert (state.failures_to_down, state.reentry, state.quiesce) == (1, 180.0, False)
    check, _ = spec(80)
    assert check.kind == "send_expect" and check.send.startswith(b"GET / HTTP/1.0")
    check, _ = spec(80, '    send = "PING\\r\\n"\n    expect = "+PONG"\n    timeout = 3')
    assert (check.send, check.expect, check.timeout, check.every) == (
        b"PING\r\n", "+PONG", 3.0, 3.0)
    check, _ = spec(80, "    send_program = /usr/local/bin/probe --host %h --port %p\n"
                        "    expect = OK")
    assert check.kind == "program"
    assert check.expand(check.argv) == ("/usr/local/bin/probe", "--host", "10.0.1.1",
                                        "--port", "80")
    check, _ = spec(80, "    load_monitor = uptime")
    assert check.load_monitor == ("ssh", "%h", "uptime")


def test_extension_kinds_and_knobs() -> None:
    check, state = spec(80, "    check = http\n    check_path = /healthz\n"
                            "    check_status = 200-299,301\n    check_body = ok\n"
                            "    interval = 2\n    timeout = 1\n    failures = 3\n"
                            "    reentry = 5\n    quiesce_server = 1")
    assert (check.kind, check.http_path, check.http_status, check.http_body) == (
        "http", "/healthz", "200-299,301", "ok")
    assert (check.timeout, check.every) == (1.0, 2.0)
    assert (state.failures_to_down, state.reentry, state.quiesce) == (3, 5.0, True)
    check, _ = spec(53, "    check = dns\n    protocol = udp\n    dns_name = example.com\n"
                        "    dns_type = A")
    assert (check.kind, check.dns_name, check.dns_type) == ("dns", "example.com", "A")
    check, _ = spec(80, "    check = external\n    check_program = /bin/check %h")
    assert check.kind == "external" and check.argv == ("/bin/check", "%h")
    check, _ = spec(80, "    check = https\n    check_port = 8443")
    assert (check.kind, check.port) == ("https", 8443)
